//! The relational store's raft group: one glommio executor of its own (not
//! a shard core) running the same ready loop as a shard. Proposals that
//! arrive together share one fsync of the log (group commit); committed
//! entries are applied to the state machine in log order and only then
//! answered.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::channel::oneshot;
use sluice_raftlog::{Entry, NoPeers, RaftNode};

use crate::command::Applied;
use crate::error::{RelError, Result};
use crate::schema::RelCatalog;
use crate::state::State;

const TICK: Duration = Duration::from_millis(100);
/// Log segments roll at this size once a checkpoint lets older ones go.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The raft group id used in logs (shards use their shard number).
const GROUP: usize = 1000;

pub(crate) enum Msg {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Applied>>,
    },
    Shutdown,
}

struct Pending {
    index: u64,
    term: u64,
    reply: oneshot::Sender<Result<Applied>>,
}

pub(crate) struct GroupParts {
    pub dir: PathBuf,
    pub state: State,
    pub msgs: flume::Receiver<Msg>,
    pub catalog: Arc<ArcSwap<RelCatalog>>,
}

/// Applies `entries` in order, answering the proposals they carry. A storage
/// failure is returned: the group must stop.
fn apply_all(
    entries: Vec<Entry>,
    state: &mut State,
    pending: &mut VecDeque<Pending>,
    catalog: &ArcSwap<RelCatalog>,
) -> Result<()> {
    let version = state.schema_version();
    for e in entries {
        let answer = state.apply(e.index, e.term, &e.data)?;
        while pending.front().is_some_and(|p| p.index < e.index) {
            if let Some(p) = pending.pop_front() {
                let _ = p.reply.send(Err(RelError::Conflict(
                    "the proposal was lost to a leader change".into(),
                )));
            }
        }
        if pending
            .front()
            .is_some_and(|p| p.index == e.index && p.term == e.term)
        {
            if state.schema_version() != version {
                publish_catalog(state, catalog)?;
            }
            if let Some(p) = pending.pop_front() {
                let _ = p.reply.send(answer);
            }
        }
    }
    if state.schema_version() != version {
        publish_catalog(state, catalog)?;
    }
    Ok(())
}

fn publish_catalog(state: &State, catalog: &ArcSwap<RelCatalog>) -> Result<()> {
    use redb::ReadableDatabase;
    let db = state.database();
    let txn = db.begin_read()?;
    let defs = txn.open_table(crate::state::DEFS)?;
    let cat = crate::state::load_catalog(&defs, state.schema_version())?;
    catalog.store(Arc::new(cat));
    Ok(())
}

async fn drive(
    node: &mut RaftNode<NoPeers>,
    state: &mut State,
    pending: &mut VecDeque<Pending>,
    catalog: &ArcSwap<RelCatalog>,
) -> Result<()> {
    let mut committed = Vec::new();
    node.drive(&mut |e: &Entry| committed.push(e.clone()))
        .await?;
    apply_all(committed, state, pending, catalog)
}

pub(crate) async fn run(mut parts: GroupParts, ready: std::sync::mpsc::Sender<Result<()>>) {
    let started = async {
        std::fs::create_dir_all(&parts.dir).map_err(|e| RelError::Storage(e.to_string()))?;
        sluice_raftlog::probe_disk(&parts.dir).await?;
        let durable = parts.state.durable();
        let snap = (durable.0 > 0).then_some(durable);
        let mut node = RaftNode::open(GROUP, &parts.dir, snap, NoPeers).await?;
        sluice_raftlog::sync_dir(&parts.dir)?;
        let mut pending = VecDeque::new();
        let target = node.last_index();
        for _ in 0..1000 {
            drive(&mut node, &mut parts.state, &mut pending, &parts.catalog).await?;
            if node.is_leader() && parts.state.applied().0 >= target {
                break;
            }
        }
        if !node.is_leader() {
            return Err(RelError::Log(
                "the relational store did not become raft leader after replay".into(),
            ));
        }
        publish_catalog(&parts.state, &parts.catalog)?;
        Ok((node, pending))
    }
    .await;
    let (mut node, mut pending) = match started {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut state = parts.state;
    let mut last_tick = Instant::now();
    let mut compacted_to = state.durable().0;
    let mut shutdown = false;
    while !shutdown {
        let first = match sluice_raftlog::next_or_tick(&parts.msgs, TICK).await {
            sluice_raftlog::Wake::Msg(m) => Some(m),
            sluice_raftlog::Wake::Tick => None,
            sluice_raftlog::Wake::Closed => {
                shutdown = true;
                None
            }
        };
        let mut next = first;
        loop {
            match next.take() {
                Some(Msg::Propose { data, reply }) => match node.propose(data) {
                    Ok((index, term)) => pending.push_back(Pending { index, term, reply }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                },
                Some(Msg::Shutdown) => shutdown = true,
                None => {}
            }
            if shutdown {
                break;
            }
            match parts.msgs.try_recv() {
                Ok(m) => next = Some(m),
                Err(_) => break,
            }
        }
        if last_tick.elapsed() >= TICK {
            node.tick();
            last_tick = Instant::now();
        }
        if let Err(e) = drive(&mut node, &mut state, &mut pending, &parts.catalog).await {
            // After a failed fsync or state write nothing more may be
            // acknowledged on top of it.
            tracing::error!(error = %e, "relational store failed; it stops accepting writes");
            break;
        }
        if state.checkpoint_due() {
            if let Err(e) = state.checkpoint() {
                tracing::error!(error = %e, "relational store checkpoint failed; it stops");
                break;
            }
        }
        let durable = state.durable().0;
        if durable > compacted_to {
            match node.compact_log(durable, SEGMENT_BYTES).await {
                Ok(_) => compacted_to = durable,
                Err(e) => tracing::warn!(error = %e, "deleting checkpointed relational log"),
            }
        }
    }
    for p in pending.drain(..) {
        let _ = p.reply.send(Err(RelError::Unavailable));
    }
    if let Err(e) = state.checkpoint() {
        tracing::warn!(error = %e, "final relational checkpoint");
    }
    if let Err(e) = node.close().await {
        tracing::warn!(error = %e, "closing the relational log");
    }
    tracing::info!("relational store stopped");
}
