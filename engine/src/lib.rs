//! Sluice's storage engine: thread-per-core shards, each a raft group whose
//! log is the shard's durable write-ahead log, applying into an in-memory
//! Arrow buffer. See ARCHITECTURE.md for the invariants.

pub mod backup;
pub mod batch;
pub mod buffer;
pub mod catalog;
pub mod chunk;
pub mod error;
mod flush;
mod jobs;
mod runtime;
mod shard;
pub mod store;

pub use batch::{TableBatch, WriteBatch};
pub use buffer::{adapt_batch, BufferedBatch};
pub use catalog::{
    Catalog, CatalogEntry, CatalogSnapshot, CatalogStore, ColumnKind, ColumnRequest, FieldType,
    OptionsChange, TableOptions, TableSchema,
};
pub use error::{EngineError, Result};
pub use jobs::{StorageConfig, TableSnapshot};
pub use runtime::{CoreContext, CoreFuture, CoreService, Engine, EngineConfig, EngineHandle};
pub use shard::ShardStats;
pub use store::{BrokenChunk, ChunkHandle};
