//! The blocking halves of flush, compaction and retention: sorting, encoding,
//! writing chunk files and the manifest. They run off the shard's reactor so
//! that encoding never stalls the shard's group commit: flush and retention
//! on its blocking thread (glommio's `spawn_blocking`, placed on the shard's
//! core), compaction on a thread of its own at a lower priority (see
//! `ShardState::spawn`); one job at a time per shard. The shard's loop
//! installs the result once the manifest that names it is durable.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::SchemaRef;

use crate::catalog::TIME_COLUMN;
use crate::chunk::{encode_chunk, sort_dedup, DedupPolicy};
use crate::error::{EngineError, Result};
use crate::store::{write_chunk_file, write_manifest, ChunkHandle, Manifest, ManifestChunk};

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub dir: PathBuf,
    pub shard: usize,
    pub partition_len: i64,
    /// pco level for chunks written by a flush (fast) and by compaction.
    pub flush_level: usize,
    pub compact_level: usize,
}

/// One table's frozen rows, in arrival order.
pub struct TableInput {
    pub database: String,
    pub table: String,
    pub schema: SchemaRef,
    pub policy: DedupPolicy,
    /// Rows older than this are past retention and dropped.
    pub cutoff: Option<i64>,
    pub batches: Vec<RecordBatch>,
    /// Some row may repeat (series, time) of older data.
    pub flagged: bool,
}

pub struct JobOutput {
    pub added: Vec<Arc<ChunkHandle>>,
    pub removed: Vec<u64>,
    pub manifest: Manifest,
}

pub fn partition_of(time: i64, len: i64) -> i64 {
    time.div_euclid(len) * len
}

/// Splits a batch (kept in its order) by time partition.
fn split_partitions(batch: &RecordBatch, len: i64) -> Result<Vec<(i64, RecordBatch)>> {
    let ts = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| EngineError::Encode("batch without a time column".into()))?;
    let mut parts: Vec<i64> = ts
        .values()
        .iter()
        .map(|t| partition_of(*t, len))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    parts.sort_unstable();
    if parts.len() == 1 {
        return Ok(vec![(parts[0], batch.clone())]);
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let mask: BooleanArray = ts
            .values()
            .iter()
            .map(|t| Some(partition_of(*t, len) == p))
            .collect();
        let part = arrow::compute::filter_record_batch(batch, &mask)
            .map_err(|e| EngineError::Encode(e.to_string()))?;
        out.push((p, part));
    }
    Ok(out)
}

/// Where a new chunk belongs and how to write it.
struct Target<'a> {
    database: &'a str,
    table: &'a str,
    partition: i64,
    level: usize,
    overlaps: bool,
}

fn write_one(
    cfg: &JobConfig,
    manifest: &mut Manifest,
    t: Target<'_>,
    batch: &RecordBatch,
) -> Result<Arc<ChunkHandle>> {
    let overlaps = t.overlaps;
    let (bytes, _) = encode_chunk(
        t.database,
        t.table,
        t.partition,
        cfg.partition_len,
        batch,
        t.level,
    )?;
    let id = manifest.next_id;
    manifest.next_id += 1;
    let reader = write_chunk_file(&cfg.dir, id, &bytes)?;
    manifest.chunks.push(ManifestChunk { id, overlaps });
    Ok(Arc::new(ChunkHandle {
        id,
        shard: cfg.shard,
        overlaps,
        reader,
    }))
}

/// Writes the frozen tables as chunks and a manifest that records them with
/// the raft position (`index`, `term`) they cover. `has_chunks` tells which
/// (database, table, partition) already have chunks.
pub fn run_flush(
    cfg: &JobConfig,
    mut manifest: Manifest,
    tables: Vec<TableInput>,
    has_chunks: &HashSet<(String, String, i64)>,
    index: u64,
    term: u64,
) -> Result<JobOutput> {
    let mut added = Vec::new();
    for t in tables {
        if t.batches.is_empty() {
            continue;
        }
        let sorted = sort_dedup(&t.schema, &t.batches, t.policy)?;
        for (p, part) in split_partitions(&sorted, cfg.partition_len)? {
            if t.cutoff
                .is_some_and(|c| p.saturating_add(cfg.partition_len) <= c)
            {
                continue;
            }
            let overlaps =
                t.flagged && has_chunks.contains(&(t.database.clone(), t.table.clone(), p));
            let target = Target {
                database: &t.database,
                table: &t.table,
                partition: p,
                level: cfg.flush_level,
                overlaps,
            };
            added.push(write_one(cfg, &mut manifest, target, &part)?);
        }
    }
    if index >= manifest.flushed_index {
        manifest.flushed_index = index;
        manifest.flushed_term = term;
    }
    write_manifest(&cfg.dir, &manifest)?;
    Ok(JobOutput {
        added,
        removed: Vec::new(),
        manifest,
    })
}

/// Merges `group` (chunks of one table partition, oldest first) into one
/// chunk, resolving duplicates across them by `policy`.
pub fn run_compaction(
    cfg: &JobConfig,
    mut manifest: Manifest,
    group: &[Arc<ChunkHandle>],
    schema: &SchemaRef,
    policy: DedupPolicy,
) -> Result<JobOutput> {
    let Some(first) = group.first() else {
        return Ok(JobOutput {
            added: Vec::new(),
            removed: Vec::new(),
            manifest,
        });
    };
    let (database, table, partition) = {
        let f = first.footer();
        (f.database.clone(), f.table.clone(), f.partition)
    };
    let mut batches = Vec::new();
    for c in group {
        batches.extend(c.reader.read(schema, &|_, _| true)?);
    }
    let sorted = sort_dedup(schema, &batches, policy)?;
    drop(batches);
    let removed: Vec<u64> = group.iter().map(|c| c.id).collect();
    manifest.chunks.retain(|c| !removed.contains(&c.id));
    let mut added = Vec::new();
    if sorted.num_rows() > 0 {
        let target = Target {
            database: &database,
            table: &table,
            partition,
            level: cfg.compact_level,
            overlaps: false,
        };
        added.push(write_one(cfg, &mut manifest, target, &sorted)?);
    }
    write_manifest(&cfg.dir, &manifest)?;
    Ok(JobOutput {
        added,
        removed,
        manifest,
    })
}

/// Drops chunks (retention): the manifest stops naming them.
pub fn run_drop(cfg: &JobConfig, mut manifest: Manifest, ids: Vec<u64>) -> Result<JobOutput> {
    manifest.chunks.retain(|c| !ids.contains(&c.id));
    write_manifest(&cfg.dir, &manifest)?;
    Ok(JobOutput {
        added: Vec::new(),
        removed: ids,
        manifest,
    })
}
