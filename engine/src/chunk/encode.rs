//! Writing a chunk file's bytes.

use std::cmp::Ordering;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, PrimitiveArray, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
use pco::ChunkConfig;

use super::{
    block, BlockRef, ColumnMeta, ColumnStats, Footer, PageMeta, SeriesMeta, Stat, TagMeta,
    FORMAT_VERSION, MAGIC, PAGE_ROWS,
};
use crate::catalog::{tag_data_type, ColumnKind, FieldType, TIME_COLUMN};
use crate::error::{EngineError, Result};

/// pco 1.x accepts levels 0..=12; a higher level asks for its most effort.
const PCO_MAX_LEVEL: usize = 12;

fn err(msg: impl std::fmt::Display) -> EngineError {
    EngineError::Encode(format!("chunk: {msg}"))
}

/// One tag column, its values renumbered into the footer's sorted list.
struct TagColumn<'a> {
    name: String,
    values: Vec<String>,
    keys: &'a arrow::array::Int32Array,
    /// Dictionary key → index into `values` (u32::MAX for unused keys).
    by_key: Vec<u32>,
}

impl TagColumn<'_> {
    /// Index into `values`, or u32::MAX for a null.
    fn at(&self, row: usize) -> u32 {
        if self.keys.is_null(row) {
            return u32::MAX;
        }
        usize::try_from(self.keys.value(row))
            .ok()
            .and_then(|k| self.by_key.get(k))
            .copied()
            .unwrap_or(u32::MAX)
    }
}

/// Sort position of a tag index: nulls first.
fn tag_order(v: u32) -> u64 {
    if v == u32::MAX {
        0
    } else {
        u64::from(v) + 1
    }
}

fn tag_column<'a>(name: &str, col: &'a ArrayRef) -> Result<TagColumn<'a>> {
    let dict = col
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .ok_or_else(|| err(format!("tag `{name}` is not a dictionary with int32 keys")))?;
    let dict_values = dict
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| err(format!("tag `{name}` has non-utf8 dictionary values")))?;
    let keys = dict.keys();
    // Only values some row uses go into the footer: a sliced or filtered
    // batch still carries its whole dictionary.
    let mut used = vec![false; dict_values.len()];
    for (i, k) in keys.values().iter().enumerate() {
        if keys.is_valid(i) {
            if let Some(u) = usize::try_from(*k).ok().and_then(|k| used.get_mut(k)) {
                *u = true;
            }
        }
    }
    let mut values: Vec<String> = used
        .iter()
        .enumerate()
        .filter(|(k, u)| **u && dict_values.is_valid(*k))
        .map(|(k, _)| dict_values.value(k).to_string())
        .collect();
    values.sort_unstable();
    values.dedup();
    let by_key = (0..dict_values.len())
        .map(|k| {
            if dict_values.is_valid(k) {
                values
                    .binary_search_by(|v| v.as_str().cmp(dict_values.value(k)))
                    .map_or(u32::MAX, |i| i as u32)
            } else {
                u32::MAX
            }
        })
        .collect();
    Ok(TagColumn {
        name: name.to_string(),
        values,
        keys,
        by_key,
    })
}

fn field_type(dt: &DataType) -> Option<FieldType> {
    [
        FieldType::Float,
        FieldType::Integer,
        FieldType::UInteger,
        FieldType::Boolean,
        FieldType::String,
    ]
    .into_iter()
    .find(|t| &t.data_type() == dt)
}

enum Col<'a> {
    Time,
    Tag(TagColumn<'a>),
    Field(FieldType, &'a ArrayRef),
}

/// Encodes `batch` (already in chunk order, see `sort_dedup`) as a chunk
/// file. `level` is the pco compression level.
pub fn encode_chunk(
    database: &str,
    table: &str,
    partition: i64,
    partition_len: i64,
    batch: &RecordBatch,
    level: usize,
) -> Result<(Vec<u8>, Footer)> {
    let schema = batch.schema();
    let n = batch.num_rows();
    let time_arr = schema
        .index_of(TIME_COLUMN)
        .ok()
        .and_then(|i| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
        })
        .ok_or_else(|| err("batch has no nanosecond `time` column"))?;
    if time_arr.null_count() > 0 {
        return Err(err("`time` has nulls"));
    }
    let times: &[i64] = time_arr.values();

    let tag_type = tag_data_type();
    let mut cols: Vec<(String, Col<'_>)> = Vec::with_capacity(schema.fields().len());
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let c = if name == TIME_COLUMN {
            Col::Time
        } else if field.data_type() == &tag_type {
            Col::Tag(tag_column(name, col)?)
        } else {
            let t = field_type(field.data_type()).ok_or_else(|| {
                err(format!(
                    "column `{name}` has type {}, which chunks do not store",
                    field.data_type()
                ))
            })?;
            Col::Field(t, col)
        };
        cols.push((name.to_string(), c));
    }
    let tags: Vec<&TagColumn<'_>> = cols
        .iter()
        .filter_map(|(_, c)| match c {
            Col::Tag(t) => Some(t),
            _ => None,
        })
        .collect();

    let series = find_series(&tags, times)?;
    let pages = cut_pages(&series)?;

    let cfg = ChunkConfig::default().with_compression_level(level.min(PCO_MAX_LEVEL));
    let mut out: Vec<u8> = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut columns = Vec::with_capacity(cols.len());
    for (name, c) in &cols {
        let meta = match c {
            Col::Time => {
                let blocks = write_blocks(&mut out, &pages, |p, out| {
                    let slice = times
                        .get(page_range(p))
                        .ok_or_else(|| err("page outside the batch"))?;
                    block::put_pco(slice, &cfg, out).map_err(err)
                })?;
                // `time` has no kind of its own; readers find it by name, and
                // its statistics are integers like an Integer field's.
                ColumnMeta {
                    name: name.clone(),
                    kind: ColumnKind::Field(FieldType::Integer),
                    stats: time_stats(times),
                    blocks,
                }
            }
            Col::Tag(t) => ColumnMeta {
                name: name.clone(),
                kind: ColumnKind::Tag,
                stats: tag_stats(t, n),
                blocks: Vec::new(),
            },
            Col::Field(ft, arr) => {
                let blocks = write_blocks(&mut out, &pages, |p, out| {
                    let r = page_range(p);
                    let slice = arr.slice(r.start, r.len());
                    block::put_field(*ft, &slice, &cfg, out)
                        .map_err(|e| err(format!("column `{name}`: {e}")))
                })?;
                ColumnMeta {
                    name: name.clone(),
                    kind: ColumnKind::Field(*ft),
                    stats: field_stats(*ft, arr, times)?,
                    blocks,
                }
            }
        };
        columns.push(meta);
    }

    let mut series = series;
    if series.len() <= super::LAST_ROW_MAX_SERIES {
        for s in series.iter_mut() {
            let row = (s.start_row + u64::from(s.rows)).saturating_sub(1) as usize;
            s.last = cols
                .iter()
                .map(|(_, c)| match c {
                    Col::Field(ft, arr) => stat_at(*ft, arr, row),
                    _ => None,
                })
                .collect();
        }
    }
    let footer = Footer {
        version: FORMAT_VERSION,
        database: database.to_string(),
        table: table.to_string(),
        partition,
        partition_len,
        rows: n as u64,
        min_time: times.iter().copied().min().unwrap_or(0),
        max_time: times.iter().copied().max().unwrap_or(0),
        raw_bytes: batch
            .columns()
            .iter()
            .map(|c| c.get_array_memory_size() as u64)
            .sum(),
        tags: tags
            .iter()
            .map(|t| TagMeta {
                name: t.name.clone(),
                values: t.values.clone(),
            })
            .collect(),
        columns,
        series,
        pages,
    };
    let json = footer_json(&footer)?;
    let json_len =
        u32::try_from(json.len()).map_err(|_| err("footer exceeds 4 GiB".to_string()))?;
    out.extend_from_slice(&json);
    out.extend_from_slice(&json_len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(MAGIC);
    Ok((out, footer))
}

fn page_range(p: &PageMeta) -> std::ops::Range<usize> {
    let start = p.start_row as usize;
    start..start + p.rows as usize
}

/// Appends one block per page, each written by `put`.
fn write_blocks(
    out: &mut Vec<u8>,
    pages: &[PageMeta],
    mut put: impl FnMut(&PageMeta, &mut Vec<u8>) -> Result<()>,
) -> Result<Vec<BlockRef>> {
    let mut blocks = Vec::with_capacity(pages.len());
    for p in pages {
        let start = out.len();
        put(p, out)?;
        let bytes = out.get(start..).unwrap_or_default();
        blocks.push(BlockRef {
            offset: start as u64,
            len: u32::try_from(bytes.len()).map_err(|_| err("block exceeds 4 GiB"))?,
            crc: crc32c::crc32c(bytes),
        });
    }
    Ok(blocks)
}

/// Runs of equal tag tuples; checks the chunk order on the way (tuples
/// ascending, times strictly ascending within a series), since readers rely
/// on each series being one contiguous, duplicate-free run.
fn find_series(tags: &[&TagColumn<'_>], times: &[i64]) -> Result<Vec<SeriesMeta>> {
    let n = times.len();
    let mut starts = vec![false; n];
    if let Some(s) = starts.first_mut() {
        *s = true;
    }
    for t in tags {
        let mut prev = u32::MAX;
        for (row, s) in starts.iter_mut().enumerate() {
            let v = t.at(row);
            if row > 0 && v != prev {
                *s = true;
            }
            prev = v;
        }
    }
    let mut series: Vec<SeriesMeta> = Vec::new();
    let mut prev_tags: Option<Vec<u32>> = None;
    let mut row = 0;
    while row < n {
        let start = row;
        row += 1;
        while row < n && !starts[row] {
            if times[row] <= times[row - 1] {
                return Err(err(format!(
                    "rows are not sorted and deduplicated: row {row} has time {} after {}",
                    times[row],
                    times[row - 1]
                )));
            }
            row += 1;
        }
        let tuple: Vec<u32> = tags.iter().map(|t| t.at(start)).collect();
        if let Some(prev) = &prev_tags {
            let ascending = prev
                .iter()
                .map(|v| tag_order(*v))
                .cmp(tuple.iter().map(|v| tag_order(*v)))
                == Ordering::Less;
            if !ascending {
                return Err(err(format!(
                    "rows are not sorted by series: series starting at row {start} repeats or precedes the one before"
                )));
            }
        }
        series.push(SeriesMeta {
            tags: tuple.clone(),
            start_row: start as u64,
            rows: u32::try_from(row - start)
                .map_err(|_| err(format!("series at row {start} has over 2^32 rows")))?,
            min_time: times[start],
            max_time: times[row - 1],
            last: Vec::new(),
        });
        prev_tags = Some(tuple);
    }
    Ok(series)
}

/// Groups consecutive series into pages of at least `PAGE_ROWS` rows (the
/// last may hold fewer); a series is never split.
fn cut_pages(series: &[SeriesMeta]) -> Result<Vec<PageMeta>> {
    let mut pages = Vec::new();
    let mut first = 0usize;
    while first < series.len() {
        let mut end = first;
        let mut rows: u64 = 0;
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        while end < series.len() && rows < PAGE_ROWS as u64 {
            let s = &series[end];
            rows += u64::from(s.rows);
            min_time = min_time.min(s.min_time);
            max_time = max_time.max(s.max_time);
            end += 1;
        }
        pages.push(PageMeta {
            first_series: first as u32,
            series: (end - first) as u32,
            start_row: series[first].start_row,
            rows: u32::try_from(rows).map_err(|_| err("page over 2^32 rows"))?,
            min_time,
            max_time,
        });
        first = end;
    }
    Ok(pages)
}

fn downcast<'a, A: 'static>(arr: &'a dyn Array, what: &str) -> Result<&'a A> {
    arr.as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| err(format!("array is not {what}")))
}

/// Running statistics of one column; values arrive in chunk order with the
/// time of their row.
struct Acc<V> {
    count: u64,
    min: Option<V>,
    max: Option<V>,
    first: Option<(i64, V)>,
    last: Option<(i64, V)>,
}

impl<V: Clone> Acc<V> {
    fn new() -> Self {
        Acc {
            count: 0,
            min: None,
            max: None,
            first: None,
            last: None,
        }
    }

    fn push(&mut self, t: i64, v: V, cmp: impl Fn(&V, &V) -> Ordering) {
        self.count += 1;
        if self
            .min
            .as_ref()
            .is_none_or(|m| cmp(&v, m) == Ordering::Less)
        {
            self.min = Some(v.clone());
        }
        if self
            .max
            .as_ref()
            .is_none_or(|m| cmp(&v, m) == Ordering::Greater)
        {
            self.max = Some(v.clone());
        }
        if self.first.as_ref().is_none_or(|(ft, _)| t < *ft) {
            self.first = Some((t, v.clone()));
        }
        if self.last.as_ref().is_none_or(|(lt, _)| t >= *lt) {
            self.last = Some((t, v));
        }
    }

    fn finish(self, len: usize, sum: Option<Stat>, stat: impl Fn(V) -> Stat) -> ColumnStats {
        ColumnStats {
            count: self.count,
            nulls: len as u64 - self.count,
            min: self.min.map(&stat),
            max: self.max.map(&stat),
            sum: if self.count == 0 { None } else { sum },
            first: self.first.map(|(t, v)| (t, stat(v))),
            last: self.last.map(|(t, v)| (t, stat(v))),
        }
    }
}

fn time_stats(times: &[i64]) -> ColumnStats {
    ColumnStats {
        count: times.len() as u64,
        nulls: 0,
        min: times.iter().min().map(|v| Stat::I64(*v)),
        max: times.iter().max().map(|v| Stat::I64(*v)),
        ..ColumnStats::default()
    }
}

fn tag_stats(t: &TagColumn<'_>, rows: usize) -> ColumnStats {
    let nulls = (0..rows).filter(|&r| t.at(r) == u32::MAX).count() as u64;
    ColumnStats {
        count: rows as u64 - nulls,
        nulls,
        min: t.values.first().map(|v| Stat::Str(v.clone())),
        max: t.values.last().map(|v| Stat::Str(v.clone())),
        ..ColumnStats::default()
    }
}

fn field_stats(ft: FieldType, arr: &ArrayRef, times: &[i64]) -> Result<ColumnStats> {
    let len = arr.len();
    let rows = times.iter().copied();
    Ok(match ft {
        FieldType::Float => {
            let a = downcast::<PrimitiveArray<Float64Type>>(arr, "float64")?;
            let mut acc = Acc::new();
            let mut sum = 0.0f64;
            for (t, v) in rows.zip(a.iter()) {
                if let Some(v) = v {
                    sum += v;
                    acc.push(t, v, |a: &f64, b: &f64| a.total_cmp(b));
                }
            }
            acc.finish(len, Some(Stat::F64(sum)), Stat::F64)
        }
        FieldType::Integer => {
            let a = downcast::<PrimitiveArray<Int64Type>>(arr, "int64")?;
            let mut acc = Acc::new();
            let mut sum = Some(0i64);
            for (t, v) in rows.zip(a.iter()) {
                if let Some(v) = v {
                    sum = sum.and_then(|s| s.checked_add(v));
                    acc.push(t, v, i64::cmp);
                }
            }
            acc.finish(len, sum.map(Stat::I64), Stat::I64)
        }
        FieldType::UInteger => {
            let a = downcast::<PrimitiveArray<UInt64Type>>(arr, "uint64")?;
            let mut acc = Acc::new();
            let mut sum = Some(0u64);
            for (t, v) in rows.zip(a.iter()) {
                if let Some(v) = v {
                    sum = sum.and_then(|s| s.checked_add(v));
                    acc.push(t, v, u64::cmp);
                }
            }
            acc.finish(len, sum.map(Stat::U64), Stat::U64)
        }
        FieldType::Boolean => {
            let a = downcast::<BooleanArray>(arr, "boolean")?;
            let mut acc = Acc::new();
            for (t, v) in rows.zip(a.iter()) {
                if let Some(v) = v {
                    acc.push(t, v, bool::cmp);
                }
            }
            acc.finish(len, None, Stat::Bool)
        }
        FieldType::String => {
            let a = downcast::<StringArray>(arr, "utf8")?;
            let mut acc = Acc::new();
            for (t, v) in rows.zip(a.iter()) {
                if let Some(v) = v {
                    acc.push(t, v, |a: &&str, b: &&str| a.cmp(b));
                }
            }
            acc.finish(len, None, |v| Stat::Str(v.to_string()))
        }
    })
}

/// In a float column's statistics every value is written as a string:
/// serde_json writes NaN and infinities as `null` (which then fails to
/// parse) and, without its `float_roundtrip` feature, parses many decimals
/// one ulp off. The text is Rust's shortest round-trip form (`{:?}`: "0.1",
/// "-0.0", "1e300", "inf", "NaN"), or "NaN:" and the 16 hex digits of the
/// bits for a NaN other than the canonical one. The reader turns it back.
fn float_text(v: f64) -> String {
    if v.is_nan() && v.to_bits() != f64::NAN.to_bits() {
        format!("NaN:{:016x}", v.to_bits())
    } else {
        format!("{v:?}")
    }
}

/// One value of a field column as a statistic (`None` when null).
fn stat_at(ft: FieldType, arr: &ArrayRef, row: usize) -> Option<Stat> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    if row >= arr.len() || arr.is_null(row) {
        return None;
    }
    Some(match ft {
        FieldType::Float => Stat::F64(arr.as_primitive_opt::<Float64Type>()?.value(row)),
        FieldType::Integer => Stat::I64(arr.as_primitive_opt::<Int64Type>()?.value(row)),
        FieldType::UInteger => Stat::U64(arr.as_primitive_opt::<UInt64Type>()?.value(row)),
        FieldType::Boolean => Stat::Bool(arr.as_boolean_opt()?.value(row)),
        FieldType::String => Stat::Str(arr.as_string_opt::<i32>()?.value(row).to_string()),
    })
}

fn footer_json(footer: &Footer) -> Result<Vec<u8>> {
    let is_float = |m: &ColumnMeta| m.kind == ColumnKind::Field(FieldType::Float);
    let json = if footer.columns.iter().any(is_float) {
        let mut f = footer.clone();
        let float_cols: Vec<usize> = (0..f.columns.len())
            .filter(|&i| is_float(&f.columns[i]))
            .collect();
        for s in f.series.iter_mut() {
            for &i in &float_cols {
                if let Some(Some(v @ Stat::F64(_))) = s.last.get_mut(i) {
                    if let Stat::F64(x) = v {
                        *v = Stat::Str(float_text(*x));
                    }
                }
            }
        }
        for m in f.columns.iter_mut().filter(|m| is_float(m)) {
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
                if let Stat::F64(x) = v {
                    *v = Stat::Str(float_text(*x));
                }
            }
        }
        serde_json::to_vec(&f)
    } else {
        serde_json::to_vec(footer)
    };
    json.map_err(|e| err(format!("footer: {e}")))
}
