//! The shard log: the durable half of the shard's raft log.
//!
//! Records are framed as `[len: u32 LE][crc32c(body): u32 LE][body]`, where
//! `body = [kind: u8][payload]`. The file is written with O_DIRECT through
//! glommio: each `sync` rewrites the partially filled last block together with
//! everything appended since, zero-padded to the block size, then fdatasyncs.
//! A zero `len` therefore marks the logical end of the log. On open, replay
//! stops at the first record whose frame or checksum is wrong, reports where
//! and why, and cuts the file there; nothing after a bad record is trusted.
//!
//! The file is kept zero-filled ahead of the end of the log ([`PREALLOC`]).
//! An fdatasync after a write that extends the file must also commit the new
//! size through the filesystem journal; after a write into blocks that are
//! already written it only flushes the data. Measured here on ext4, two logs
//! syncing side by side: 330-340 µs per write + fdatasync when appending,
//! 155-170 µs into zero-filled blocks. (fallocate alone does not help: its
//! blocks are "unwritten", and the first write to each must be journaled.)

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::io::{DmaFile, OpenOptions};
use glommio::Task;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, HardState};

use crate::error::{LogError, Result};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const HEADER: usize = 8;
/// Upper bound on one record, so a corrupt length cannot make replay allocate
/// unboundedly.
const MAX_RECORD: usize = 1 << 30;
/// Zero-filled bytes added ahead of the log's end at a time, in the
/// background, once fewer than half of them are left.
const PREALLOC: u64 = 8 << 20;
/// The zero buffer written repeatedly to fill [`PREALLOC`] bytes.
const ZERO_WRITE: usize = 1 << 20;

#[derive(Debug)]
pub enum WalRecord {
    Entry(Entry),
    HardState(HardState),
    ConfState(ConfState),
}

/// What replay found: the records, and where (if anywhere) it had to stop early.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<WalRecord>,
    pub valid_len: u64,
    pub cut: Option<(u64, String)>,
}

pub struct Wal {
    file: Rc<DmaFile>,
    path: PathBuf,
    align: u64,
    /// Offset of the block holding the end of the log.
    block_start: u64,
    /// Logical bytes from `block_start` to the end of what is already on disk.
    tail: Vec<u8>,
    /// Records appended since the last `sync`.
    pending: Vec<u8>,
    /// The file is written (records or zeros) up to here.
    filled: u64,
    /// A background zero-fill from `filled` up to `.0`.
    filling: Option<(u64, Task<Result<()>>)>,
    stats: WalStats,
}

/// What the log has done since it was opened, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalStats {
    pub bytes_synced: u64,
    pub syncs: u64,
    /// Time spent in write + fdatasync.
    pub sync_seconds: f64,
}

impl std::ops::AddAssign for WalStats {
    fn add_assign(&mut self, o: WalStats) {
        self.bytes_synced += o.bytes_synced;
        self.syncs += o.syncs;
        self.sync_seconds += o.sync_seconds;
    }
}

/// Reads and validates the whole log. Runs before the shard serves anything,
/// so plain blocking reads are fine here.
pub fn replay(path: &Path) -> Result<Replay> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let mut out = Replay::default();
    let mut pos = 0usize;
    while pos + HEADER <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        if len == 0 {
            break;
        }
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let body_start = pos + HEADER;
        if len > MAX_RECORD || body_start + len > data.len() {
            out.cut = Some((
                pos as u64,
                format!("record of {len} bytes runs past the end of the file"),
            ));
            break;
        }
        let body = &data[body_start..body_start + len];
        if crc32c::crc32c(body) != crc {
            out.cut = Some((pos as u64, "checksum mismatch".into()));
            break;
        }
        match decode_body(body) {
            Ok(r) => out.records.push(r),
            Err(reason) => {
                out.cut = Some((pos as u64, reason));
                break;
            }
        }
        pos = body_start + len;
    }
    out.valid_len = pos as u64;
    if out.cut.is_none() && data[pos..].iter().any(|b| *b != 0) {
        out.cut = Some((pos as u64, "garbage after the last record".into()));
    }
    Ok(out)
}

fn decode_body(body: &[u8]) -> std::result::Result<WalRecord, String> {
    let (&kind, payload) = body.split_first().ok_or("empty record")?;
    match kind {
        KIND_ENTRY => {
            if payload.len() < 21 {
                return Err("entry record too short".into());
            }
            let index = u64::from_le_bytes(payload[0..8].try_into().map_err(|_| "index")?);
            let term = u64::from_le_bytes(payload[8..16].try_into().map_err(|_| "term")?);
            let etype = match payload[16] {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                t => return Err(format!("unknown entry type {t}")),
            };
            let ctx_len =
                u32::from_le_bytes(payload[17..21].try_into().map_err(|_| "ctx")?) as usize;
            let rest = &payload[21..];
            if ctx_len > rest.len() {
                return Err("entry context runs past the record".into());
            }
            let mut e = Entry {
                index,
                term,
                context: rest[..ctx_len].to_vec().into(),
                data: rest[ctx_len..].to_vec().into(),
                ..Default::default()
            };
            e.set_entry_type(etype);
            Ok(WalRecord::Entry(e))
        }
        KIND_HARD_STATE => {
            if payload.len() != 24 {
                return Err("hard state record has the wrong size".into());
            }
            let word = |i: usize| -> std::result::Result<u64, String> {
                let b: [u8; 8] = payload[i..i + 8].try_into().map_err(|_| "hard state")?;
                Ok(u64::from_le_bytes(b))
            };
            let hs = HardState {
                term: word(0)?,
                vote: word(8)?,
                commit: word(16)?,
                ..Default::default()
            };
            Ok(WalRecord::HardState(hs))
        }
        KIND_CONF_STATE => ConfState::parse_from_bytes(payload)
            .map(WalRecord::ConfState)
            .map_err(|e| format!("conf state: {e}")),
        k => Err(format!("unknown record kind {k}")),
    }
}

impl Wal {
    /// Opens the log for appending after `replay` validated its first
    /// `valid_len` bytes; anything past them is cut off.
    pub async fn open(path: &Path, valid_len: u64) -> Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(|e| LogError::io(path, e.into()))?;
        let align = file.alignment().max(512);
        let block_start = valid_len / align * align;
        let tail_len = (valid_len - block_start) as usize;
        let mut tail = Vec::with_capacity(align as usize);
        if tail_len > 0 {
            let rd = file
                .read_at_aligned(block_start, align as usize)
                .await
                .map_err(|e| LogError::io(path, e.into()))?;
            if rd.len() < tail_len {
                return Err(LogError::io(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "short read of log tail",
                    ),
                ));
            }
            tail.extend_from_slice(&rd[..tail_len]);
        }
        // Drop whatever lies past the valid prefix (a torn or corrupt tail) so a
        // later replay cannot mistake stale bytes for records.
        let keep = if tail_len > 0 {
            block_start + align
        } else {
            block_start
        };
        file.truncate(keep)
            .await
            .map_err(|e| LogError::io(path, e.into()))?;
        let mut wal = Wal {
            file: Rc::new(file),
            path: path.to_path_buf(),
            align,
            block_start,
            tail,
            pending: Vec::new(),
            filled: keep,
            filling: None,
            stats: WalStats::default(),
        };
        if tail_len > 0 {
            // Rewrite the tail block so the bytes after the logical end are zero.
            wal.write_out().await?;
        }
        Ok(wal)
    }

    fn frame(&mut self, kind: u8, parts: &[&[u8]]) {
        let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut crc = crc32c::crc32c(&[kind]);
        for p in parts {
            crc = crc32c::crc32c_append(crc, p);
        }
        self.pending.reserve(HEADER + len);
        self.pending.extend_from_slice(&(len as u32).to_le_bytes());
        self.pending.extend_from_slice(&crc.to_le_bytes());
        self.pending.push(kind);
        for p in parts {
            self.pending.extend_from_slice(p);
        }
    }

    pub fn append_entry(&mut self, e: &Entry) -> Result<()> {
        let len = 21 + e.context.len() + e.data.len();
        if len + 1 > MAX_RECORD {
            return Err(LogError::Encode(format!(
                "log entry of {len} bytes is too large"
            )));
        }
        let mut head = [0u8; 21];
        head[0..8].copy_from_slice(&e.index.to_le_bytes());
        head[8..16].copy_from_slice(&e.term.to_le_bytes());
        head[16] = e.get_entry_type() as u8;
        head[17..21].copy_from_slice(&(e.context.len() as u32).to_le_bytes());
        self.frame(KIND_ENTRY, &[&head, &e.context, &e.data]);
        Ok(())
    }

    pub fn append_hard_state(&mut self, hs: &HardState) {
        let mut p = [0u8; 24];
        p[0..8].copy_from_slice(&hs.term.to_le_bytes());
        p[8..16].copy_from_slice(&hs.vote.to_le_bytes());
        p[16..24].copy_from_slice(&hs.commit.to_le_bytes());
        self.frame(KIND_HARD_STATE, &[&p]);
    }

    pub fn append_conf_state(&mut self, cs: &ConfState) -> Result<()> {
        let bytes = cs
            .write_to_bytes()
            .map_err(|e| LogError::Encode(e.to_string()))?;
        self.frame(KIND_CONF_STATE, &[&bytes]);
        Ok(())
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Makes every appended record durable (write + fdatasync).
    pub async fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<()> {
        let started = Instant::now();
        let logical = self.tail.len() + self.pending.len();
        let size = (logical as u64).div_ceil(self.align) * self.align;
        let end = self.block_start + size;
        if end > self.filled {
            // Never write where the zero-fill is writing.
            self.finish_fill().await;
        }
        let mut buf = self.file.alloc_dma_buffer(size as usize);
        {
            let bytes = buf.as_bytes_mut();
            bytes[..self.tail.len()].copy_from_slice(&self.tail);
            bytes[self.tail.len()..logical].copy_from_slice(&self.pending);
            bytes[logical..].fill(0);
        }
        let written = self
            .file
            .write_at(buf, self.block_start)
            .await
            .map_err(|e| LogError::io(&self.path, e.into()))?;
        if (written as u64) < size {
            return Err(LogError::io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short write to log"),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| LogError::io(&self.path, e.into()))?;
        self.filled = self.filled.max(end);
        self.stats.bytes_synced += self.pending.len() as u64;
        self.stats.syncs += 1;
        self.stats.sync_seconds += started.elapsed().as_secs_f64();
        let full = (logical as u64) / self.align * self.align;
        let full = full as usize;
        self.tail = if full <= self.tail.len() {
            let mut t = self.tail.split_off(full);
            t.extend_from_slice(&self.pending);
            t
        } else {
            self.pending[full - self.tail.len()..].to_vec()
        };
        self.block_start += full as u64;
        self.pending.clear();
        if self.filling.is_none() && self.filled < end + PREALLOC / 2 {
            self.start_fill();
        }
        Ok(())
    }

    /// Zero-fills the next [`PREALLOC`] bytes after `filled` in the
    /// background, so syncs keep landing in written blocks.
    fn start_fill(&mut self) {
        let file = self.file.clone();
        let path = self.path.clone();
        let from = self.filled;
        let to = from + PREALLOC;
        let task = glommio::spawn_local(async move {
            let mut zeros = file.alloc_dma_buffer(ZERO_WRITE);
            zeros.as_bytes_mut().fill(0);
            let zeros = Rc::new(zeros);
            let mut at = from;
            while at < to {
                let n = file
                    .write_rc_at(zeros.clone(), at)
                    .await
                    .map_err(|e| LogError::io(&path, e.into()))?;
                if n == 0 {
                    return Err(LogError::io(
                        &path,
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "zero-filling the log"),
                    ));
                }
                at += n as u64;
            }
            Ok(())
        });
        self.filling = Some((to, task));
    }

    /// Waits for the zero-fill in flight, if any. A failed fill is only
    /// logged, and that stretch is not tried again: the log's own writes
    /// extend the file there, as they would without a fill (`filled` only
    /// marks where the log may write without waiting for one).
    async fn finish_fill(&mut self) {
        if let Some((to, task)) = self.filling.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "zero-filling ahead of the shard log; the log grows by its own writes instead");
            }
            self.filled = self.filled.max(to);
        }
    }

    pub async fn close(mut self) -> Result<()> {
        self.finish_fill().await;
        let file = Rc::try_unwrap(self.file).map_err(|_| {
            LogError::io(
                &self.path,
                std::io::Error::other("the log file is still in use"),
            )
        })?;
        file.close()
            .await
            .map_err(|e| LogError::io(&self.path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term: 1,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(f)
            .expect("start an executor")
            .join()
            .expect("executor finished");
    }

    fn entries(path: &Path) -> Vec<(u64, Vec<u8>)> {
        let r = replay(path).expect("replay");
        assert!(r.cut.is_none(), "replay cut the log: {:?}", r.cut);
        r.records
            .into_iter()
            .filter_map(|r| match r {
                WalRecord::Entry(e) => Some((e.index, e.data.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// The log is zero-filled ahead of its end, and what lies there is read
    /// as the end of the log, not as garbage: across reopening, every record
    /// comes back, in order.
    #[test]
    fn records_survive_the_zero_fill_ahead_of_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.wal");
        let payload = vec![7u8; 3000];
        let p = path.clone();
        let data = payload.clone();
        run(move || async move {
            let mut wal = Wal::open(&p, 0).await.expect("open");
            for i in 1..=50 {
                wal.append_entry(&entry(i, &data)).expect("append");
                wal.sync().await.expect("sync");
            }
            assert_eq!(wal.stats().syncs, 50);
            wal.close().await.expect("close");
        });
        let len = std::fs::metadata(&path).expect("stat").len();
        assert!(
            len >= PREALLOC,
            "the file is zero-filled ahead of the log ({len} bytes)"
        );
        assert_eq!(entries(&path).len(), 50);

        let valid = replay(&path).expect("replay").valid_len;
        let p = path.clone();
        let data = payload.clone();
        run(move || async move {
            let mut wal = Wal::open(&p, valid).await.expect("reopen");
            for i in 51..=60 {
                wal.append_entry(&entry(i, &data)).expect("append");
            }
            wal.sync().await.expect("sync");
            wal.close().await.expect("close");
        });
        let got = entries(&path);
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (1..=60).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|(_, d)| d == &payload));
    }
}
