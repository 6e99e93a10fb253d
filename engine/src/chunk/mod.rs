//! Immutable, compressed, columnar chunk files.
//!
//! A chunk holds the rows of one (database, table, time partition) of one
//! shard, sorted by series (the tag values, in the table's tag order) and then
//! by time, with duplicates on (series, time) already resolved by the table's
//! dedup policy. The format is described in ARCHITECTURE.md ("Chunk files").
//!
//! Layout: `MAGIC, version u32 LE, page blocks…, footer (JSON), footer_len u32
//! LE, crc32c(footer) u32 LE, MAGIC`. Rows are cut into pages along series
//! boundaries (a page holds whole series, at least `PAGE_ROWS` rows unless
//! the chunk ends); every non-tag column stores one block per page, each
//! checksummed, so a query decodes only the columns it projects and only the
//! pages whose series and time range it needs. Tags are not stored per row:
//! the footer lists the chunk's series (indexes into per-tag value lists) and
//! the rows of each series are contiguous.

mod block;
mod decode;
mod encode;
mod sort;

use serde::{Deserialize, Serialize};

use crate::catalog::ColumnKind;

pub use decode::ChunkReader;
pub use encode::encode_chunk;
pub use sort::{sort_dedup, DedupPolicy};

pub const MAGIC: &[u8; 4] = b"SLCK";
pub const FORMAT_VERSION: u32 = 1;
/// Target rows per page; pages end on a series boundary.
pub const PAGE_ROWS: usize = 8192;

/// A statistic value, typed like the column it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "t", content = "v")]
pub enum Stat {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Non-null values.
    pub count: u64,
    pub nulls: u64,
    pub min: Option<Stat>,
    pub max: Option<Stat>,
    /// Integers: exact sum if it fits the type, else absent. Floats: sum in
    /// row order. Absent for booleans and strings.
    pub sum: Option<Stat>,
    /// Value with the smallest time (ties: first in sort order), and its time.
    pub first: Option<(i64, Stat)>,
    /// Value with the largest time (ties: last in sort order), and its time.
    pub last: Option<(i64, Stat)>,
}

/// Where one page of one column lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlockRef {
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    pub kind: ColumnKind,
    pub stats: ColumnStats,
    /// One block per page for `time` and fields; empty for tags.
    pub blocks: Vec<BlockRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesMeta {
    /// Per tag column (in `Footer::tags` order): index into that tag's
    /// `values`, or `u32::MAX` when the series lacks the tag.
    pub tags: Vec<u32>,
    pub start_row: u64,
    pub rows: u32,
    pub min_time: i64,
    pub max_time: i64,
    /// The series' newest row, per column of `Footer::columns` (`None` for
    /// `time`, tags and nulls), so "latest point per series" needs no
    /// decoding. Left empty for chunks of more than `LAST_ROW_MAX_SERIES`
    /// series, where it would bloat the footer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last: Vec<Option<Stat>>,
}

/// Above this many series a chunk does not record last rows in its footer.
pub const LAST_ROW_MAX_SERIES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagMeta {
    pub name: String,
    /// Distinct values, sorted.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageMeta {
    pub first_series: u32,
    pub series: u32,
    pub start_row: u64,
    pub rows: u32,
    pub min_time: i64,
    pub max_time: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    pub version: u32,
    pub database: String,
    pub table: String,
    /// Partition start (ns, inclusive) and length (ns).
    pub partition: i64,
    pub partition_len: i64,
    pub rows: u64,
    pub min_time: i64,
    pub max_time: i64,
    /// Bytes the rows take as uncompressed Arrow arrays (for `system.chunks`).
    pub raw_bytes: u64,
    pub tags: Vec<TagMeta>,
    /// `time` first, then the fields in name order. Tags appear in `tags`.
    pub columns: Vec<ColumnMeta>,
    pub series: Vec<SeriesMeta>,
    pub pages: Vec<PageMeta>,
}
