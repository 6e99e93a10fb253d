//! What a write carries to a shard, and how it is laid out in a log entry.
//!
//! A write is a list of Arrow record batches, one per (database, table). The
//! log entry is their Arrow IPC stream encoding, prefixed by a format version
//! and the target of each batch, so replay yields exactly what the live path
//! applied. Front ends build and encode batches on their own threads; the
//! shard only appends bytes to its log and batches to its buffer.

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;

use crate::catalog::TIME_COLUMN;
use crate::error::{EngineError, Result};

const FORMAT_V1: u8 = 1;

#[derive(Debug, Clone)]
pub struct TableBatch {
    pub database: String,
    pub table: String,
    pub batch: RecordBatch,
}

impl TableBatch {
    /// Smallest and largest timestamp in the batch (`None` when it has no rows).
    pub fn time_range(&self) -> Option<(i64, i64)> {
        time_range(&self.batch)
    }
}

pub fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let col = batch.column_by_name(TIME_COLUMN)?;
    let ts = col.as_any().downcast_ref::<TimestampNanosecondArray>()?;
    let min = arrow::compute::min(ts)?;
    let max = arrow::compute::max(ts)?;
    Some((min, max))
}

/// A write for one shard, with its log encoding already computed.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    pub tables: Vec<TableBatch>,
    encoded: Vec<u8>,
}

impl WriteBatch {
    pub fn new(tables: Vec<TableBatch>) -> Result<Self> {
        let encoded = encode(&tables)?;
        Ok(WriteBatch { tables, encoded })
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.batch.num_rows()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// The log entry's bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    pub(crate) fn into_parts(self) -> (Vec<TableBatch>, Vec<u8>) {
        (self.tables, self.encoded)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode(tables: &[TableBatch]) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_V1];
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    for t in tables {
        put_str(&mut out, &t.database);
        put_str(&mut out, &t.table);
        let mut ipc = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut ipc, &t.batch.schema())
                .map_err(|e| EngineError::Encode(e.to_string()))?;
            w.write(&t.batch)
                .map_err(|e| EngineError::Encode(e.to_string()))?;
            w.finish().map_err(|e| EngineError::Encode(e.to_string()))?;
        }
        out.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        out.extend_from_slice(&ipc);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: wanted {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
    }
}

/// Decodes a log entry written by [`WriteBatch::new`].
pub fn decode(index: u64, data: &[u8]) -> Result<Vec<TableBatch>> {
    decode_inner(data).map_err(|reason| EngineError::Decode { index, reason })
}

fn decode_inner(data: &[u8]) -> std::result::Result<Vec<TableBatch>, String> {
    let mut r = Reader { buf: data };
    let version = r.take(1)?[0];
    if version != FORMAT_V1 {
        return Err(format!("unknown entry format version {version}"));
    }
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let database = r.string()?;
        let table = r.string()?;
        let len = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
        let ipc = r.take(len)?;
        for batch in decode_ipc(ipc)? {
            out.push(TableBatch {
                database: database.clone(),
                table: table.clone(),
                batch,
            });
        }
    }
    Ok(out)
}

/// The record batches of one IPC stream. arrow's decoder trusts the
/// stream's own metadata in places and panics on some malformed schemas
/// and buffer layouts (apache/arrow-rs#10437); an entry is plain bytes and
/// decoding it touches nothing else, so such a panic is caught and becomes
/// this entry's decode error. The incremental decoder is used because it
/// reserves nothing for a declared body length it has not seen.
fn decode_ipc(ipc: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    let run = || {
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(ipc);
        let mut batches = Vec::new();
        while !buffer.is_empty() {
            let before = buffer.len();
            match decoder.decode(&mut buffer).map_err(|e| e.to_string())? {
                Some(b) => batches.push(b),
                // Past the end-of-stream marker nothing more is read.
                None if buffer.len() == before => break,
                None => {}
            }
        }
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(batches)
    };
    std::panic::catch_unwind(run)
        .unwrap_or_else(|_| Err("the Arrow IPC stream is malformed (decoder panicked)".into()))
}
