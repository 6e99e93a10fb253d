//! `verify`: reads a table back from Sluice over SQL and checks it against
//! the line protocol file that was loaded, value for value.
//!
//! Floats are compared by their bits: the file's text and Sluice's CSV (the
//! shortest text that round-trips) are both parsed with Rust's correctly
//! rounding `f64` parser, so equal bits mean Sluice stored exactly what was
//! sent. Integers (`42i`) are compared as integers. Every row of the file must
//! come back exactly once, with its tags, and nothing else may.
//!
//! It reads files as `sluice-bench generate` writes them: one measurement,
//! the same tag keys and fields in the same order on every line, no escapes,
//! a timestamp on every line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct VerifyArgs {
    pub data: PathBuf,
    /// Base URL of Sluice, e.g. http://127.0.0.1:8086.
    pub url: String,
    pub db: String,
    pub timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Float,
    Int,
}

/// The file, indexed by (series, timestamp).
struct Expected {
    measurement: String,
    tag_keys: Vec<String>,
    fields: Vec<(String, FieldKind)>,
    /// `measurement,k=v,…` of each series, as in the file.
    series: HashMap<String, u32>,
    rows: HashMap<(u32, i64), u32>,
    /// Row-major: `fields.len()` values per row, f64 bits or i64 as u64.
    values: Vec<u64>,
}

fn bad(path: &std::path::Path, n: usize, what: &str) -> String {
    format!("{}:{n}: {what}", path.display())
}

fn read_expected(path: &std::path::Path) -> Result<Expected, String> {
    let f = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut line = String::new();
    let mut e = Expected {
        measurement: String::new(),
        tag_keys: Vec::new(),
        fields: Vec::new(),
        series: HashMap::new(),
        rows: HashMap::new(),
        values: Vec::new(),
    };
    let mut n = 0usize;
    loop {
        line.clear();
        let got = r
            .read_line(&mut line)
            .map_err(|err| format!("reading {}: {err}", path.display()))?;
        if got == 0 {
            break;
        }
        n += 1;
        let l = line.trim_end_matches(['\n', '\r']);
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        if l.contains('\\') || l.contains('"') {
            return Err(bad(path, n, "escapes and string fields are not supported"));
        }
        let mut parts = l.split(' ');
        let (Some(key), Some(fields), Some(ts), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(path, n, "expected `series fields timestamp`"));
        };
        let ts: i64 = ts.parse().map_err(|_| bad(path, n, "bad timestamp"))?;
        if e.fields.is_empty() {
            let mut it = key.split(',');
            e.measurement = it.next().unwrap_or_default().to_string();
            for kv in it {
                let (k, _) = kv.split_once('=').ok_or_else(|| bad(path, n, "bad tag"))?;
                e.tag_keys.push(k.to_string());
            }
            for kv in fields.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad(path, n, "bad field"))?;
                let kind = if v.ends_with('i') {
                    FieldKind::Int
                } else {
                    FieldKind::Float
                };
                e.fields.push((k.to_string(), kind));
            }
        }
        let next = e.series.len() as u32;
        let sid = match e.series.get(key) {
            Some(&s) => s,
            None => {
                let mut it = key.split(',');
                if it.next() != Some(e.measurement.as_str()) {
                    return Err(bad(path, n, "a second measurement"));
                }
                let keys: Vec<&str> = it
                    .map(|kv| kv.split_once('=').map_or("", |p| p.0))
                    .collect();
                if keys != e.tag_keys {
                    return Err(bad(path, n, "tag keys differ from the first line's"));
                }
                e.series.insert(key.to_string(), next);
                next
            }
        };
        let row = e.rows.len() as u32;
        if e.rows.insert((sid, ts), row).is_some() {
            return Err(bad(path, n, "the same series and time twice"));
        }
        let mut count = 0;
        for (kv, (name, kind)) in fields.split(',').zip(&e.fields) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(path, n, "bad field"))?;
            if k != name {
                return Err(bad(path, n, "fields differ from the first line's"));
            }
            let bits = match kind {
                FieldKind::Int => v
                    .strip_suffix('i')
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| bad(path, n, "bad integer field"))?
                    as u64,
                FieldKind::Float => v
                    .parse::<f64>()
                    .map_err(|_| bad(path, n, "bad float field"))?
                    .to_bits(),
            };
            e.values.push(bits);
            count += 1;
        }
        if count != e.fields.len() || fields.split(',').count() != e.fields.len() {
            return Err(bad(path, n, "fields differ from the first line's"));
        }
    }
    if e.rows.is_empty() {
        return Err(format!("{}: no rows", path.display()));
    }
    Ok(e)
}

/// Splits one CSV record (RFC 4180 quoting; records here never span lines).
fn csv_record(line: &str, out: &mut Vec<String>) {
    out.clear();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[derive(Default)]
struct Report {
    returned: u64,
    unknown_series: u64,
    extra: u64,
    duplicates: u64,
    value_mismatches: u64,
    examples: Vec<String>,
}

impl Report {
    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }
}

pub fn verify(a: &VerifyArgs) -> Result<(), String> {
    let started = Instant::now();
    let e = read_expected(&a.data)?;
    let nf = e.fields.len();
    eprintln!(
        "verify: {} rows, {} series, {} fields ({}) read from {} in {:.1}s",
        e.rows.len(),
        e.series.len(),
        nf,
        if e.fields.iter().all(|f| f.1 == FieldKind::Int) {
            "integers"
        } else {
            "floats"
        },
        a.data.display(),
        started.elapsed().as_secs_f64()
    );
    let time_col = "__verify_time_ns";
    let sql = format!(
        "SELECT {}, CAST(time AS BIGINT) AS {time_col}, {} FROM {}",
        e.tag_keys
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", "),
        e.fields
            .iter()
            .map(|(k, _)| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", "),
        quote_ident(&e.measurement),
    );
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(a.timeout)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let url = format!("{}/api/v1/sql", a.url.trim_end_matches('/'));
    let queried = Instant::now();
    let resp = client
        .post(&url)
        .query(&[
            ("db", a.db.as_str()),
            ("format", "csv"),
            ("q", sql.as_str()),
        ])
        .send()
        .map_err(|err| format!("{url}: {err}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().unwrap_or_default();
        return Err(format!(
            "{url}: HTTP {status}: {}\nquery: {sql}",
            body.trim()
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, resp);
    let mut line = String::new();
    let mut rec = Vec::new();
    // Column positions, from the header.
    r.read_line(&mut line)
        .map_err(|err| format!("reading the answer: {err}"))?;
    csv_record(line.trim_end_matches(['\n', '\r']), &mut rec);
    let pos = |name: &str| {
        rec.iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("column {name} missing from the answer's header {line:?}"))
    };
    let tag_pos = e
        .tag_keys
        .iter()
        .map(|k| pos(k))
        .collect::<Result<Vec<_>, _>>()?;
    let time_pos = pos(time_col)?;
    let field_pos = e
        .fields
        .iter()
        .map(|(k, _)| pos(k))
        .collect::<Result<Vec<_>, _>>()?;
    let width = rec.len();
    let mut seen = vec![false; e.rows.len()];
    let mut rep = Report::default();
    let mut key = String::new();
    loop {
        line.clear();
        let got = r
            .read_line(&mut line)
            .map_err(|err| format!("reading the answer after {} rows: {err}", rep.returned))?;
        if got == 0 {
            break;
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            continue;
        }
        rep.returned += 1;
        csv_record(l, &mut rec);
        if rec.len() != width {
            return Err(format!(
                "answer row {} has {} columns, not {width}: {l}",
                rep.returned,
                rec.len()
            ));
        }
        key.clear();
        key.push_str(&e.measurement);
        for (k, &p) in e.tag_keys.iter().zip(&tag_pos) {
            key.push(',');
            key.push_str(k);
            key.push('=');
            key.push_str(&rec[p]);
        }
        let Some(&sid) = e.series.get(&key) else {
            rep.unknown_series += 1;
            rep.example(format!("unknown series {key}"));
            continue;
        };
        let ts: i64 = rec[time_pos]
            .parse()
            .map_err(|_| format!("answer row {}: bad time {:?}", rep.returned, rec[time_pos]))?;
        let Some(&row) = e.rows.get(&(sid, ts)) else {
            rep.extra += 1;
            rep.example(format!("row not in the file: {key} @ {ts}"));
            continue;
        };
        let row = row as usize;
        if std::mem::replace(&mut seen[row], true) {
            rep.duplicates += 1;
            rep.example(format!("returned twice: {key} @ {ts}"));
            continue;
        }
        for (i, ((name, kind), &p)) in e.fields.iter().zip(&field_pos).enumerate() {
            let want = e.values[row * nf + i];
            let text = rec[p].as_str();
            let ok = match kind {
                FieldKind::Float => text.parse::<f64>().is_ok_and(|v| v.to_bits() == want),
                FieldKind::Int => text.parse::<i64>().is_ok_and(|v| v as u64 == want),
            };
            if !ok {
                rep.value_mismatches += 1;
                let want = match kind {
                    FieldKind::Float => format!("{}", f64::from_bits(want)),
                    FieldKind::Int => format!("{}i", want as i64),
                };
                rep.example(format!("{key} @ {ts} {name}: got {text:?}, sent {want}"));
            }
        }
    }
    let missing = seen.iter().filter(|s| !**s).count() as u64;
    let values = e.rows.len() as u64 * nf as u64;
    eprintln!(
        "verify: {} rows returned in {:.1}s; {} values compared",
        rep.returned,
        queried.elapsed().as_secs_f64(),
        (e.rows.len() as u64 - missing) * nf as u64,
    );
    for x in &rep.examples {
        eprintln!("verify:   {x}");
    }
    let bad_total =
        missing + rep.extra + rep.duplicates + rep.unknown_series + rep.value_mismatches;
    println!(
        "RESULT rows_expected={} rows_returned={} missing_rows={missing} extra_rows={} duplicate_rows={} unknown_series={} values={values} value_mismatches={} ok={}",
        e.rows.len(),
        rep.returned,
        rep.extra,
        rep.duplicates,
        rep.unknown_series,
        rep.value_mismatches,
        bad_total == 0,
    );
    if bad_total == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} rows missing, {} extra, {} returned twice, {} of unknown series, {} values differ",
            missing, rep.extra, rep.duplicates, rep.unknown_series, rep.value_mismatches
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records() {
        let mut r = Vec::new();
        csv_record(r#"a,"b,c","d""e",,1.5"#, &mut r);
        assert_eq!(r, ["a", "b,c", "d\"e", "", "1.5"]);
    }

    #[test]
    fn reads_generated_files() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for v in [crate::generate::Values::Full, crate::generate::Values::Int] {
            let path = dir.join("cpu.lp");
            crate::generate::generate(3, 60, 1, v, &path).unwrap();
            let e = read_expected(&path).unwrap();
            assert_eq!((e.rows.len(), e.series.len(), e.fields.len()), (18, 3, 10));
            assert_eq!(e.tag_keys.len(), 10);
            assert_eq!(e.measurement, "cpu");
            let kind = if v == crate::generate::Values::Int {
                FieldKind::Int
            } else {
                FieldKind::Float
            };
            assert!(e.fields.iter().all(|f| f.1 == kind));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
