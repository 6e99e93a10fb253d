//! A shard's in-memory buffer: immutable Arrow batches per table.
//!
//! Applied writes are appended as they arrived; small batches are merged in
//! groups so a query never faces thousands of tiny batches. Everything in here
//! is immutable once inserted, so a query snapshot is a cheap clone of `Arc`s
//! that later writes cannot disturb.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;

use crate::batch::time_range;
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};

/// Merge small batches once this many have piled up in one table.
const MERGE_FANIN: usize = 32;
/// Batches at least this large are left alone by merging.
const LARGE_BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct BufferedBatch {
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
}

#[derive(Debug, Default)]
struct TableBuffer {
    large: Vec<BufferedBatch>,
    small: Vec<BufferedBatch>,
    rows: usize,
}

#[derive(Debug, Clone, Default)]
pub struct TableStats {
    pub rows: usize,
    pub batches: usize,
}

pub struct Buffer {
    tables: HashMap<(String, String), TableBuffer>,
    catalog: Arc<Catalog>,
}

impl Buffer {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Buffer {
            tables: HashMap::new(),
            catalog,
        }
    }

    pub fn insert(&mut self, database: &str, table: &str, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let Some((min_time, max_time)) = time_range(&batch) else {
            tracing::error!(
                database,
                table,
                "batch without a time column dropped from buffer"
            );
            return;
        };
        let key = (database.to_string(), table.to_string());
        let tb = self.tables.entry(key).or_default();
        tb.rows += batch.num_rows();
        let b = BufferedBatch {
            batch,
            min_time,
            max_time,
        };
        if b.batch.num_rows() >= LARGE_BATCH_ROWS {
            tb.large.push(b);
            return;
        }
        tb.small.push(b);
        if tb.small.len() >= MERGE_FANIN {
            let schema = self
                .catalog
                .snapshot()
                .table(database, table)
                .map(|t| t.arrow_schema());
            if let Some(schema) = schema {
                match merge(&tb.small, &schema) {
                    Ok(m) => {
                        tb.small.clear();
                        if m.batch.num_rows() >= LARGE_BATCH_ROWS {
                            tb.large.push(m);
                        } else {
                            tb.small.push(m);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(database, table, error = %e, "merging buffered batches failed; kept them apart")
                    }
                }
            }
        }
    }

    /// Every batch of the table whose time range meets `[min, max]`.
    pub fn snapshot(&self, database: &str, table: &str, min: i64, max: i64) -> Vec<BufferedBatch> {
        let key = (database.to_string(), table.to_string());
        let Some(tb) = self.tables.get(&key) else {
            return Vec::new();
        };
        tb.large
            .iter()
            .chain(tb.small.iter())
            .filter(|b| b.max_time >= min && b.min_time <= max)
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> Vec<(String, String, TableStats)> {
        self.tables
            .iter()
            .map(|((d, t), tb)| {
                (
                    d.clone(),
                    t.clone(),
                    TableStats {
                        rows: tb.rows,
                        batches: tb.large.len() + tb.small.len(),
                    },
                )
            })
            .collect()
    }
}

fn merge(batches: &[BufferedBatch], schema: &SchemaRef) -> Result<BufferedBatch> {
    let adapted = batches
        .iter()
        .map(|b| adapt_batch(&b.batch, schema))
        .collect::<Result<Vec<_>>>()?;
    let batch = arrow::compute::concat_batches(schema, &adapted)
        .map_err(|e| EngineError::Encode(e.to_string()))?;
    Ok(BufferedBatch {
        batch,
        min_time: batches.iter().map(|b| b.min_time).min().unwrap_or(i64::MIN),
        max_time: batches.iter().map(|b| b.max_time).max().unwrap_or(i64::MAX),
    })
}

/// Lays `batch` out in `schema`: columns matched by name, absent ones null.
/// Batches written before a column existed thus read as null in it.
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type())
                .map_err(|e| EngineError::Encode(format!("column {}: {e}", f.name()))),
            None => Ok(new_null_array(f.data_type(), rows)),
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| EngineError::Encode(e.to_string()))
}
