//! The durable raft log shared by every raft group in Sluice: the
//! time-series shards and the relational store. raft-rs's `RawNode` over a
//! segmented, checksummed, O_DIRECT log written through glommio; one fsync
//! per ready cycle is the group commit.

mod error;
mod fsutil;
mod node;
mod segments;
mod slogbridge;
mod space;
mod wake;
mod wal;

pub use error::{LogError, Result};
pub use fsutil::{probe_disk, sync_dir};
pub use node::{NoPeers, RaftNode, Transport, LOCAL_ID};
pub use raft::prelude::Entry;
pub use space::{free_bytes, NoSpace, SpaceGuard};
pub use wake::{next_or_tick, Wake};
pub use wal::{replay, Replay, WalRecord, WalStats};
