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
pub use lp::{prepare, LineError, Precision, Prepared, WriteOptions};
