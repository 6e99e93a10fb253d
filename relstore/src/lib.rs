//! Sluice's relational store: a small MVCC store for metadata and
//! transactional tables, beside the time-series engine.
//!
//! Transactions read a redb snapshot (exactly the state after one applied
//! entry), buffer their writes and commit as one raft entry, which the state
//! machine validates against what they read (optimistic, serializable) and
//! applies deterministically. The log is the same raft log the shards use
//! (`sluice-raftlog`), on an executor of its own; many commits share one
//! fsync.

mod command;
mod ddl;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod locks;
pub mod schema;
mod snapshot;
mod state;
mod txn;
pub mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::channel::oneshot;
use glommio::{LocalExecutorBuilder, Placement};
use parking_lot::Mutex;

pub use command::{Applied, DdlOp, TxnCommit};
pub use error::{RelError, Result};
pub use schema::RelCatalog;
pub use snapshot::Snapshot;
pub use state::{index_key, pk_key};
pub use txn::{Inserted, OnConflict, Txn};

use command::Command;
use group::{GroupParts, Msg};

/// The largest entry a transaction may commit.
pub const MAX_ENTRY_BYTES: usize = 32 << 20;
/// Sequence values reserved per log entry; a restart skips what was left.
const SEQUENCE_BLOCK: u64 = 32;

#[derive(Debug, Clone)]
pub struct RelConfig {
    /// `<data_dir>/meta`: the log segments and `state.redb`.
    pub dir: PathBuf,
    pub io_memory: usize,
    /// Refuse changes while the disk has less free than this (0: never).
    pub min_free_bytes: u64,
}

/// Reserved sequence values not yet handed out: (next, last, increment).
type Reserved = (i64, i64, i64);

/// A cheap, cloneable way to read and commit from any thread.
#[derive(Clone)]
pub struct RelHandle {
    db: Arc<redb::Database>,
    msgs: flume::Sender<Msg>,
    catalog: Arc<ArcSwap<RelCatalog>>,
    sequences: Arc<Mutex<HashMap<u64, Reserved>>>,
    locks: Arc<locks::LockTable>,
    next_txn: Arc<std::sync::atomic::AtomicU64>,
    space: Arc<sluice_raftlog::SpaceGuard>,
}

impl RelHandle {
    /// The schema as last applied (lock-free).
    pub fn catalog(&self) -> Arc<RelCatalog> {
        self.catalog.load_full()
    }

    /// A consistent snapshot of everything applied so far.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(Arc::new(Snapshot::open(&self.db, &self.catalog)?))
    }

    pub fn begin(&self, read_only: bool) -> Result<Txn> {
        let mut txn = Txn::new(self.snapshot()?, read_only);
        let id = self
            .next_txn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        txn.locks = locks::LockGuard::new(self.locks.clone(), id);
        Ok(txn)
    }

    /// Locks rows of `table` that the current statement of `txn` is about
    /// to update or delete, waiting for transactions that hold them. When
    /// one of them has changed since `txn`'s snapshot (another transaction
    /// committed it), the snapshot moves forward ([`Txn::refresh`]) and the
    /// answer is true: the statement must run again to see the rows as they
    /// are now, which the locks keep until `txn` ends.
    pub async fn lock_rows(&self, txn: &Mutex<Txn>, table: u64, keys: &[Vec<u8>]) -> Result<bool> {
        for k in keys {
            self.locks.acquire(txn, (table, k.clone())).await?;
        }
        let latest = self.snapshot()?;
        let mut t = txn.lock();
        if latest.index == t.snap.index {
            return Ok(false);
        }
        let mut changed = Vec::new();
        for k in keys {
            let then = t.snap.get(table, k)?.map(|v| v.0);
            let now = latest.get(table, k)?.map(|v| v.0);
            if then != now {
                changed.push((table, k.clone()));
            }
        }
        if changed.is_empty() {
            return Ok(false);
        }
        t.refresh(latest, &changed)?;
        Ok(true)
    }

    async fn propose(&self, cmd: &Command) -> Result<Applied> {
        self.space.check().map_err(RelError::DiskFull)?;
        let data = postcard::to_allocvec(cmd)?;
        if data.len() > MAX_ENTRY_BYTES {
            return Err(RelError::TooLarge {
                size: data.len(),
                limit: MAX_ENTRY_BYTES,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.msgs
            .send_async(Msg::Propose { data, reply: tx })
            .await
            .map_err(|_| RelError::Unavailable)?;
        rx.await.map_err(|_| RelError::Unavailable)?
    }

    /// Commits `txn`: durable in the log and applied when this returns Ok; a
    /// conflict with a transaction that committed first is
    /// [`RelError::Conflict`] and changes nothing.
    pub async fn commit(&self, mut txn: Txn) -> Result<()> {
        // Row locks are held until the commit is applied, so the next
        // holder sees it.
        let _locks = txn.locks.take();
        match txn.into_commit() {
            Some(c) => self.propose(&Command::Commit(c)).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Applies one schema change as its own entry.
    pub async fn ddl(&self, op: DdlOp) -> Result<()> {
        self.propose(&Command::Ddl(op)).await.map(|_| ())
    }

    /// The next value of a sequence. Values are reserved in blocks through
    /// the log, so a value is never handed out twice, even after a crash.
    pub async fn nextval(&self, id: u64) -> Result<i64> {
        let inc = {
            let cat = self.catalog();
            let s = cat
                .sequences
                .values()
                .find(|s| s.id == id)
                .ok_or_else(|| RelError::UndefinedObject(format!("sequence #{id}")))?;
            s.increment
        };
        self.reserve(
            id,
            Command::SeqReserve {
                id,
                count: SEQUENCE_BLOCK,
            },
            inc,
        )
        .await
    }

    /// A value from the block cached for `key`, reserving a new block
    /// through the log when it is used up.
    async fn reserve(&self, key: u64, cmd: Command, inc: i64) -> Result<i64> {
        {
            let mut cache = self.sequences.lock();
            if let Some((next, last, step)) = cache.get_mut(&key) {
                let v = *next;
                let done = if *step > 0 { v >= *last } else { v <= *last };
                if done {
                    cache.remove(&key);
                } else {
                    *next += *step;
                }
                return Ok(v);
            }
        }
        match self.propose(&cmd).await? {
            Applied::Values(first, last) => {
                if first != last {
                    self.sequences.lock().insert(key, (first + inc, last, inc));
                }
                Ok(first)
            }
            Applied::Done => Err(RelError::Storage("a reservation answered nothing".into())),
        }
    }

    /// A new hidden row id for a table without a primary key.
    pub async fn next_rowid(&self, table: u64) -> Result<i64> {
        self.reserve(
            table,
            Command::RowIds {
                table,
                count: SEQUENCE_BLOCK,
            },
            1,
        )
        .await
    }

    /// `setval`: the next value follows `value`.
    pub async fn setval(&self, id: u64, value: i64) -> Result<()> {
        self.sequences.lock().remove(&id);
        self.propose(&Command::SeqSet { id, value })
            .await
            .map(|_| ())
    }

    /// Writes entries of the `system` key space in one log entry: durable
    /// and applied when this returns.
    pub async fn put_system(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        self.propose(&Command::PutSystem { entries })
            .await
            .map(|_| ())
    }

    /// The `system` entries whose key starts with `prefix`, as applied so far.
    pub fn system_entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(state::SYSTEM)?;
        let mut out = Vec::new();
        for item in t.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes a copy of the state as of the last applied entry to a new redb
    /// file at `path`, durably, while the store keeps running: one read
    /// transaction, so the copy sits at one transaction boundary. A store
    /// started on it (with no log) resumes from that entry. Answers the
    /// entry's (index, term).
    pub fn backup_to(&self, path: &std::path::Path) -> Result<(u64, u64)> {
        state::copy_to(&self.db, path)
    }

    /// Forgets cached values of a sequence (after ALTER or DROP).
    /// Returns the last value handed out from the forgotten block, if one
    /// was cached (the store only knows where the block ends).
    pub fn forget_sequence(&self, id: u64) -> Option<i64> {
        self.sequences
            .lock()
            .remove(&id)
            .map(|(next, _, step)| next - step)
    }
}

/// Waits for `f` from synchronous code: here when the thread is not already
/// inside a `futures` executor, else on a thread of its own (nesting
/// `block_on` is refused). The store's group runs on its own executor, so
/// the wait cannot hold it up.
pub fn wait_blocking<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let free = futures::executor::enter().is_ok();
    if free {
        return futures::executor::block_on(f);
    }
    std::thread::scope(
        |s| match s.spawn(|| futures::executor::block_on(f)).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
    )
}

pub struct RelStore {
    handle: RelHandle,
    join: Option<glommio::ExecutorJoinHandle<()>>,
}

impl RelStore {
    /// Opens the state machine, replays the log after its durable point and
    /// returns once the store serves.
    pub fn start(cfg: &RelConfig) -> Result<RelStore> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| RelError::Storage(format!("creating {}: {e}", cfg.dir.display())))?;
        let state = state::State::open(&cfg.dir.join("state.redb"))?;
        let db = state.database();
        let catalog = Arc::new(ArcSwap::from_pointee(RelCatalog::default()));
        let (tx, rx) = flume::bounded(4096);
        let parts = GroupParts {
            dir: cfg.dir.clone(),
            state,
            msgs: rx,
            catalog: catalog.clone(),
        };
        let (rtx, rrx) = std::sync::mpsc::channel();
        let join = LocalExecutorBuilder::new(Placement::Unbound)
            .name("relstore")
            .io_memory(cfg.io_memory)
            .spawn(move || async move { group::run(parts, rtx).await })
            .map_err(|e| RelError::Storage(format!("starting the relational store: {e}")))?;
        match rrx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(e);
            }
            Err(_) => {
                let _ = join.join();
                return Err(RelError::Unavailable);
            }
        }
        Ok(RelStore {
            handle: RelHandle {
                db,
                msgs: tx,
                catalog,
                sequences: Arc::new(Mutex::new(HashMap::new())),
                locks: Default::default(),
                next_txn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
                space: Arc::new(sluice_raftlog::SpaceGuard::new(
                    &cfg.dir,
                    cfg.min_free_bytes,
                )),
            },
            join: Some(join),
        })
    }

    pub fn handle(&self) -> RelHandle {
        self.handle.clone()
    }

    /// Stops the group after a final checkpoint.
    pub fn stop(&mut self) {
        let _ = self.handle.msgs.send(Msg::Shutdown);
        if let Some(j) = self.join.take() {
            if let Err(e) = j.join() {
                tracing::warn!(error = %e, "relational store executor ended with an error");
            }
        }
    }
}

impl Drop for RelStore {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
