//! Protocol front ends: they turn what clients send into shard writes.
//! They own parsing and validation; durability belongs to the engine.

pub mod deadletter;
pub mod error;
pub mod json;
pub mod kafka;
pub mod lp;
mod lpfast;
pub mod messages;
pub mod mqtt;
pub mod route;
pub mod rows;
pub mod stats;
pub mod tcp;

pub use error::IngestError;

/// Asked, by a front end that accepts connections, for each new one with
/// its client's address: `None` closes it at once, a guard lets it in for
/// as long as the guard is held (a slot of a connection limit).
#[derive(Clone)]
pub struct Admission(
    pub  std::sync::Arc<
        dyn Fn(std::net::SocketAddr) -> Option<Box<dyn std::any::Any + Send>> + Send + Sync,
    >,
);

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admission")
    }
}
pub use lp::{prepare, LineError, Precision, Prepared, WriteOptions};
