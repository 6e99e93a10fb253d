//! The shard log: the durable half of the shard's raft log.
//!
//! Records are framed as `[len: u32 LE][crc32c(body): u32 LE][body]`, where
//! `body = [kind: u8][payload]`. The file is written with O_DIRECT through
//! glommio: each `sync` rewrites the partially filled last block together with
//! everything appended since, zero-padded to the block size, then fdatasyncs.
//! A zero `len` therefore marks the logical end of the log. On open, replay
//! stops at the first record whose frame or checksum is wrong, reports where
//! and why, and cuts the file there; nothing after a bad record is trusted.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, HardState};

use crate::error::{EngineError, Result};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const HEADER: usize = 8;
/// Upper bound on one record, so a corrupt length cannot make replay allocate
/// unboundedly.
const MAX_RECORD: usize = 1 << 30;

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
    file: DmaFile,
    path: PathBuf,
    align: u64,
    /// Offset of the block holding the end of the log.
    block_start: u64,
    /// Logical bytes from `block_start` to the end of what is already on disk.
    tail: Vec<u8>,
    /// Records appended since the last `sync`.
    pending: Vec<u8>,
    bytes_synced: u64,
}

/// Reads and validates the whole log. Runs before the shard serves anything,
/// so plain blocking reads are fine here.
pub fn replay(path: &Path) -> Result<Replay> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(EngineError::io(path, e)),
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
            .map_err(|e| EngineError::io(path, e.into()))?;
        let align = file.alignment().max(512);
        let block_start = valid_len / align * align;
        let tail_len = (valid_len - block_start) as usize;
        let mut tail = Vec::with_capacity(align as usize);
        if tail_len > 0 {
            let rd = file
                .read_at_aligned(block_start, align as usize)
                .await
                .map_err(|e| EngineError::io(path, e.into()))?;
            if rd.len() < tail_len {
                return Err(EngineError::io(
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
            .map_err(|e| EngineError::io(path, e.into()))?;
        let mut wal = Wal {
            file,
            path: path.to_path_buf(),
            align,
            block_start,
            tail,
            pending: Vec::new(),
            bytes_synced: 0,
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
            return Err(EngineError::Encode(format!(
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
            .map_err(|e| EngineError::Encode(e.to_string()))?;
        self.frame(KIND_CONF_STATE, &[&bytes]);
        Ok(())
    }

    /// Total bytes made durable since open.
    pub fn bytes_synced(&self) -> u64 {
        self.bytes_synced
    }

    /// Makes every appended record durable (write + fdatasync).
    pub async fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<()> {
        let logical = self.tail.len() + self.pending.len();
        let size = (logical as u64).div_ceil(self.align) * self.align;
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
            .map_err(|e| EngineError::io(&self.path, e.into()))?;
        if (written as u64) < size {
            return Err(EngineError::io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short write to log"),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| EngineError::io(&self.path, e.into()))?;
        self.bytes_synced += self.pending.len() as u64;
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
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        self.file
            .close()
            .await
            .map_err(|e| EngineError::io(&self.path, e.into()))
    }
}
