//! The shard log as a sequence of segment files, so the part of the log that
//! chunks have made redundant can be deleted.
//!
//! Segments are `raft-<seq>.wal` (a log from before segments existed,
//! `raft.wal`, is segment 0). Only the newest segment is appended to; a sealed
//! segment is complete and fsync'd, so a bad record inside it is corruption,
//! not a torn write, and stops the shard from starting rather than silently
//! dropping the acknowledged entries after it. Each new segment starts with
//! the current hard state and configuration, so deleting older segments never
//! deletes the only copy of either.

use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, Entry, HardState};

use crate::error::{LogError, Result};
use crate::wal::{self, Wal, WalRecord, WalStats};

struct Sealed {
    path: PathBuf,
    last_index: u64,
}

pub struct SegmentedWal {
    dir: PathBuf,
    active: Wal,
    active_seq: u64,
    active_last_index: u64,
    sealed: Vec<Sealed>,
    /// What the segments before the active one did.
    before: WalStats,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    if seq == 0 {
        dir.join("raft.wal")
    } else {
        dir.join(format!("raft-{seq:08}.wal"))
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seqs),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| LogError::io(dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "raft.wal" {
            seqs.push(0);
        } else if let Some(n) = name
            .strip_prefix("raft-")
            .and_then(|r| r.strip_suffix(".wal"))
        {
            if let Ok(n) = n.parse::<u64>() {
                seqs.push(n);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Every record of every segment, oldest first.
pub struct Replayed {
    pub records: Vec<WalRecord>,
    pub wal: SegmentedWal,
}

impl SegmentedWal {
    /// Replays all segments and opens the newest for appending (a fresh log
    /// gets segment 1).
    pub async fn open(shard: usize, dir: &Path) -> Result<Replayed> {
        let seqs = list_segments(dir)?;
        let mut records = Vec::new();
        let mut sealed = Vec::new();
        let mut last_index = 0;
        let newest = seqs.last().copied();
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let replay = wal::replay(&path)?;
            let seg_last = replay
                .records
                .iter()
                .filter_map(|r| match r {
                    WalRecord::Entry(e) => Some(e.index),
                    _ => None,
                })
                .max()
                .unwrap_or(last_index);
            last_index = last_index.max(seg_last);
            records.extend(replay.records);
            if Some(seq) != newest {
                if let Some((offset, reason)) = replay.cut {
                    return Err(LogError::Decode {
                        index: last_index,
                        reason: format!(
                            "sealed log segment {} is corrupt at byte {offset}: {reason}",
                            path.display()
                        ),
                    });
                }
                sealed.push(Sealed {
                    path,
                    last_index: seg_last,
                });
                continue;
            }
            if let Some((offset, reason)) = &replay.cut {
                tracing::warn!(shard, path = %path.display(), offset, reason = %reason,
                    "shard log has a bad record; everything from it on is cut off");
            }
            let active = Wal::open(&path, replay.valid_len).await?;
            return Ok(Replayed {
                records,
                wal: SegmentedWal {
                    dir: dir.to_path_buf(),
                    active,
                    active_seq: seq,
                    active_last_index: seg_last,
                    sealed,
                    before: WalStats::default(),
                },
            });
        }
        let active = Wal::open(&segment_path(dir, 1), 0).await?;
        Ok(Replayed {
            records,
            wal: SegmentedWal {
                dir: dir.to_path_buf(),
                active,
                active_seq: 1,
                active_last_index: 0,
                sealed,
                before: WalStats::default(),
            },
        })
    }

    pub fn append_entry(&mut self, e: &Entry) -> Result<()> {
        self.active_last_index = self.active_last_index.max(e.index);
        self.active.append_entry(e)
    }

    pub fn append_hard_state(&mut self, hs: &HardState) {
        self.active.append_hard_state(hs)
    }

    pub fn append_conf_state(&mut self, cs: &ConfState) -> Result<()> {
        self.active.append_conf_state(cs)
    }

    pub async fn sync(&mut self) -> Result<()> {
        self.active.sync().await
    }

    pub fn stats(&self) -> WalStats {
        let mut s = self.before;
        s += self.active.stats();
        s
    }

    /// Everything up to `index` is in chunks: start a new segment if the
    /// active one has grown past `roll_bytes`, and delete every sealed segment
    /// that holds nothing newer than `index`.
    pub async fn compact(
        &mut self,
        index: u64,
        roll_bytes: u64,
        hs: &HardState,
        cs: &ConfState,
    ) -> Result<usize> {
        if self.active.stats().bytes_synced >= roll_bytes {
            let seq = self.active_seq + 1;
            let path = segment_path(&self.dir, seq);
            let mut next = Wal::open(&path, 0).await?;
            next.append_conf_state(cs)?;
            next.append_hard_state(hs);
            next.sync().await?;
            crate::fsutil::sync_dir(&self.dir)?;
            let old = std::mem::replace(&mut self.active, next);
            self.before += old.stats();
            old.close().await?;
            self.sealed.push(Sealed {
                path: segment_path(&self.dir, self.active_seq),
                last_index: self.active_last_index,
            });
            self.active_seq = seq;
            self.active_last_index = 0;
        }
        let before = self.sealed.len();
        let mut kept = Vec::new();
        for s in self.sealed.drain(..) {
            if s.last_index <= index {
                std::fs::remove_file(&s.path).map_err(|e| LogError::io(&s.path, e))?;
            } else {
                kept.push(s);
            }
        }
        self.sealed = kept;
        let removed = before - self.sealed.len();
        if removed > 0 {
            crate::fsutil::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    pub async fn close(self) -> Result<()> {
        self.active.close().await
    }
}
