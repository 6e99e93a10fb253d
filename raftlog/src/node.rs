//! One raft group member: raft-rs's `RawNode` over the shard log.
//!
//! `MemStorage` is the in-memory view raft-rs reads through its `Storage`
//! trait; the [`Wal`] is what makes it durable. The ready loop follows the
//! order raft-rs requires: send messages, apply committed entries, persist
//! entries and hard state (one fsync per ready, which is the group commit),
//! only then send persisted messages, advance, apply what became committed.

use std::path::Path;

use raft::prelude::{ConfState, Entry, HardState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, Storage};

use crate::error::{LogError, Result};
use crate::segments::SegmentedWal;
use crate::wal::WalRecord;

/// This node's id inside every shard group. With peers (a later step) each
/// node gets its own id; a one-voter group is just node 1.
pub const LOCAL_ID: u64 = 1;

/// Carries raft messages to the other members of a shard group. A single node
/// has nobody to talk to; replication plugs a network transport in here.
pub trait Transport {
    fn send(&self, msgs: Vec<Message>);
}

pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            tracing::warn!(
                count = msgs.len(),
                "raft messages for peers dropped: single-node group"
            );
        }
    }
}

pub struct RaftNode<T: Transport> {
    node: RawNode<MemStorage>,
    wal: SegmentedWal,
    transport: T,
    applied: u64,
}

fn logger() -> slog::Logger {
    slog::Logger::root(crate::slogbridge::TracingDrain, slog::o!())
}

impl<T: Transport> RaftNode<T> {
    /// Replays the shard log in `dir` (cutting a torn or corrupt tail) and
    /// starts the raft node over it. `snapshot` is the (index, term) up to
    /// which chunks hold everything; the log before it may have been deleted.
    /// A fresh log is bootstrapped as a one-voter group.
    pub async fn open(
        group: usize,
        dir: &Path,
        snapshot: Option<(u64, u64)>,
        transport: T,
    ) -> Result<Self> {
        let replayed = SegmentedWal::open(group, dir).await?;
        let mut wal = replayed.wal;
        let storage = MemStorage::new();
        let mut conf: Option<ConfState> = None;
        let mut hs: Option<HardState> = None;
        let mut entries: Vec<Entry> = Vec::new();
        let snap_index = snapshot.map(|s| s.0).unwrap_or(0);
        for r in replayed.records {
            match r {
                WalRecord::ConfState(c) => conf = Some(c),
                WalRecord::HardState(h) => hs = Some(h),
                WalRecord::Entry(e) if e.index <= snap_index => {}
                WalRecord::Entry(e) => {
                    // A later record at an index already seen replaces the
                    // suffix from there, as raft's own log truncation does.
                    let first = entries.first().map(|f| f.index).unwrap_or(e.index);
                    if e.index < first || e.index > first + entries.len() as u64 {
                        return Err(LogError::Decode {
                            index: e.index,
                            reason: format!(
                                "entry does not continue the log (first {first}, have {})",
                                entries.len()
                            ),
                        });
                    }
                    entries.truncate((e.index - first) as usize);
                    entries.push(e);
                }
            }
        }
        if let Some(first) = entries.first() {
            if first.index != snap_index + 1 {
                return Err(LogError::Decode {
                    index: first.index,
                    reason: format!(
                        "log resumes at index {} but chunks end at index {snap_index}: entries are missing",
                        first.index
                    ),
                });
            }
        }
        let entry_count = entries.len();
        {
            let mut core = storage.wl();
            let cs = match conf {
                Some(c) => c,
                None => {
                    let c = ConfState::from((vec![LOCAL_ID], vec![]));
                    wal.append_conf_state(&c)?;
                    c
                }
            };
            if let Some((index, term)) = snapshot.filter(|s| s.0 > 0) {
                let mut snap = raft::prelude::Snapshot::default();
                snap.mut_metadata().index = index;
                snap.mut_metadata().term = term;
                snap.mut_metadata().set_conf_state(cs.clone());
                core.apply_snapshot(snap)?;
            }
            core.set_conf_state(cs);
            core.append(&entries)?;
            if let Some(mut h) = hs {
                let last = entries.last().map(|e| e.index).unwrap_or(snap_index);
                h.commit = h.commit.clamp(snap_index, last);
                core.set_hardstate(h);
            }
        }
        wal.sync().await?;
        let config = Config {
            id: LOCAL_ID,
            election_tick: 10,
            heartbeat_tick: 3,
            applied: snap_index,
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        config.validate()?;
        let node = RawNode::new(&config, storage, &logger())?;
        tracing::info!(group, entries = entry_count, "raft log replayed");
        let mut rn = RaftNode {
            node,
            wal,
            transport,
            applied: snap_index,
        };
        if rn.is_single_voter() {
            rn.node.campaign()?;
        }
        Ok(rn)
    }

    fn is_single_voter(&self) -> bool {
        let cs = self.node.raft.prs().conf().to_conf_state();
        cs.voters == vec![LOCAL_ID] && cs.learners.is_empty()
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == raft::StateRole::Leader
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Proposes `data`; returns the (index, term) the entry will have if it commits.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64)> {
        self.node.propose(Vec::new(), data)?;
        Ok((self.node.raft.raft_log.last_index(), self.node.raft.term))
    }

    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// Runs one ready cycle: persists what raft asks for and hands every
    /// entry that is committed (hence durable on a quorum) to `apply`.
    pub async fn drive(&mut self, apply: &mut impl FnMut(&Entry)) -> Result<()> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.transport.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            return Err(LogError::SnapshotUnsupported);
        }
        for e in ready.take_committed_entries() {
            self.applied = e.index;
            apply(&e);
        }
        let store = self.node.store().clone();
        if !ready.entries().is_empty() {
            for e in ready.entries() {
                self.wal.append_entry(e)?;
            }
            store.wl().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.wal.append_hard_state(hs);
            store.wl().set_hardstate(hs.clone());
        }
        self.wal.sync().await?;
        self.transport.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        self.transport.send(light.take_messages());
        for e in light.take_committed_entries() {
            self.applied = e.index;
            apply(&e);
        }
        self.node.advance_apply();
        // Applied entries live on in the shard buffer and the log on disk;
        // raft's in-memory copy of them is dead weight.
        let first = store.first_index()?;
        if self.applied > first {
            store.wl().compact(self.applied)?;
        }
        Ok(())
    }

    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The term of the entry at `index`, while raft still holds it.
    pub fn term_of(&self, index: u64) -> Result<u64> {
        Ok(self.node.raft.raft_log.term(index)?)
    }

    /// Entries up to `index` are in durable chunks: drop the log behind them.
    pub async fn compact_log(&mut self, index: u64, roll_bytes: u64) -> Result<usize> {
        let hs = self.node.raft.hard_state();
        let cs = self.node.raft.prs().conf().to_conf_state();
        self.wal.compact(index, roll_bytes, &hs, &cs).await
    }

    pub async fn close(self) -> Result<()> {
        self.wal.close().await
    }
}
