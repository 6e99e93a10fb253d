//! Line protocol → per-shard Arrow write batches.
//!
//! Every line is checked on its own: a malformed line, a type conflict or a
//! bad name rejects that line (with its line number and the reason) and never
//! the lines around it. Column types are settled in the catalog before any
//! batch is built, so what reaches a shard is always consistent with it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, StringDictionaryBuilder, TimestampNanosecondArray, UInt64Builder,
};
use arrow::datatypes::{Field, Int32Type, Schema};
use influxdb_line_protocol::{parse_lines, split_lines, FieldValue};
use sluice_engine::catalog::{tag_data_type, time_data_type, validate_name, TIME_COLUMN};
use sluice_engine::{Catalog, ColumnKind, ColumnRequest, FieldType, TableBatch, WriteBatch};

use crate::error::IngestError;

/// At most this many rejected lines are described individually.
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self, IngestError> {
        Ok(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => return Err(IngestError::Precision(other.to_string())),
        })
    }

    fn multiplier(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub database: String,
    pub precision: Precision,
    /// Timestamp (ns) for lines that carry none.
    pub default_time: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// A request body turned into shard writes, plus what was refused.
#[derive(Debug, Default)]
pub struct Prepared {
    pub writes: Vec<(usize, WriteBatch)>,
    pub accepted: usize,
    pub rejected: Vec<LineError>,
    pub rejected_total: usize,
}

impl Prepared {
    fn reject(&mut self, line: usize, reason: String) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_REPORTED_ERRORS {
            self.rejected.push(LineError { line, reason });
        }
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Routes a series to a shard. Stable across restarts and releases: the
/// placement of data on disk depends on it.
pub fn shard_for(db: &str, table: &str, sorted_tags: &[(&str, &str)], shards: usize) -> usize {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(db.as_bytes());
    h.update(&[0xff]);
    h.update(table.as_bytes());
    for (k, v) in sorted_tags {
        h.update(&[0xfe]);
        h.update(k.as_bytes());
        h.update(&[0xfd]);
        h.update(v.as_bytes());
    }
    (h.digest() % shards.max(1) as u64) as usize
}

enum Value<'a> {
    Tag(&'a str),
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(&'a str),
}

enum ColBuilder {
    Tag(StringDictionaryBuilder<Int32Type>),
    F64(Float64Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl ColBuilder {
    fn new(kind: ColumnKind, nulls: usize) -> Self {
        let mut b = match kind {
            ColumnKind::Tag => ColBuilder::Tag(StringDictionaryBuilder::new()),
            ColumnKind::Field(FieldType::Float) => ColBuilder::F64(Float64Builder::new()),
            ColumnKind::Field(FieldType::Integer) => ColBuilder::I64(Int64Builder::new()),
            ColumnKind::Field(FieldType::UInteger) => ColBuilder::U64(UInt64Builder::new()),
            ColumnKind::Field(FieldType::Boolean) => ColBuilder::Bool(BooleanBuilder::new()),
            ColumnKind::Field(FieldType::String) => ColBuilder::Str(StringBuilder::new()),
        };
        for _ in 0..nulls {
            b.null();
        }
        b
    }

    fn len(&self) -> usize {
        match self {
            ColBuilder::Tag(b) => b.len(),
            ColBuilder::F64(b) => b.len(),
            ColBuilder::I64(b) => b.len(),
            ColBuilder::U64(b) => b.len(),
            ColBuilder::Bool(b) => b.len(),
            ColBuilder::Str(b) => b.len(),
        }
    }

    fn null(&mut self) {
        match self {
            ColBuilder::Tag(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::U64(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Str(b) => b.append_null(),
        }
    }

    /// Appends `v`; the catalog check guarantees the kinds match, a mismatch
    /// (which would be a bug) is stored as null rather than panicking.
    fn push(&mut self, v: &Value<'_>) {
        match (self, v) {
            (ColBuilder::Tag(b), Value::Tag(s)) => {
                b.append_value(s);
            }
            (ColBuilder::F64(b), Value::F64(x)) => b.append_value(*x),
            (ColBuilder::I64(b), Value::I64(x)) => b.append_value(*x),
            (ColBuilder::U64(b), Value::U64(x)) => b.append_value(*x),
            (ColBuilder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (ColBuilder::Str(b), Value::Str(s)) => b.append_value(s),
            (b, _) => b.null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Tag(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::U64(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Str(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Default)]
struct TableBuilder {
    times: Vec<i64>,
    columns: HashMap<String, (ColumnKind, ColBuilder)>,
}

impl TableBuilder {
    fn push_row(&mut self, time: i64, values: &[(&str, ColumnKind, Value<'_>)]) {
        let row = self.times.len();
        self.times.push(time);
        for (name, kind, v) in values {
            let entry = match self.columns.get_mut(*name) {
                Some(e) => e,
                None => self
                    .columns
                    .entry(name.to_string())
                    .or_insert_with(|| (*kind, ColBuilder::new(*kind, row))),
            };
            entry.1.push(v);
        }
        if self.columns.len() != values.len() {
            for (_, b) in self.columns.values_mut() {
                if b.len() <= row {
                    b.null();
                }
            }
        }
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut names: Vec<String> = self.columns.keys().cloned().collect();
        names.sort();
        let mut fields = vec![Field::new(TIME_COLUMN, time_data_type(), false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from(self.times).with_timezone("UTC"),
        )];
        for n in names {
            if let Some((kind, mut b)) = self.columns.remove(&n) {
                let dt = match kind {
                    ColumnKind::Tag => tag_data_type(),
                    ColumnKind::Field(t) => t.data_type(),
                };
                fields.push(Field::new(n, dt, true));
                arrays.push(b.finish());
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
    }
}

/// Physical line numbers (1-based) and texts of the lines of `body`. Quoted
/// string fields may span newlines, so a logical line can cover several.
fn lines(body: &[u8]) -> Vec<(usize, Result<&str, ()>)> {
    let mut out = Vec::new();
    match std::str::from_utf8(body) {
        Ok(text) => {
            let mut lineno = 1;
            for l in split_lines(text) {
                out.push((lineno, Ok(l)));
                lineno += 1 + l.bytes().filter(|b| *b == b'\n').count();
            }
        }
        Err(_) => {
            // Only the lines that are not UTF-8 are lost.
            for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
                out.push((i + 1, std::str::from_utf8(raw).map_err(|_| ())));
            }
        }
    }
    out
}

/// Parses `body` and builds one write batch per shard it touches.
pub fn prepare(
    catalog: &Catalog,
    shards: usize,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Prepared, IngestError> {
    validate_name("database", &opts.database).map_err(|e| IngestError::Database(e.to_string()))?;
    let db = opts.database.as_str();
    let mut out = Prepared::default();
    let mut builders: Vec<HashMap<String, TableBuilder>> =
        (0..shards.max(1)).map(|_| HashMap::new()).collect();
    let mut snap = catalog.snapshot();
    let mult = opts.precision.multiplier();
    let all_lines = lines(body);
    for (lineno, text) in &all_lines {
        let lineno = *lineno;
        let Ok(text) = text else {
            out.reject(lineno, "line is not valid UTF-8".into());
            continue;
        };
        // CRLF line ends (Windows agents) and trailing blanks are accepted, as
        // InfluxDB accepts them; the parser itself would reject them.
        let text = text.trim_end_matches(['\r', ' ', '\t']);
        let parsed = match parse_lines(text).next() {
            None => continue,
            Some(Err(e)) => {
                out.reject(lineno, e.to_string());
                continue;
            }
            Some(Ok(p)) => p,
        };
        let table = parsed.series.measurement.as_str();
        let mut values: Vec<(&str, ColumnKind, Value<'_>)> = Vec::with_capacity(24);
        let mut tags: Vec<(&str, &str)> = Vec::with_capacity(16);
        if let Some(ts) = &parsed.series.tag_set {
            for (k, v) in ts {
                tags.push((k.as_str(), v.as_str()));
            }
        }
        tags.sort_unstable();
        let mut bad: Option<String> = None;
        for (i, (k, v)) in tags.iter().enumerate() {
            if *k == TIME_COLUMN {
                bad = Some("tag key `time` is reserved for the timestamp".into());
            } else if i > 0 && tags[i - 1].0 == *k {
                // Sorted, so a repeated key sits next to its twin.
                bad = Some(format!("duplicate tag key `{k}`"));
            }
            values.push((k, ColumnKind::Tag, Value::Tag(v)));
        }
        for (k, v) in &parsed.field_set {
            let k = k.as_str();
            if k == TIME_COLUMN {
                bad = Some("field key `time` is reserved for the timestamp".into());
                break;
            }
            let (kind, val) = match v {
                FieldValue::F64(x) if !x.is_finite() => {
                    bad = Some(format!("field `{k}`: float value out of range"));
                    break;
                }
                FieldValue::F64(x) => (FieldType::Float, Value::F64(*x)),
                FieldValue::I64(x) => (FieldType::Integer, Value::I64(*x)),
                FieldValue::U64(x) => (FieldType::UInteger, Value::U64(*x)),
                FieldValue::Boolean(x) => (FieldType::Boolean, Value::Bool(*x)),
                FieldValue::String(s) => (FieldType::String, Value::Str(s.as_str())),
            };
            if tags.iter().any(|(t, _)| *t == k) {
                bad = Some(format!("`{k}` is both a tag and a field"));
                break;
            }
            // A repeated field key keeps its last value.
            if let Some(pos) = values.iter().position(|(n, _, _)| *n == k) {
                values.remove(pos);
            }
            values.push((k, ColumnKind::Field(kind), val));
        }
        if let Some(reason) = bad {
            out.reject(lineno, reason);
            continue;
        }
        let time = match parsed.timestamp {
            // As InfluxDB does, arrival time is cut to the request's precision.
            None => opts.default_time - opts.default_time.rem_euclid(mult),
            Some(t) => match t.checked_mul(mult) {
                Some(t) => t,
                None => {
                    out.reject(lineno, format!("timestamp {t} overflows at this precision"));
                    continue;
                }
            },
        };
        let known = snap
            .table(db, table)
            .is_some_and(|s| values.iter().all(|(n, kind, _)| s.column(n) == Some(*kind)));
        if !known {
            let reqs: Vec<ColumnRequest<'_>> = values
                .iter()
                .map(|(n, kind, _)| ColumnRequest {
                    name: n,
                    kind: *kind,
                })
                .collect();
            match catalog.ensure_columns(db, table, &reqs) {
                Ok(()) => snap = catalog.snapshot(),
                Err(sluice_engine::EngineError::Io { path, source }) => {
                    return Err(sluice_engine::EngineError::Io { path, source }.into())
                }
                Err(e) => {
                    out.reject(lineno, e.to_string());
                    continue;
                }
            }
        }
        let shard = shard_for(db, table, &tags, shards);
        let per_table = &mut builders[shard];
        let tb = match per_table.get_mut(table) {
            Some(b) => b,
            None => per_table.entry(table.to_string()).or_default(),
        };
        tb.push_row(time, &values);
        out.accepted += 1;
    }
    for (shard, per_table) in builders.into_iter().enumerate() {
        if per_table.is_empty() {
            continue;
        }
        let mut tables = Vec::with_capacity(per_table.len());
        for (table, tb) in per_table {
            let batch = tb
                .finish()
                .map_err(|e| sluice_engine::EngineError::Encode(e.to_string()))?;
            tables.push(TableBatch {
                database: db.to_string(),
                table,
                batch,
            });
        }
        out.writes.push((shard, WriteBatch::new(tables)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(p: Precision) -> WriteOptions {
        WriteOptions {
            database: "db".into(),
            precision: p,
            default_time: 42,
        }
    }

    #[test]
    fn per_line_errors_carry_physical_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let mut body = b"m s=\"multi\nline\" 1\nm,t=a,t=b v=1 2\n".to_vec();
        body.extend_from_slice(
            b"m v=\xff\xfe 3\n# a comment\n\nm v=2 4\nm v=1 99999999999999999\n",
        );
        let p = prepare(&cat, 2, &body, &opts(Precision::Seconds)).unwrap();
        let lines: Vec<usize> = p.rejected.iter().map(|e| e.line).collect();
        // Non-UTF-8 bodies are split on raw newlines, so the quoted newline
        // counts as a break there; each bad line is still named on its own.
        assert_eq!(p.accepted, 1, "{:?}", p.rejected);
        assert!(lines.contains(&4), "{lines:?}");
        let p = prepare(
            &cat,
            2,
            b"m s=\"multi\nline\" 1\nm,t=a,t=b v=1 2\nm v=1 99999999999999999\nm v=2 4\n",
            &opts(Precision::Seconds),
        )
        .unwrap();
        let lines: Vec<usize> = p.rejected.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4], "{:?}", p.rejected);
        assert_eq!(p.accepted, 2);
        assert!(p.rejected[1].reason.contains("overflows"));
    }

    #[test]
    fn rows_of_one_series_go_to_one_shard() {
        let a = shard_for("db", "cpu", &[("host", "a"), ("region", "x")], 8);
        let b = shard_for("db", "cpu", &[("host", "a"), ("region", "x")], 8);
        assert_eq!(a, b);
        assert!(a < 8);
    }
}
