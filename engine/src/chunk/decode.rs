//! Reading chunk files: footer validation, projected and page-pruned decoding.
//!
//! Everything read from the file is untrusted: the footer is checked as a
//! whole at open (checksum, then every offset, count and index against the
//! file and against each other), each block's checksum before it is decoded,
//! and every length inside a block against the bytes that remain in it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, RecordBatchOptions,
    StringArray, TimestampNanosecondArray,
};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{Field, SchemaRef};

use super::{block, ColumnMeta, Footer, PageMeta, Stat, FORMAT_VERSION, MAGIC};
use crate::catalog::{ColumnKind, FieldType, TIME_COLUMN};
use crate::error::{EngineError, Result};

/// MAGIC and version.
const HEADER_LEN: u64 = 8;
/// Footer length, footer checksum, MAGIC.
const TAIL_LEN: u64 = 12;

pub struct ChunkReader {
    path: PathBuf,
    file: std::fs::File,
    footer: Footer,
    file_len: u64,
}

fn le_u32(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

impl ChunkReader {
    /// Opens `path`, checks magic, version and the footer checksum.
    pub fn open(path: &Path) -> Result<ChunkReader> {
        let corrupt = |reason: String| EngineError::ChunkCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        if file_len < HEADER_LEN + TAIL_LEN {
            return Err(corrupt(format!(
                "file is {file_len} bytes, shorter than header and tail ({} bytes)",
                HEADER_LEN + TAIL_LEN
            )));
        }
        let mut head = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| EngineError::io(path, e))?;
        let [m0, m1, m2, m3, v0, v1, v2, v3] = head;
        if &[m0, m1, m2, m3] != MAGIC {
            return Err(corrupt(format!(
                "bad magic {:?} at offset 0 (not a chunk file)",
                [m0, m1, m2, m3]
            )));
        }
        let version = le_u32([v0, v1, v2, v3]);
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version} at offset 4; this build reads version {FORMAT_VERSION}"
            )));
        }
        let tail_at = file_len - TAIL_LEN;
        let mut tail = [0u8; TAIL_LEN as usize];
        file.read_exact_at(&mut tail, tail_at)
            .map_err(|e| EngineError::io(path, e))?;
        let [l0, l1, l2, l3, c0, c1, c2, c3, m0, m1, m2, m3] = tail;
        if &[m0, m1, m2, m3] != MAGIC {
            return Err(corrupt(format!(
                "bad trailing magic {:?} at offset {} (file truncated or not fully written?)",
                [m0, m1, m2, m3],
                tail_at + 8
            )));
        }
        let footer_len = u64::from(le_u32([l0, l1, l2, l3]));
        let stored_crc = le_u32([c0, c1, c2, c3]);
        if footer_len > file_len - HEADER_LEN - TAIL_LEN {
            return Err(corrupt(format!(
                "footer length {footer_len} at offset {tail_at} exceeds the {} bytes between header and tail",
                file_len - HEADER_LEN - TAIL_LEN
            )));
        }
        let footer_at = tail_at - footer_len;
        let mut raw = vec![0u8; footer_len as usize];
        file.read_exact_at(&mut raw, footer_at)
            .map_err(|e| EngineError::io(path, e))?;
        let crc = crc32c::crc32c(&raw);
        if crc != stored_crc {
            return Err(corrupt(format!(
                "footer ({footer_len} bytes at offset {footer_at}) fails its checksum (stored {stored_crc:08x}, computed {crc:08x})"
            )));
        }
        let mut footer: Footer = serde_json::from_slice(&raw).map_err(|e| {
            corrupt(format!(
                "footer at offset {footer_at} is not valid JSON for this version: {e}"
            ))
        })?;
        restore_float_stats(&mut footer).map_err(&corrupt)?;
        validate(&footer, footer_at).map_err(|e| corrupt(format!("footer: {e}")))?;
        Ok(ChunkReader {
            path: path.to_path_buf(),
            file,
            footer,
            file_len,
        })
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Decodes the pages for which `keep_page` is true, laid out in `schema`
    /// (columns the chunk lacks come out null). One batch per page.
    pub fn read(
        &self,
        schema: &SchemaRef,
        keep_page: &dyn Fn(usize, &PageMeta) -> bool,
    ) -> Result<Vec<RecordBatch>> {
        let plan: Vec<Source> = schema
            .fields()
            .iter()
            .map(|f| self.source(f.name()))
            .collect::<Result<_>>()?;
        let mut out = Vec::new();
        for (p, page) in self.footer.pages.iter().enumerate() {
            if !keep_page(p, page) {
                continue;
            }
            let rows = page.rows as usize;
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(plan.len());
            for (field, src) in schema.fields().iter().zip(&plan) {
                let arr = match src {
                    Source::Missing => new_null_array(field.data_type(), rows),
                    Source::Time(m) => self.decode_time(m, p, rows)?,
                    Source::Tag(t, values) => self.tag_array(*t, values, page)?,
                    Source::Field(m, ft) => self.decode_field(m, *ft, p, rows)?,
                };
                cols.push(self.conform(arr, field)?);
            }
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )
            .map_err(|e| self.corrupt(format!("page {p}: {e}")))?;
            out.push(batch);
        }
        Ok(out)
    }

    fn corrupt(&self, reason: String) -> EngineError {
        EngineError::ChunkCorrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn source(&self, name: &str) -> Result<Source<'_>> {
        let f = &self.footer;
        let tag = |name: &str| -> Option<Source<'_>> {
            let t = f.tags.iter().position(|t| t.name == name)?;
            let values: ArrayRef = Arc::new(StringArray::from_iter_values(
                f.tags
                    .get(t)
                    .map(|t| t.values.as_slice())
                    .unwrap_or_default(),
            ));
            Some(Source::Tag(t, values))
        };
        let Some(meta) = f.columns.iter().find(|m| m.name == name) else {
            return Ok(tag(name).unwrap_or(Source::Missing));
        };
        Ok(match meta.kind {
            _ if name == TIME_COLUMN => Source::Time(meta),
            ColumnKind::Tag => tag(name).ok_or_else(|| {
                self.corrupt(format!("footer: tag column `{name}` has no value list"))
            })?,
            ColumnKind::Field(ft) => Source::Field(meta, ft),
        })
    }

    /// Casts a decoded column to the type `field` asks for.
    fn conform(&self, arr: ArrayRef, field: &Field) -> Result<ArrayRef> {
        if arr.data_type() == field.data_type() {
            return Ok(arr);
        }
        arrow::compute::cast(&arr, field.data_type()).map_err(|e| {
            self.corrupt(format!(
                "column `{}` is stored as {}, cannot be read as {}: {e}",
                field.name(),
                arr.data_type(),
                field.data_type()
            ))
        })
    }

    /// Reads block `page` of `meta` and checks its checksum.
    fn block(&self, meta: &ColumnMeta, page: usize) -> Result<Vec<u8>> {
        let b = meta.blocks.get(page).ok_or_else(|| {
            self.corrupt(format!(
                "column `{}` has no block for page {page}",
                meta.name
            ))
        })?;
        // `validate` put every block inside the file, so the length is bounded.
        let mut buf = vec![0u8; b.len as usize];
        self.file
            .read_exact_at(&mut buf, b.offset)
            .map_err(|e| EngineError::io(&self.path, e))?;
        let crc = crc32c::crc32c(&buf);
        if crc != b.crc {
            return Err(self.corrupt(format!(
                "column `{}` page {page}: block at offset {} ({} bytes) fails its checksum (stored {:08x}, computed {crc:08x})",
                meta.name, b.offset, b.len, b.crc
            )));
        }
        Ok(buf)
    }

    fn block_error(&self, meta: &ColumnMeta, page: usize, e: String) -> EngineError {
        let offset = meta.blocks.get(page).map_or(0, |b| b.offset);
        self.corrupt(format!(
            "column `{}` page {page}: block at offset {offset}: {e}",
            meta.name
        ))
    }

    fn decode_time(&self, meta: &ColumnMeta, page: usize, rows: usize) -> Result<ArrayRef> {
        let buf = self.block(meta, page)?;
        let values =
            block::decode_pco::<i64>(&buf, rows).map_err(|e| self.block_error(meta, page, e))?;
        Ok(Arc::new(
            TimestampNanosecondArray::new(ScalarBuffer::from(values), None).with_timezone("UTC"),
        ))
    }

    fn decode_field(
        &self,
        meta: &ColumnMeta,
        ft: FieldType,
        page: usize,
        rows: usize,
    ) -> Result<ArrayRef> {
        let buf = self.block(meta, page)?;
        block::decode_field(&buf, ft, rows).map_err(|e| self.block_error(meta, page, e))
    }

    /// Tags are not stored per row: the keys repeat each series' value
    /// index over its rows.
    fn tag_array(&self, tag: usize, values: &ArrayRef, page: &PageMeta) -> Result<ArrayRef> {
        let f = &self.footer;
        let rows = page.rows as usize;
        let first = page.first_series as usize;
        let series = f
            .series
            .get(first..first.saturating_add(page.series as usize))
            .unwrap_or_default();
        let mut keys: Vec<i32> = Vec::with_capacity(rows);
        let mut valid: Vec<bool> = Vec::with_capacity(rows);
        for s in series {
            let v = s.tags.get(tag).copied().unwrap_or(u32::MAX);
            let key = i32::try_from(v).ok();
            let n = s.rows as usize;
            keys.extend(std::iter::repeat_n(key.unwrap_or(0), n));
            valid.extend(std::iter::repeat_n(key.is_some(), n));
        }
        let nulls = valid.contains(&false).then(|| NullBuffer::from(valid));
        let keys = Int32Array::try_new(ScalarBuffer::from(keys), nulls)
            .map_err(|e| self.corrupt(format!("tag `{}`: {e}", tag_name(f, tag))))?;
        let dict = DictionaryArray::try_new(keys, values.clone())
            .map_err(|e| self.corrupt(format!("tag `{}`: {e}", tag_name(f, tag))))?;
        Ok(Arc::new(dict))
    }
}

fn tag_name(f: &Footer, tag: usize) -> &str {
    f.tags.get(tag).map_or("?", |t| t.name.as_str())
}

/// Where a projected column comes from.
enum Source<'a> {
    Missing,
    Time(&'a ColumnMeta),
    /// Index into `Footer::tags` and that tag's values as an array.
    Tag(usize, ArrayRef),
    Field(&'a ColumnMeta, FieldType),
}

/// Turns the text form of float statistics (see `encode::float_text`) back
/// into numbers.
fn restore_float_stats(footer: &mut Footer) -> std::result::Result<(), String> {
    let float_cols: Vec<usize> = (0..footer.columns.len())
        .filter(|&i| footer.columns[i].kind == ColumnKind::Field(FieldType::Float))
        .collect();
    for s in footer.series.iter_mut() {
        if !s.last.is_empty() && s.last.len() != footer.columns.len() {
            return Err("footer: a series' last row does not match the columns".into());
        }
        for &i in &float_cols {
            if let Some(Some(v)) = s.last.get_mut(i) {
                if let Stat::Str(text) = v {
                    *v = Stat::F64(parse_float_text(text).ok_or_else(|| {
                        format!("footer: last value {text:?} of a float column is not a number")
                    })?);
                }
            }
        }
    }
    for m in footer
        .columns
        .iter_mut()
        .filter(|m| m.kind == ColumnKind::Field(FieldType::Float))
    {
        let s = &mut m.stats;
        let stats = [&mut s.min, &mut s.max, &mut s.sum]
            .into_iter()
            .flatten()
            .chain(
                [&mut s.first, &mut s.last]
                    .into_iter()
                    .flatten()
                    .map(|(_, v)| v),
            );
        for v in stats {
            if let Stat::Str(text) = v {
                let x = parse_float_text(text).ok_or_else(|| {
                    format!(
                        "footer: float column `{}` has statistic {text:?}, not a number",
                        m.name
                    )
                })?;
                *v = Stat::F64(x);
            }
        }
    }
    Ok(())
}

fn parse_float_text(text: &str) -> Option<f64> {
    match text.strip_prefix("NaN:") {
        Some(hex) => u64::from_str_radix(hex, 16)
            .ok()
            .map(f64::from_bits)
            .filter(|x| x.is_nan()),
        None => text.parse::<f64>().ok(),
    }
}

/// Checks that the footer describes a file `read` can decode without going
/// out of bounds: contiguous series and pages covering all rows, tag indexes
/// inside their value lists, one block per page inside the data area
/// (between header and footer) for `time` and every field.
fn validate(f: &Footer, data_end: u64) -> std::result::Result<(), String> {
    if f.version != FORMAT_VERSION {
        return Err(format!(
            "version {} in a version {FORMAT_VERSION} file",
            f.version
        ));
    }
    for t in &f.tags {
        if i32::try_from(t.values.len()).is_err() {
            return Err(format!("tag `{}` has too many values", t.name));
        }
    }
    let mut row: u64 = 0;
    for (i, s) in f.series.iter().enumerate() {
        if s.tags.len() != f.tags.len() {
            return Err(format!(
                "series {i} has {} tag indexes for {} tags",
                s.tags.len(),
                f.tags.len()
            ));
        }
        for (v, t) in s.tags.iter().zip(&f.tags) {
            if *v != u32::MAX && *v as usize >= t.values.len() {
                return Err(format!(
                    "series {i}: index {v} of tag `{}` is beyond its {} values",
                    t.name,
                    t.values.len()
                ));
            }
        }
        if s.start_row != row || s.rows == 0 {
            return Err(format!(
                "series {i} covers rows {}+{}, expected a non-empty run from row {row}",
                s.start_row, s.rows
            ));
        }
        row += u64::from(s.rows);
    }
    if row != f.rows {
        return Err(format!("series cover {row} rows, the chunk has {}", f.rows));
    }
    let mut next = 0usize;
    for (p, page) in f.pages.iter().enumerate() {
        let first = page.first_series as usize;
        let end = first.saturating_add(page.series as usize);
        let series = f
            .series
            .get(first..end)
            .filter(|s| first == next && !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "page {p} holds series {first}+{}, expected a non-empty run from series {next} of {}",
                    page.series,
                    f.series.len()
                )
            })?;
        let rows: u64 = series.iter().map(|s| u64::from(s.rows)).sum();
        if series.first().map(|s| s.start_row) != Some(page.start_row)
            || rows != u64::from(page.rows)
        {
            return Err(format!(
                "page {p} claims rows {}+{}, its series cover {rows} rows",
                page.start_row, page.rows
            ));
        }
        next = end;
    }
    if next != f.series.len() {
        return Err(format!("pages cover {next} of {} series", f.series.len()));
    }
    if !f.columns.iter().any(|m| m.name == TIME_COLUMN) {
        return Err("no `time` column".into());
    }
    for m in &f.columns {
        if m.kind == ColumnKind::Tag && m.name != TIME_COLUMN {
            if !m.blocks.is_empty() || !f.tags.iter().any(|t| t.name == m.name) {
                return Err(format!(
                    "tag column `{}` has blocks or no value list",
                    m.name
                ));
            }
            continue;
        }
        if m.blocks.len() != f.pages.len() {
            return Err(format!(
                "column `{}` has {} blocks for {} pages",
                m.name,
                m.blocks.len(),
                f.pages.len()
            ));
        }
        for (p, b) in m.blocks.iter().enumerate() {
            let inside = b.offset >= HEADER_LEN
                && b.offset
                    .checked_add(u64::from(b.len))
                    .is_some_and(|end| end <= data_end);
            if !inside {
                return Err(format!(
                    "column `{}` page {p}: block at offset {} ({} bytes) lies outside the data area {HEADER_LEN}..{data_end}",
                    m.name, b.offset, b.len
                ));
            }
        }
    }
    Ok(())
}
