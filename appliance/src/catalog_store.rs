//! The time-series catalog kept in the relational store: each
//! [`CatalogEntry`] is one key of the store's `system` space, written through
//! its raft log, so the catalog is replicated and checkpointed with
//! everything else the store holds.

use sluice_engine::{CatalogEntry, CatalogStore, EngineError};
use sluice_relstore::RelHandle;

const PREFIX: &str = "ts/";

pub struct RelCatalogStore {
    handle: RelHandle,
}

impl RelCatalogStore {
    pub fn new(handle: RelHandle) -> Self {
        RelCatalogStore { handle }
    }
}

impl std::fmt::Debug for RelCatalogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelCatalogStore")
    }
}

/// Names cannot hold control characters (`validate_name`), so a NUL
/// separates them unambiguously.
fn key(e: &CatalogEntry) -> String {
    match e {
        CatalogEntry::Database { db, .. } => format!("{PREFIX}d/{db}"),
        CatalogEntry::Table { db, table, .. } => format!("{PREFIX}t/{db}\0{table}"),
        CatalogEntry::Column {
            db, table, column, ..
        } => format!("{PREFIX}c/{db}\0{table}\0{column}"),
    }
}

impl CatalogStore for RelCatalogStore {
    fn load(&self) -> Result<Vec<CatalogEntry>, EngineError> {
        let raw = self
            .handle
            .system_entries(PREFIX)
            .map_err(|e| EngineError::CatalogStore(e.to_string()))?;
        raw.into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|e| {
                    EngineError::CatalogStore(format!(
                        "catalog entry {:?} cannot be decoded: {e}",
                        k.replace('\0', ".")
                    ))
                })
            })
            .collect()
    }

    fn store(&self, entries: &[CatalogEntry]) -> Result<(), EngineError> {
        let mut puts = Vec::with_capacity(entries.len());
        for e in entries {
            let v = serde_json::to_vec(e).map_err(|e| EngineError::Encode(e.to_string()))?;
            puts.push((key(e), Some(v)));
        }
        // Callers are synchronous ingest and DDL paths; a schema change is
        // rare, and the points that need it wait for it anyway.
        sluice_relstore::wait_blocking(self.handle.put_system(puts))
            .map_err(|e| EngineError::CatalogStore(e.to_string()))
    }
}
