//! Line protocol → rows for the [`RowSink`].
//!
//! Every line is checked on its own: a malformed line, a type conflict or a
//! bad name rejects that line (with its physical line number and the reason)
//! and never the lines around it.

use std::borrow::Cow;

use influxdb_line_protocol::{parse_lines, split_lines, FieldValue};

use crate::error::IngestError;
use crate::lpfast;
pub use crate::rows::{LineError, Prepared, MAX_REPORTED_ERRORS};
use crate::rows::{Row, RowSink, Value};
use sluice_engine::Catalog;

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
    /// Tags added to every line that lacks them (MQTT topic captures).
    pub extra_tags: Vec<(String, String)>,
}

fn add_extra_tags<'a>(row: &mut Row<'a>, extra: &'a [(String, String)]) {
    for (k, v) in extra {
        if !row.tags.iter().any(|(t, _)| t == k) {
            row.tags
                .push((Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())));
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

/// Physical line numbers (1-based) and texts of the lines of `body`. Quoted
/// string fields may span newlines, so a logical line can cover several.
fn lines(body: &[u8]) -> Vec<(usize, Result<&str, ()>)> {
    let mut out = Vec::new();
    match std::str::from_utf8(body) {
        Ok(text) => {
            let mut lineno = 1;
            let mut rest = text;
            while !rest.is_empty() {
                let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
                let seg = &rest[..end];
                // Only a quoted string or an escaped newline can hide a line
                // break; for those, the reference splitter decides.
                let tricky = memchr::memchr(b'"', seg.as_bytes()).is_some() || seg.ends_with('\\');
                let line = if tricky {
                    split_lines(rest).next().unwrap_or(seg)
                } else {
                    seg
                };
                out.push((lineno, Ok(line)));
                // Only a tricky line can span physical lines.
                lineno += 1;
                if tricky {
                    lineno += memchr::memchr_iter(b'\n', line.as_bytes()).count();
                }
                rest = rest.get(line.len() + 1..).unwrap_or("");
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
    let mut sink = RowSink::new(catalog, &opts.database, shards)?;
    prepare_into(&mut sink, body, opts)?;
    sink.finish()
}

/// Parses `body` into `sink` (whose database `opts.database` is ignored).
pub fn prepare_into(
    sink: &mut RowSink<'_>,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<(), IngestError> {
    let mult = opts.precision.multiplier();
    // As InfluxDB does, arrival time is cut to the request's precision.
    let default_time = opts.default_time - opts.default_time.rem_euclid(mult);
    let mut row = sink.row();
    for (lineno, text) in lines(body) {
        let Ok(text) = text else {
            sink.reject(lineno, "line is not valid UTF-8".into());
            continue;
        };
        // CRLF line ends (Windows agents) and trailing blanks are accepted, as
        // InfluxDB accepts them; the parser itself would reject them.
        let text = text.trim_end_matches(['\r', ' ', '\t']);
        if let Some((table, ts)) = lpfast::parse(text, &mut row) {
            match ts.map(|t| t.checked_mul(mult)) {
                None => row.time = default_time,
                Some(Some(t)) => row.time = t,
                Some(None) => {
                    sink.reject(
                        lineno,
                        format!(
                            "timestamp {} overflows at this precision",
                            ts.unwrap_or_default()
                        ),
                    );
                    continue;
                }
            }
            add_extra_tags(&mut row, &opts.extra_tags);
            sink.push(lineno, table, &mut row)?;
            continue;
        }
        let parsed = match parse_lines(text).next() {
            None => continue,
            Some(Err(e)) => {
                sink.reject(lineno, e.to_string());
                continue;
            }
            Some(Ok(p)) => p,
        };
        let time = match parsed.timestamp {
            None => default_time,
            Some(t) => match t.checked_mul(mult) {
                Some(t) => t,
                None => {
                    sink.reject(lineno, format!("timestamp {t} overflows at this precision"));
                    continue;
                }
            },
        };
        let mut row = Row {
            time,
            ..Default::default()
        };
        // Not the reused `row`: this one borrows `parsed`, which lives for
        // this line only.
        if let Some(ts) = &parsed.series.tag_set {
            row.tags.reserve(ts.len());
            for (k, v) in ts {
                row.tags
                    .push((Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())));
            }
        }
        row.fields.reserve(parsed.field_set.len());
        for (k, v) in &parsed.field_set {
            let v = match v {
                FieldValue::F64(x) => Value::F64(*x),
                FieldValue::I64(x) => Value::I64(*x),
                FieldValue::U64(x) => Value::U64(*x),
                FieldValue::Boolean(x) => Value::Bool(*x),
                FieldValue::String(s) => Value::Str(Cow::Borrowed(s.as_str())),
            };
            row.fields.push((Cow::Borrowed(k.as_str()), v));
        }
        add_extra_tags(&mut row, &opts.extra_tags);
        sink.push(lineno, parsed.series.measurement.as_str(), &mut row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::shard_for;

    fn opts(p: Precision) -> WriteOptions {
        WriteOptions {
            database: "db".into(),
            precision: p,
            default_time: 42,
            extra_tags: Vec::new(),
        }
    }

    #[test]
    fn per_line_errors_carry_physical_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
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
    /// The one table `body` (all of it accepted) makes on a single shard.
    fn one_table(body: &[u8], rows: usize) -> arrow::array::RecordBatch {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let p = prepare(&cat, 1, body, &opts(Precision::Nanoseconds)).unwrap();
        assert_eq!(p.accepted, rows);
        p.writes[0].1.tables[0].batch.clone()
    }

    #[test]
    fn columns_land_in_place_whatever_the_order_of_rows() {
        use arrow::array::{Array, Float64Array};
        let body = b"m a=1,b=2 1\nm b=3,a=4 2\nm a=5 3\nm a=6,b=7 4\nm a=8,b=9 5\nm b=10 6\n";
        let batch = one_table(body, 6);
        let get = |n: &str| {
            let c = batch.column_by_name(n).unwrap();
            let f = c.as_any().downcast_ref::<Float64Array>().unwrap();
            (0..f.len())
                .map(|i| (!f.is_null(i)).then(|| f.value(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("a"),
            [Some(1.0), Some(4.0), Some(5.0), Some(6.0), Some(8.0), None]
        );
        assert_eq!(
            get("b"),
            [Some(2.0), Some(3.0), None, Some(7.0), Some(9.0), Some(10.0)]
        );
    }

    #[test]
    fn tags_in_any_order_land_in_their_columns() {
        use arrow::array::{Array, DictionaryArray, StringArray};
        use arrow::datatypes::Int32Type;
        let body = b"m,z=z1,a=a1 f=1 1\nm,a=a2,z=z2 f=2 2\nm,z=z3,a=a3 f=3 3\n";
        let batch = one_table(body, 3);
        let get = |n: &str| {
            let c = batch.column_by_name(n).unwrap();
            let d = c
                .as_any()
                .downcast_ref::<DictionaryArray<Int32Type>>()
                .unwrap();
            let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
            (0..d.len())
                .map(|i| values.value(d.keys().value(i) as usize).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("a"), ["a1", "a2", "a3"]);
        assert_eq!(get("z"), ["z1", "z2", "z3"]);
    }
}
