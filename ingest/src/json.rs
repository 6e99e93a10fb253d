//! JSON payloads → rows, the mapping MQTT and Kafka routes share.
//!
//! An object is one row and an array of objects is many. Nested objects
//! flatten with `.` (`{"a":{"b":1}}` is field `a.b`) and arrays of scalars
//! with their index (`a.0`). Numbers become float fields, as Telegraf's JSON
//! parser makes them, so a sensor sending `20` and later `20.5` does not hit
//! a type conflict; strings and booleans keep their types; `null` is absent.
//! Keys named in `tags` become tags (their values as text).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sluice_engine::Catalog;

use crate::error::IngestError;
use crate::rows::{Prepared, Row, RowSink, Value};

/// How a JSON key carries the row's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    S,
    Ms,
    Us,
    Ns,
    /// An RFC 3339 string such as `2024-05-01T12:00:00.5Z`.
    Rfc3339,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimeField {
    pub field: String,
    #[serde(default = "default_unit")]
    pub unit: TimeUnit,
}

fn default_unit() -> TimeUnit {
    TimeUnit::Ms
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonMapping {
    pub table: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Absent: the arrival time.
    #[serde(default)]
    pub time: Option<TimeField>,
}

fn flatten<'a>(prefix: &str, v: &'a Json, out: &mut Vec<(String, &'a Json)>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Json::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        scalar => out.push((prefix.to_string(), scalar)),
    }
}

fn time_of(v: &Json, unit: TimeUnit) -> Result<i64, String> {
    let scale = |mult: f64| -> Result<i64, String> {
        let x = match v {
            Json::Number(n) => match n.as_i64() {
                Some(i) => {
                    return i
                        .checked_mul(mult as i64)
                        .ok_or_else(|| "time out of range".to_string())
                }
                None => n.as_f64().ok_or("time is not a number")?,
            },
            _ => return Err(format!("time must be a number, got {v}")),
        };
        let ns = x * mult;
        if ns.is_finite() && ns.abs() < 9.2e18 {
            Ok(ns as i64)
        } else {
            Err("time out of range".into())
        }
    };
    match unit {
        TimeUnit::S => scale(1e9),
        TimeUnit::Ms => scale(1e6),
        TimeUnit::Us => scale(1e3),
        TimeUnit::Ns => scale(1.0),
        TimeUnit::Rfc3339 => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("time must be an RFC 3339 string, got {v}"))?;
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("time {s:?}: {e}"))?
                .timestamp_nanos_opt()
                .ok_or_else(|| "time out of range".into())
        }
    }
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Maps one JSON payload into write batches for database `db`. `extra_tags`
/// (such as topic captures) are added to every row. Rows are numbered from 1
/// in rejections.
pub fn prepare(
    catalog: &Catalog,
    shards: usize,
    payload: &[u8],
    db: &str,
    mapping: &JsonMapping,
    extra_tags: &[(String, String)],
    arrival: i64,
) -> Result<Prepared, IngestError> {
    let mut sink = RowSink::new(catalog, db, shards)?;
    prepare_into(&mut sink, payload, mapping, extra_tags, arrival)?;
    sink.finish()
}

/// Maps one JSON payload into `sink`.
pub fn prepare_into(
    sink: &mut RowSink<'_>,
    payload: &[u8],
    mapping: &JsonMapping,
    extra_tags: &[(String, String)],
    arrival: i64,
) -> Result<(), IngestError> {
    let doc: Json = match serde_json::from_slice(payload) {
        Ok(d) => d,
        Err(e) => {
            sink.reject(
                e.line(),
                format!(
                    "invalid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            );
            return Ok(());
        }
    };
    let objects: Vec<&Json> = match &doc {
        Json::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for (i, obj) in objects.into_iter().enumerate() {
        let rowno = i + 1;
        if !obj.is_object() {
            sink.reject(rowno, format!("row {rowno} is not a JSON object"));
            continue;
        }
        let mut flat = Vec::new();
        flatten("", obj, &mut flat);
        let mut row = Row {
            time: arrival,
            ..Default::default()
        };
        for (k, v) in extra_tags {
            row.tags
                .push((Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())));
        }
        let mut bad = None;
        for (k, v) in flat {
            if let Some(tf) = &mapping.time {
                if k == tf.field {
                    match time_of(v, tf.unit) {
                        Ok(t) => row.time = t,
                        Err(e) => bad = Some(format!("row {rowno}: {e}")),
                    }
                    continue;
                }
            }
            if v.is_null() {
                continue;
            }
            if mapping.tags.contains(&k) {
                row.tags.push((Cow::Owned(k), Cow::Owned(text(v))));
                continue;
            }
            let value = match v {
                Json::Bool(b) => Value::Bool(*b),
                Json::Number(n) => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
                Json::String(s) => Value::Str(Cow::Borrowed(s.as_str())),
                _ => continue,
            };
            row.fields.push((Cow::Owned(k), value));
        }
        if let Some(reason) = bad {
            sink.reject(rowno, reason);
            continue;
        }
        sink.push(rowno, &mapping.table, &mut row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, StringArray};

    fn mapping() -> JsonMapping {
        JsonMapping {
            table: "telemetry".into(),
            tags: vec!["line".into()],
            time: Some(TimeField {
                field: "ts".into(),
                unit: TimeUnit::Ms,
            }),
        }
    }

    #[test]
    fn objects_arrays_nesting_and_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let payload = br#"[
            {"ts": 1700000000123, "line": 4, "temp": 21, "motor": {"rpm": 1500.5, "on": true}, "note": null},
            {"ts": "soon", "temp": 1},
            7,
            {"ts": 1700000000124, "line": "4", "temp": 22.5, "label": "ok"}
        ]"#;
        let extra = vec![("site".to_string(), "north".to_string())];
        let p = prepare(&cat, 1, payload, "plant", &mapping(), &extra, 0).unwrap();
        assert_eq!(p.accepted, 2);
        let lines: Vec<usize> = p.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3]);
        let batch = &p.writes[0].1.tables[0].batch;
        let temp = batch.column_by_name("temp").unwrap();
        let temp = temp.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(temp.values().to_vec(), vec![21.0, 22.5]);
        let rpm = batch.column_by_name("motor.rpm").unwrap();
        assert_eq!(rpm.null_count(), 1);
        let label = batch.column_by_name("label").unwrap();
        let label = label.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(label.is_null(0));
        assert!(batch.column_by_name("note").is_none());
        assert!(batch.column_by_name("site").is_some());
        let schema = cat.snapshot();
        let t = schema.table("plant", "telemetry").unwrap();
        assert_eq!(t.column("line"), Some(sluice_engine::ColumnKind::Tag));
    }

    #[test]
    fn garbage_is_one_clear_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let p = prepare(&cat, 2, b"{\"a\": 1,,}", "plant", &mapping(), &[], 0).unwrap();
        assert_eq!(p.accepted, 0);
        assert_eq!(p.rejected_total, 1);
        assert!(
            p.rejected[0].reason.contains("invalid JSON"),
            "{}",
            p.rejected[0].reason
        );
    }

    #[test]
    fn rfc3339_times() {
        let t = time_of(
            &Json::String("2023-11-14T22:13:20.5Z".into()),
            TimeUnit::Rfc3339,
        )
        .unwrap();
        assert_eq!(t, 1_700_000_000_500_000_000);
        assert_eq!(
            time_of(&serde_json::json!(1.5), TimeUnit::S).unwrap(),
            1_500_000_000
        );
        assert!(time_of(&serde_json::json!(1e300), TimeUnit::S).is_err());
    }
}
