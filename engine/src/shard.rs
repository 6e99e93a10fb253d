//! The loop each shard runs on its own core.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use raft::prelude::Entry;

use crate::batch::{self, TableBatch, WriteBatch};
use crate::buffer::TableStats;
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::jobs::{ShardState, StorageConfig, TableSnapshot};
use crate::store::{BrokenChunk, ChunkHandle, Store};
use sluice_raftlog::{NoPeers, RaftNode};

const TICK: Duration = Duration::from_millis(100);
/// Upper bound on what one group commit collects before it fsyncs.
const MAX_GROUP_BYTES: usize = 64 << 20;

pub(crate) enum ShardMsg {
    Write {
        batch: WriteBatch,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Flush everything buffered and compact; answered when done.
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown,
}

pub(crate) enum QueryMsg {
    Snapshot {
        database: String,
        table: String,
        min: i64,
        max: i64,
        reply: oneshot::Sender<TableSnapshot>,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    Chunks {
        reply: oneshot::Sender<(Vec<Arc<ChunkHandle>>, Vec<BrokenChunk>)>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard: usize,
    pub tables: Vec<(String, String, TableStats)>,
    pub log_bytes_synced: u64,
    pub log_syncs: u64,
    pub log_sync_seconds: f64,
    pub raft_last_index: u64,
    pub raft_leader: bool,
    pub flushed_index: u64,
    pub buffer_bytes: usize,
    pub chunks: usize,
    pub chunks_written: u64,
    pub compactions: u64,
    pub log_segments_removed: u64,
    pub backpressure_rejections: u64,
    /// Writes refused because the disk was below its reserve.
    pub disk_full_rejections: u64,
}

struct Pending {
    index: u64,
    term: u64,
    tables: Vec<TableBatch>,
    reply: oneshot::Sender<Result<()>>,
}

pub(crate) struct ShardParts {
    pub id: usize,
    pub dir: PathBuf,
    pub catalog: Arc<Catalog>,
    pub writes: flume::Receiver<ShardMsg>,
    pub queries: flume::Receiver<QueryMsg>,
    pub storage: StorageConfig,
}

fn apply_entry(
    e: &Entry,
    pending: &mut VecDeque<Pending>,
    state: &RefCell<ShardState>,
    shard: usize,
) {
    while pending.front().is_some_and(|p| p.index < e.index) {
        if let Some(p) = pending.pop_front() {
            let _ = p.reply.send(Err(EngineError::NotLeader { shard }));
        }
    }
    let mine = pending
        .front()
        .is_some_and(|p| p.index == e.index && p.term == e.term);
    if mine {
        if let Some(p) = pending.pop_front() {
            let mut st = state.borrow_mut();
            for t in p.tables {
                st.buffer.insert(&t.database, &t.table, t.batch);
            }
            drop(st);
            let _ = p.reply.send(Ok(()));
        }
        return;
    }
    if e.data.is_empty() {
        return;
    }
    match batch::decode(e.index, &e.data) {
        Ok(tables) => {
            let mut st = state.borrow_mut();
            for t in tables {
                st.buffer.insert(&t.database, &t.table, t.batch);
            }
        }
        Err(err) => tracing::error!(shard, error = %err, "committed entry skipped"),
    }
}

pub(crate) async fn run(
    parts: ShardParts,
    ready: std::sync::mpsc::Sender<Result<()>>,
    on_ready: impl FnOnce(),
) {
    let id = parts.id;
    let started = async {
        std::fs::create_dir_all(&parts.dir).map_err(|e| EngineError::io(&parts.dir, e))?;
        sluice_raftlog::probe_disk(&parts.dir).await?;
        let store = Store::open(id, &parts.dir)?;
        let mut node = RaftNode::open(id, &parts.dir, store.snapshot_point(), NoPeers).await?;
        sluice_raftlog::sync_dir(&parts.dir)?;
        if let Some(parent) = parts.dir.parent() {
            sluice_raftlog::sync_dir(parent)?;
        }
        let buffer = Rc::new(RefCell::new(ShardState::new(
            id,
            parts.catalog.clone(),
            store,
            parts.storage.clone(),
        )));
        let mut pending = VecDeque::new();
        // Become leader and apply everything the log holds before serving.
        let target = node.last_index();
        let mut applied = 0u64;
        for _ in 0..1000 {
            node.drive(&mut |e: &Entry| {
                applied = e.index;
                apply_entry(e, &mut pending, &buffer, id)
            })
            .await?;
            if node.is_leader() && applied >= target {
                break;
            }
        }
        if !node.is_leader() {
            return Err(EngineError::Runtime(format!(
                "shard {id} did not become raft leader after replay"
            )));
        }
        Ok((node, buffer, pending))
    }
    .await;
    let (mut node, buffer, mut pending) = match started {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    on_ready();

    let stats_node = Rc::new(RefCell::new(ShardStats {
        shard: id,
        ..Default::default()
    }));
    let space = sluice_raftlog::SpaceGuard::new(&parts.dir, parts.storage.min_free_bytes);
    let qbuf = buffer.clone();
    let qstats = stats_node.clone();
    let queries = parts.queries.clone();
    glommio::spawn_local(async move {
        while let Ok(msg) = queries.recv_async().await {
            match msg {
                QueryMsg::Snapshot {
                    database,
                    table,
                    min,
                    max,
                    reply,
                } => {
                    let _ = reply.send(qbuf.borrow().snapshot(&database, &table, min, max));
                }
                QueryMsg::Stats { reply } => {
                    let mut s = qstats.borrow().clone();
                    let st = qbuf.borrow();
                    s.tables = st.buffer.stats();
                    s.buffer_bytes = st.memory_bytes();
                    s.chunks = st.store.chunks.len();
                    s.chunks_written = st.chunks_written;
                    s.compactions = st.compactions;
                    s.flushed_index = st.store.manifest.flushed_index;
                    let _ = reply.send(s);
                }
                QueryMsg::Chunks { reply } => {
                    let _ = reply.send(qbuf.borrow().all_chunks());
                }
            }
        }
    })
    .detach();

    let mut last_tick = Instant::now();
    let mut shutdown = false;
    while !shutdown {
        let first = match sluice_raftlog::next_or_tick(&parts.writes, TICK).await {
            sluice_raftlog::Wake::Msg(m) => Some(m),
            sluice_raftlog::Wake::Tick => None,
            sluice_raftlog::Wake::Closed => {
                shutdown = true;
                None
            }
        };
        let mut group_bytes = 0usize;
        let mut next = first;
        loop {
            match next.take() {
                Some(ShardMsg::Write { batch, reply }) => {
                    group_bytes += batch.encoded_len();
                    if let Err(e) = buffer.borrow().admit() {
                        stats_node.borrow_mut().backpressure_rejections += 1;
                        let _ = reply.send(Err(e));
                    } else if let Err(full) = space.check() {
                        stats_node.borrow_mut().disk_full_rejections += 1;
                        let _ = reply.send(Err(EngineError::DiskFull(full)));
                    } else if batch.is_empty() {
                        let _ = reply.send(Ok(()));
                    } else {
                        let (tables, data) = batch.into_parts();
                        match node.propose(data) {
                            Ok((index, term)) => pending.push_back(Pending {
                                index,
                                term,
                                tables,
                                reply,
                            }),
                            Err(e) => {
                                let _ = reply.send(Err(e.into()));
                            }
                        }
                    }
                }
                Some(ShardMsg::Flush { reply }) => buffer.borrow_mut().request_flush(reply),
                Some(ShardMsg::Shutdown) => shutdown = true,
                None => {}
            }
            if shutdown || group_bytes >= MAX_GROUP_BYTES {
                break;
            }
            match parts.writes.try_recv() {
                Ok(m) => next = Some(m),
                Err(_) => break,
            }
        }
        if last_tick.elapsed() >= TICK {
            node.tick();
            last_tick = Instant::now();
        }
        let res = node
            .drive(&mut |e: &Entry| apply_entry(e, &mut pending, &buffer, id))
            .await;
        if let Err(e) = res {
            // A failed fsync leaves the page cache in an unknown state: stop
            // taking writes rather than acknowledge anything on top of it.
            tracing::error!(shard = id, error = %e, "shard log failed; shard stops accepting writes");
            for p in pending.drain(..) {
                let _ = p.reply.send(Err(EngineError::ShardUnavailable(id)));
            }
            break;
        }
        buffer.borrow_mut().poll_job();
        let applied = node.applied();
        match node.term_of(applied) {
            Ok(term) => buffer.borrow_mut().schedule((applied, term)),
            Err(e) => tracing::warn!(shard = id, error = %e, "no term for the applied index"),
        }
        let compact_to = buffer.borrow_mut().take_log_compaction();
        if let Some((index, force)) = compact_to {
            let roll = if force {
                1
            } else {
                parts.storage.log_segment_bytes
            };
            match node.compact_log(index, roll).await {
                Ok(n) => stats_node.borrow_mut().log_segments_removed += n as u64,
                Err(e) => tracing::warn!(shard = id, error = %e, "deleting flushed log segments"),
            }
        }
        let mut s = stats_node.borrow_mut();
        let log = node.wal_stats();
        s.log_bytes_synced = log.bytes_synced;
        s.log_syncs = log.syncs;
        s.log_sync_seconds = log.sync_seconds;
        s.raft_last_index = node.last_index();
        s.raft_leader = node.is_leader();
    }
    for p in pending.drain(..) {
        let _ = p.reply.send(Err(EngineError::ShardUnavailable(id)));
    }
    if let Err(e) = node.close().await {
        tracing::warn!(shard = id, error = %e, "closing shard log");
    }
    tracing::info!(shard = id, "shard stopped");
}
