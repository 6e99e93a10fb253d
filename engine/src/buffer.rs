//! A shard's in-memory buffer: immutable Arrow batches per table.
//!
//! Applied writes are appended as they arrived; small batches are merged in
//! groups so a query never faces thousands of tiny batches. Everything in here
//! is immutable once inserted, so a query snapshot is a cheap clone of `Arc`s
//! that later writes cannot disturb.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, DictionaryArray, RecordBatch, RecordBatchOptions, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use arrow::datatypes::SchemaRef;
use xxhash_rust::xxh3::xxh3_64;

use crate::batch::time_range;
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};

/// Merge small batches once this many of one tier have piled up at the end
/// of a table: inserted batches are tier 0, a merge of tier `t` is tier
/// `t + 1`. Merging only equals keeps the copying to once per tier; merging
/// the whole trailing run each time (the merged batch included) copied every
/// row about ten times on its way to a large batch, in the write path.
const MERGE_FANIN: usize = 32;
/// The tier of batches that are never merged again.
const FINAL_TIER: u8 = u8::MAX;
/// Batches at least this large are left alone by merging.
const LARGE_BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct BufferedBatch {
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
    /// Time range of the rows that are not newer than everything their
    /// series already had (late, out of order or duplicates): reads must
    /// deduplicate around them.
    pub overlaps: Option<(i64, i64)>,
    /// How many merges made it (see [`MERGE_FANIN`]).
    tier: u8,
}

#[derive(Debug, Default)]
pub struct TableBuffer {
    /// In arrival order, which dedup depends on: only a trailing run of
    /// small batches of one tier is ever merged, in place.
    pub batches: Vec<BufferedBatch>,
    pub rows: usize,
    pub bytes: usize,
}

impl TableBuffer {
    pub fn batches(&self) -> impl Iterator<Item = &BufferedBatch> {
        self.batches.iter()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TableStats {
    pub rows: usize,
    pub batches: usize,
    pub bytes: usize,
}

/// Everything the buffer held at one moment, handed to a flush.
pub struct Frozen {
    pub tables: HashMap<(String, String), TableBuffer>,
    pub bytes: usize,
}

pub struct Buffer {
    tables: HashMap<(String, String), TableBuffer>,
    catalog: Arc<Catalog>,
    /// Newest time seen per series (hash of its tags), in chunks or here.
    series_max: HashMap<(String, String), HashMap<u64, i64>>,
    bytes: usize,
    oldest: Option<std::time::Instant>,
}

impl Buffer {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Buffer {
            tables: HashMap::new(),
            catalog,
            series_max: HashMap::new(),
            bytes: 0,
            oldest: None,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest row still only in memory arrived.
    pub fn oldest(&self) -> Option<std::time::Instant> {
        self.oldest
    }

    /// Records that `series` (hashed as `series_hashes` does) reached `time`
    /// in a chunk, so later rows at or before it are known to need dedup.
    pub fn note_series(&mut self, database: &str, table: &str, series: u64, time: i64) {
        let m = self
            .series_max
            .entry((database.to_string(), table.to_string()))
            .or_default();
        let t = m.entry(series).or_insert(i64::MIN);
        *t = (*t).max(time);
    }

    /// Takes everything buffered; queries keep seeing it through the frozen
    /// set until its chunks are installed.
    pub fn freeze(&mut self) -> Frozen {
        let bytes = std::mem::take(&mut self.bytes);
        self.oldest = None;
        Frozen {
            tables: std::mem::take(&mut self.tables),
            bytes,
        }
    }

    /// The time range of the rows of `batch` that are not newer than their
    /// series' latest time, if any.
    fn check_order(
        &mut self,
        database: &str,
        table: &str,
        batch: &RecordBatch,
    ) -> Option<(i64, i64)> {
        let Some(ts) = batch
            .column_by_name(crate::catalog::TIME_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return Some((i64::MIN, i64::MAX));
        };
        let hashes = series_hashes(batch);
        let m = self
            .series_max
            .entry((database.to_string(), table.to_string()))
            .or_default();
        let mut overlaps: Option<(i64, i64)> = None;
        for (h, t) in hashes.iter().zip(ts.values().iter()) {
            let e = m.entry(*h).or_insert(i64::MIN);
            if *t <= *e {
                overlaps = Some(overlaps.map_or((*t, *t), |(lo, hi)| (lo.min(*t), hi.max(*t))));
            } else {
                *e = *t;
            }
        }
        overlaps
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
        let overlaps = self.check_order(database, table, &batch);
        let size = batch.get_array_memory_size();
        self.bytes += size;
        self.oldest.get_or_insert_with(std::time::Instant::now);
        let key = (database.to_string(), table.to_string());
        let tb = self.tables.entry(key).or_default();
        tb.rows += batch.num_rows();
        tb.bytes += size;
        let tier = if batch.num_rows() >= LARGE_BATCH_ROWS {
            FINAL_TIER
        } else {
            0
        };
        let b = BufferedBatch {
            batch,
            min_time,
            max_time,
            overlaps,
            tier,
        };
        tb.batches.push(b);
        let (added, removed) = merge_tail(tb, &self.catalog, database, table);
        self.bytes = (self.bytes + added).saturating_sub(removed);
    }

    /// Every batch of the table whose time range meets `[min, max]`.
    pub fn snapshot(&self, database: &str, table: &str, min: i64, max: i64) -> Vec<BufferedBatch> {
        let key = (database.to_string(), table.to_string());
        let Some(tb) = self.tables.get(&key) else {
            return Vec::new();
        };
        snapshot_of(tb, min, max)
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
                        batches: tb.batches.len(),
                        bytes: tb.bytes,
                    },
                )
            })
            .collect()
    }
}

pub fn snapshot_of(tb: &TableBuffer, min: i64, max: i64) -> Vec<BufferedBatch> {
    tb.batches()
        .filter(|b| b.max_time >= min && b.min_time <= max)
        .cloned()
        .collect()
}

/// A hash per row identifying its series within its table: the non-null tag
/// values in schema (name) order. Chunk footers hash to the same values
/// through `series_hash`.
pub fn series_hashes(batch: &RecordBatch) -> Vec<u64> {
    let rows = batch.num_rows();
    let mut out = vec![SERIES_SEED; rows];
    for (i, f) in batch.schema().fields().iter().enumerate() {
        if f.data_type() != &crate::catalog::tag_data_type() {
            continue;
        }
        let Some(d) = batch
            .column(i)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
        else {
            continue;
        };
        let Some(values) = d.values().as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        let name = xxh3_64(f.name().as_bytes());
        let value_hashes: Vec<u64> = (0..values.len())
            .map(|j| name ^ xxh3_64(values.value(j).as_bytes()))
            .collect();
        let keys = d.keys();
        for (r, h) in out.iter_mut().enumerate() {
            if keys.is_valid(r) {
                let k = keys.value(r) as usize;
                if let Some(v) = value_hashes.get(k) {
                    *h = mix(*h, *v);
                }
            }
        }
    }
    out
}

const SERIES_SEED: u64 = 0x5155_4943_4553_4552;

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

/// The series hash of a tag set given as (name, value) pairs in name order.
pub fn series_hash<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    tags.fold(SERIES_SEED, |h, (n, v)| {
        mix(h, xxh3_64(n.as_bytes()) ^ xxh3_64(v.as_bytes()))
    })
}

/// Merges the last [`MERGE_FANIN`] batches of `tb` while they are of one
/// tier, cascading up the tiers. Returns the bytes the merges added and
/// removed, for the buffer's total.
fn merge_tail(
    tb: &mut TableBuffer,
    catalog: &Catalog,
    database: &str,
    table: &str,
) -> (usize, usize) {
    let (mut added, mut removed) = (0, 0);
    loop {
        let n = tb.batches.len();
        if n < MERGE_FANIN {
            break;
        }
        let start = n - MERGE_FANIN;
        let tier = tb.batches[n - 1].tier;
        if tier == FINAL_TIER || tb.batches[start..].iter().any(|b| b.tier != tier) {
            break;
        }
        let Some(schema) = catalog
            .snapshot()
            .table(database, table)
            .map(|t| t.arrow_schema())
        else {
            break;
        };
        match merge(&tb.batches[start..], &schema) {
            Ok(mut m) => {
                let old: usize = tb.batches[start..]
                    .iter()
                    .map(|b| b.batch.get_array_memory_size())
                    .sum();
                let new = m.batch.get_array_memory_size();
                tb.bytes = (tb.bytes + new).saturating_sub(old);
                added += new;
                removed += old;
                m.tier = if m.batch.num_rows() >= LARGE_BATCH_ROWS {
                    FINAL_TIER
                } else {
                    tier.saturating_add(1).min(FINAL_TIER - 1)
                };
                tb.batches.truncate(start);
                tb.batches.push(m);
            }
            Err(e) => {
                tracing::warn!(database, table, error = %e, "merging buffered batches failed; kept them apart");
                if let Some(last) = tb.batches.last_mut() {
                    last.tier = FINAL_TIER;
                }
                break;
            }
        }
    }
    (added, removed)
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
        overlaps: batches
            .iter()
            .filter_map(|b| b.overlaps)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))),
        tier: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnKind, ColumnRequest, FieldType};
    use arrow::array::Float64Array;
    use arrow::datatypes::DataType;

    fn batch(schema: &SchemaRef, first: i64, rows: i64) -> RecordBatch {
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Float64 => {
                        Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)))
                    }
                    _ => Arc::new(
                        TimestampNanosecondArray::from_iter_values(first..first + rows)
                            .with_timezone("UTC"),
                    ),
                }
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    #[test]
    fn small_batches_merge_by_tier_and_keep_every_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open_dir(dir.path()).unwrap());
        let v = ColumnRequest {
            name: "v",
            kind: ColumnKind::Field(FieldType::Float),
        };
        catalog.ensure_columns("d", "t", &[v]).unwrap();
        let schema = catalog.snapshot().table("d", "t").unwrap().arrow_schema();
        let mut buffer = Buffer::new(catalog);
        let (inserts, rows) = (MERGE_FANIN * MERGE_FANIN + 5, 10);
        for i in 0..inserts as i64 {
            buffer.insert("d", "t", batch(&schema, i * rows, rows));
        }
        let all = buffer.snapshot("d", "t", i64::MIN, i64::MAX);
        // One tier-2 batch, then the 5 inserted since.
        let sizes: Vec<usize> = all.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(sizes[0], MERGE_FANIN * MERGE_FANIN * rows as usize);
        assert_eq!(sizes[1..], [rows as usize; 5]);
        let times: Vec<i64> = all
            .iter()
            .flat_map(|b| time_range(&b.batch).map(|(lo, hi)| [lo, hi]))
            .flatten()
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "arrival order kept");
        assert_eq!(buffer.stats()[0].2.rows, inserts * rows as usize);
    }
}
