//! A shard's data at rest and in memory, and the background work on it:
//! when to flush, compact or drop, and installing what those jobs produce.
//! Everything here runs on the shard's core; only the encoding and file
//! writing inside a job runs on the shard's blocking thread.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::buffer::{series_hash, snapshot_of, Buffer, BufferedBatch, Frozen};
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::flush::{self, JobConfig, JobOutput, TableInput};
use crate::store::{BrokenChunk, ChunkHandle, Store};

/// Tuning of flush, compaction and memory limits, per shard.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Flush once the buffer holds this many bytes of Arrow data.
    pub flush_bytes: usize,
    /// Flush rows that have been in memory this long.
    pub flush_interval: Duration,
    /// Refuse writes (backpressure) while buffered plus flushing bytes exceed this.
    pub max_buffer_bytes: usize,
    /// Time partition length of chunks (ns).
    pub partition_len: i64,
    /// Compact a table partition once it has this many chunks.
    pub compact_min_chunks: usize,
    /// Start a new log segment once the active one passes this size.
    pub log_segment_bytes: u64,
    /// Refuse writes while the disk has less free than this (0: never).
    pub min_free_bytes: u64,
    pub flush_level: usize,
    pub compact_level: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            flush_bytes: 32 << 20,
            flush_interval: Duration::from_secs(60),
            max_buffer_bytes: 256 << 20,
            partition_len: 86_400_000_000_000,
            compact_min_chunks: 4,
            log_segment_bytes: 64 << 20,
            min_free_bytes: 256 << 20,
            flush_level: 4,
            compact_level: 8,
        }
    }
}

/// What a query gets of one table from one shard: consistent at one moment.
#[derive(Clone, Default)]
pub struct TableSnapshot {
    /// Oldest first (by chunk id).
    pub chunks: Vec<Arc<ChunkHandle>>,
    /// Frozen (being flushed) batches first, then the live buffer's.
    pub batches: Vec<BufferedBatch>,
}

impl TableSnapshot {
    /// What of this snapshot a read of `min..=max` needs: the same pruning
    /// a shard applies when asked for that range.
    pub fn within(&self, min: i64, max: i64) -> TableSnapshot {
        TableSnapshot {
            chunks: self
                .chunks
                .iter()
                .filter(|c| chunk_in(c, min, max))
                .cloned()
                .collect(),
            batches: self
                .batches
                .iter()
                .filter(|b| b.max_time >= min && b.min_time <= max)
                .cloned()
                .collect(),
        }
    }
}

fn chunk_in(c: &ChunkHandle, min: i64, max: i64) -> bool {
    c.footer().max_time >= min && c.footer().min_time <= max
}

pub enum JobKind {
    Flush { index: u64 },
    Compact,
    Drop,
}

pub struct Running {
    kind: JobKind,
    done: flume::Receiver<Result<JobOutput>>,
}

pub struct ShardState {
    pub shard: usize,
    pub catalog: Arc<Catalog>,
    pub buffer: Buffer,
    pub frozen: Option<Frozen>,
    pub store: Store,
    pub cfg: StorageConfig,
    running: Option<Running>,
    retry_at: Option<Instant>,
    flush_requested: bool,
    force_compact: bool,
    /// An explicit flush also empties the log: the active segment is rolled
    /// and deleted even if it is small.
    force_roll: bool,
    /// (index, roll whatever the size): log compaction the shard loop owes.
    log_compaction: Option<(u64, bool)>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    pub chunks_written: u64,
    pub compactions: u64,
}

impl ShardState {
    pub fn new(shard: usize, catalog: Arc<Catalog>, store: Store, cfg: StorageConfig) -> Self {
        let mut buffer = Buffer::new(catalog.clone());
        for c in store.chunks.values() {
            let f = c.footer();
            for s in &f.series {
                let tags = f.tags.iter().zip(&s.tags).filter_map(|(t, &i)| {
                    t.values
                        .get(i as usize)
                        .map(|v| (t.name.as_str(), v.as_str()))
                });
                buffer.note_series(&f.database, &f.table, series_hash(tags), s.max_time);
            }
        }
        ShardState {
            shard,
            catalog,
            buffer,
            frozen: None,
            store,
            cfg,
            running: None,
            retry_at: None,
            flush_requested: false,
            force_compact: false,
            force_roll: false,
            log_compaction: None,
            waiters: Vec::new(),
            chunks_written: 0,
            compactions: 0,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.buffer.bytes() + self.frozen.as_ref().map_or(0, |f| f.bytes)
    }

    /// Refuses a write while memory is over its limit.
    pub fn admit(&self) -> Result<()> {
        let used = self.memory_bytes();
        if used >= self.cfg.max_buffer_bytes {
            return Err(EngineError::Backpressure {
                shard: self.shard,
                buffered: used,
            });
        }
        Ok(())
    }

    pub fn snapshot(&self, database: &str, table: &str, min: i64, max: i64) -> TableSnapshot {
        let chunks = self
            .store
            .table_chunks(database, table)
            .into_iter()
            .filter(|c| chunk_in(c, min, max))
            .collect();
        let key = (database.to_string(), table.to_string());
        let mut batches = Vec::new();
        if let Some(tb) = self.frozen.as_ref().and_then(|f| f.tables.get(&key)) {
            batches.extend(snapshot_of(tb, min, max));
        }
        batches.extend(self.buffer.snapshot(database, table, min, max));
        TableSnapshot { chunks, batches }
    }

    pub fn all_chunks(&self) -> (Vec<Arc<ChunkHandle>>, Vec<BrokenChunk>) {
        (
            self.store.chunks.values().cloned().collect(),
            self.store.broken.clone(),
        )
    }

    /// An explicit flush: everything buffered now goes to chunks and every
    /// table partition with several chunks is compacted; `reply` is answered
    /// when that is done.
    pub fn request_flush(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.flush_requested = true;
        self.force_compact = true;
        self.force_roll = true;
        self.waiters.push(reply);
    }

    fn job_config(&self) -> JobConfig {
        JobConfig {
            dir: self.store.dir.clone(),
            shard: self.shard,
            partition_len: self.cfg.partition_len,
            flush_level: self.cfg.flush_level,
            compact_level: self.cfg.compact_level,
        }
    }

    fn spawn(&mut self, kind: JobKind, f: impl FnOnce() -> Result<JobOutput> + Send + 'static) {
        let (tx, rx) = flume::bounded(1);
        // Compaction can wait: it runs on a thread of its own at a lower CPU
        // priority, so that during a burst of writes it takes the CPU that
        // ingestion leaves idle instead of a share of what ingestion needs
        // (MQTT, 100-line QoS 0 messages on 2 cores: 10-22 % more rows/s
        // stored in two A/Bs). Flushes keep normal priority: they are what
        // frees the buffer's memory.
        if matches!(kind, JobKind::Compact) {
            let failed = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("shard-{}-compact", self.shard))
                .spawn(move || {
                    background_priority();
                    let _ = tx.send(f());
                });
            if let Err(e) = spawned {
                let _ = failed.send(Err(EngineError::Runtime(format!(
                    "starting a compaction thread: {e}"
                ))));
            }
        } else {
            glommio::spawn_local(async move {
                let res = glommio::executor().spawn_blocking(f).await;
                let _ = tx.send(res);
            })
            .detach();
        }
        self.running = Some(Running { kind, done: rx });
    }

    /// The raft index up to which the log may now be compacted, and whether
    /// to roll the active segment whatever its size.
    pub fn take_log_compaction(&mut self) -> Option<(u64, bool)> {
        self.log_compaction.take()
    }

    /// A finished job, if any: installs its output.
    pub fn poll_job(&mut self) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        let Ok(res) = running.done.try_recv() else {
            return;
        };
        let Some(running) = self.running.take() else {
            return;
        };
        match (running.kind, res) {
            (JobKind::Flush { index }, Ok(out)) => {
                self.frozen = None;
                self.chunks_written += out.added.len() as u64;
                self.install(out);
                self.log_compaction = Some((index, std::mem::take(&mut self.force_roll)));
            }
            (kind, Ok(out)) => {
                if matches!(kind, JobKind::Compact) {
                    self.compactions += 1;
                }
                self.install(out);
            }
            (kind, Err(e)) => {
                let what = match kind {
                    JobKind::Flush { .. } => "flush",
                    JobKind::Compact => "compaction",
                    JobKind::Drop => "retention",
                };
                tracing::error!(shard = self.shard, error = %e, "{what} failed; retrying in 5 s");
                self.retry_at = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    fn install(&mut self, out: JobOutput) {
        for id in &out.removed {
            if self.store.chunks.remove(id).is_some() {
                let p = crate::store::chunk_path(&self.store.dir, *id);
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(shard = self.shard, file = %p.display(), error = %e, "removing a replaced chunk");
                }
            }
        }
        for c in out.added {
            self.store.chunks.insert(c.id, c);
        }
        self.store.manifest = out.manifest;
    }

    /// Starts the next background job if one is due. `applied` is the raft
    /// position (index, term) everything in the buffer is covered by.
    pub fn schedule(&mut self, applied: (u64, u64)) {
        if self.running.is_some() {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let due = self.buffer.bytes() >= self.cfg.flush_bytes
            || self
                .buffer
                .oldest()
                .is_some_and(|t| t.elapsed() >= self.cfg.flush_interval)
            || (self.flush_requested
                && (self.buffer.bytes() > 0 || applied.0 > self.store.manifest.flushed_index));
        if self.frozen.is_some() || due {
            self.flush_requested = false;
            self.start_flush(applied);
            return;
        }
        if std::mem::take(&mut self.flush_requested) && self.force_roll {
            // Nothing buffered: the log may still hold entries that earlier
            // flushes covered.
            self.force_roll = false;
            self.log_compaction = Some((self.store.manifest.flushed_index, true));
        }
        if self.start_retention() || self.start_compaction() {
            return;
        }
        self.force_compact = false;
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
    }

    fn start_flush(&mut self, applied: (u64, u64)) {
        let (index, term) = match &self.frozen {
            // A failed flush is retried with the same rows and position.
            Some(_) => (
                self.store.manifest.flushed_index,
                self.store.manifest.flushed_term,
            ),
            None => {
                self.frozen = Some(self.buffer.freeze());
                applied
            }
        };
        let index = index.max(applied.0);
        let term = if index == applied.0 { applied.1 } else { term };
        let Some(frozen) = &self.frozen else { return };
        let snap = self.catalog.snapshot();
        let mut inputs = Vec::new();
        for ((db, table), tb) in &frozen.tables {
            let Some(schema) = snap.table(db, table) else {
                tracing::error!(shard = self.shard, database = %db, table = %table, "buffered table missing from the catalog");
                continue;
            };
            let arrow_schema = schema.arrow_schema();
            let mut batches = Vec::with_capacity(tb.batches.len());
            let mut flagged = false;
            for b in tb.batches() {
                flagged |= b.overlaps.is_some();
                match crate::buffer::adapt_batch(&b.batch, &arrow_schema) {
                    Ok(a) => batches.push(a),
                    Err(e) => {
                        tracing::error!(shard = self.shard, error = %e, "buffered batch does not fit its table")
                    }
                }
            }
            let now = now_ns();
            inputs.push(TableInput {
                database: db.clone(),
                table: table.clone(),
                schema: arrow_schema,
                policy: schema.options.dedup,
                cutoff: snap.retention(db, table).map(|r| now.saturating_sub(r)),
                batches,
                flagged,
            });
        }
        let has_chunks: HashSet<(String, String, i64)> = self
            .store
            .chunks
            .values()
            .map(|c| {
                let f = c.footer();
                (f.database.clone(), f.table.clone(), f.partition)
            })
            .collect();
        let cfg = self.job_config();
        let manifest = self.store.manifest.clone();
        self.spawn(JobKind::Flush { index }, move || {
            flush::run_flush(&cfg, manifest, inputs, &has_chunks, index, term)
        });
    }

    fn groups(&self) -> BTreeMap<(String, String, i64), Vec<Arc<ChunkHandle>>> {
        let mut groups: BTreeMap<(String, String, i64), Vec<Arc<ChunkHandle>>> = BTreeMap::new();
        for c in self.store.chunks.values() {
            let f = c.footer();
            groups
                .entry((f.database.clone(), f.table.clone(), f.partition))
                .or_default()
                .push(c.clone());
        }
        groups
    }

    fn start_compaction(&mut self) -> bool {
        let min = if self.force_compact {
            2
        } else {
            self.cfg.compact_min_chunks.max(2)
        };
        let snap = self.catalog.snapshot();
        let pick = self
            .groups()
            .into_iter()
            .find(|(_, g)| g.len() >= min || (g.len() >= 2 && g.iter().any(|c| c.overlaps)));
        let Some(((db, table, _), group)) = pick else {
            return false;
        };
        let Some(schema) = snap.table(&db, &table) else {
            return false;
        };
        let arrow_schema = schema.arrow_schema();
        let policy = schema.options.dedup;
        let cfg = self.job_config();
        let manifest = self.store.manifest.clone();
        self.spawn(JobKind::Compact, move || {
            flush::run_compaction(&cfg, manifest, &group, &arrow_schema, policy)
        });
        true
    }

    fn start_retention(&mut self) -> bool {
        let snap = self.catalog.snapshot();
        let now = now_ns();
        let len = self.cfg.partition_len;
        let expired: Vec<u64> = self
            .store
            .chunks
            .values()
            .filter(|c| {
                let f = c.footer();
                snap.retention(&f.database, &f.table)
                    .is_some_and(|r| f.partition.saturating_add(len) <= now.saturating_sub(r))
            })
            .map(|c| c.id)
            .collect();
        if expired.is_empty() {
            return false;
        }
        let cfg = self.job_config();
        let manifest = self.store.manifest.clone();
        self.spawn(JobKind::Drop, move || {
            flush::run_drop(&cfg, manifest, expired)
        });
        true
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Lowers the calling thread's CPU priority (nice 10) for work that can
/// wait. Failing to is harmless: the work runs at normal priority.
fn background_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!(error = %e, "compaction runs at normal priority");
    }
}

#[cfg(test)]
mod priority_tests {
    use rustix::process::getpriority_process;
    use rustix::thread::gettid;

    #[test]
    fn background_work_runs_at_nice_10() {
        let before = getpriority_process(Some(gettid())).unwrap();
        let nice = std::thread::spawn(|| {
            super::background_priority();
            getpriority_process(Some(gettid()))
        })
        .join()
        .unwrap()
        .unwrap();
        // A process already nicer than 10 stays as it is.
        assert_eq!(nice, before.max(10));
        // Only that thread: this one keeps its priority.
        assert_eq!(getpriority_process(Some(gettid())).unwrap(), before);
    }
}
