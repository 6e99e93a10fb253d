//! Conformance against the shared line-protocol corpus (the Go reference
//! decoder's verdict on 6,615 inputs).
//!
//! Every decode case is written through `/write` into a database of its own,
//! with the case's precision. A case the reference decodes must be stored
//! exactly: the same measurement, tags, field values and field types and the
//! same timestamp, read back with `SELECT *`. A case the reference rejects
//! must be rejected for the line the reference names (400, the line in
//! `rejected`).
//!
//! Cases where the `influxdb-line-protocol` crate's grammar or Sluice's data
//! model legitimately differ from the reference are listed, with a category
//! and a reason, in `tests/corpus_divergences.tsv`. A failing case that is not
//! listed fails the test; a listed case that now passes is reported so the
//! list can be trimmed.
//!
//! The corpus is looked up at `$SLUICE_LP_CORPUS`, else at
//! `../shared/testdata/line-protocol-corpus/corpus.json` from the repository
//! root. `SLUICE_LP_CORPUS_DUMP=<file>` writes every failing case, listed or not,
//! as TSV (key, expectation, input, what happened) to help maintain the list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sluice_tests::TestServer;

const THREADS: usize = 4;

mod json;
mod model;

use json::{parse_json, J};
use model::*;

// ---------------------------------------------------------------------------
// Running a case.

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.f…](Z|+00:00)` → ns since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.rsplitn(3, '-');
    let (day, mon, year) = (d.next()?, d.next()?, d.next()?);
    let (y, mo, da): (i64, i64, i64) = (year.parse().ok()?, mon.parse().ok()?, day.parse().ok()?);
    let rest = rest
        .strip_suffix('Z')
        .or_else(|| rest.strip_suffix("+00:00"))?;
    let (hms, frac) = match rest.split_once('.') {
        Some((a, b)) => (a, b),
        None => (rest, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se;
    // In i128: near the ends of the i64 range the whole seconds overflow.
    i64::try_from(i128::from(secs) * 1_000_000_000 + i128::from(nanos)).ok()
}

fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{:?} (not UTF-8)", String::from_utf8_lossy(b)),
    }
}

fn show_json(v: &J) -> String {
    match v {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Num(n) => n.clone(),
        J::Str(s) => format!("{s:?}"),
        J::Arr(a) => format!(
            "[{}]",
            a.iter().map(show_json).collect::<Vec<_>>().join(", ")
        ),
        J::Obj(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k:?}: {}", show_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    ValidStored,
    ErrorRejected,
    Failed(String),
}

struct Runner<'a> {
    s: &'a TestServer,
}

impl Runner<'_> {
    fn sql(&self, db: &str, sql: &str) -> Result<J, String> {
        let body = serde_json::json!({"db": db, "sql": sql});
        let r = self
            .s
            .client
            .post(self.s.url("/api/v1/sql"))
            .json(&body)
            .send()
            .map_err(|e| format!("SQL {sql:?}: request failed: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().map_err(|e| format!("SQL {sql:?}: body: {e}"))?;
        if status != 200 {
            return Err(format!(
                "SQL {sql:?} answered {status}: {}",
                clip(&text, 300)
            ));
        }
        let doc = parse_json(&text).map_err(|e| format!("SQL {sql:?}: {e}: {text}"))?;
        if let Some(e) = doc.get("error") {
            return Err(format!("SQL {sql:?} failed mid-stream: {}", show_json(e)));
        }
        Ok(doc)
    }

    fn run(&self, c: &Case) -> Outcome {
        match self.try_run(c) {
            Ok(o) => o,
            Err(e) => Outcome::Failed(e),
        }
    }

    fn try_run(&self, c: &Case) -> Result<Outcome, String> {
        let db = format!("c{}", c.key);
        let before = now_ns();
        let r = self
            .s
            .client
            .post(
                self.s
                    .url(&format!("/write?db={db}&precision={}", c.precision)),
            )
            .body(c.body.clone())
            .send()
            .map_err(|e| format!("write request failed (server down?): {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        let after = now_ns();
        if status >= 500 {
            return Err(format!("write answered {status}: {}", clip(&text, 300)));
        }
        match &c.expect {
            Expect::Error(err, line) => {
                if status == 204 {
                    return Err(format!("accepted (204); reference rejects: {err}"));
                }
                if status != 400 {
                    return Err(format!("write answered {status}: {}", clip(&text, 300)));
                }
                let doc = parse_json(&text).map_err(|e| format!("400 body {e}: {text}"))?;
                let rejected: Vec<(usize, String)> = doc
                    .get("rejected")
                    .and_then(J::arr)
                    .ok_or_else(|| format!("400 without `rejected`: {}", clip(&text, 300)))?
                    .iter()
                    .map(|r| {
                        (
                            r.get("line")
                                .and_then(J::num)
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0),
                            r.get("reason").and_then(J::str).unwrap_or("").to_string(),
                        )
                    })
                    .collect();
                match line {
                    _ if rejected.is_empty() => {
                        Err(format!("400 but no line rejected: {}", clip(&text, 300)))
                    }
                    Some(l) if !rejected.iter().any(|(n, _)| n == l) => Err(format!(
                        "rejected lines {:?}, not line {l}; reference: {err}",
                        rejected
                    )),
                    _ => Ok(Outcome::ErrorRejected),
                }
            }
            Expect::Points(points) => {
                if status != 204 {
                    let reasons = parse_json(&text)
                        .ok()
                        .and_then(|d| d.get("rejected").map(show_json))
                        .unwrap_or_else(|| clip(&text, 300));
                    return Err(format!("write answered {status}: {reasons}"));
                }
                self.check_points(c, &db, points, before, after)?;
                Ok(Outcome::ValidStored)
            }
        }
    }

    fn check_points(
        &self,
        c: &Case,
        db: &str,
        points: &[Point],
        before: i64,
        after: i64,
    ) -> Result<(), String> {
        let mut by_table: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
        for p in points {
            let name = String::from_utf8(p.name.clone())
                .map_err(|_| format!("accepted a non-UTF-8 measurement {}", show(&p.name)))?;
            by_table.entry(name).or_default().push(p);
        }
        // Exactly the expected tables exist (none for an input of only
        // comments and blank lines).
        let tables: BTreeSet<String> = match self.sql(
            db,
            &format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}'"
            ),
        ) {
            Ok(doc) => doc
                .get("rows")
                .and_then(J::arr)
                .unwrap_or(&[])
                .iter()
                .filter_map(|r| r.arr()?.first()?.str().map(str::to_string))
                .collect(),
            Err(_) if points.is_empty() => BTreeSet::new(), // the database was never created
            Err(e) => return Err(e),
        };
        let want: BTreeSet<String> = by_table.keys().cloned().collect();
        if tables != want {
            return Err(format!("tables {tables:?}, want {want:?}"));
        }
        for (table, pts) in &by_table {
            self.check_table(c, db, table, pts, before, after)?;
        }
        Ok(())
    }

    fn check_table(
        &self,
        c: &Case,
        db: &str,
        table: &str,
        points: &[&Point],
        before: i64,
        after: i64,
    ) -> Result<(), String> {
        // What each expected point should look like as a row: column → value.
        // A repeated field key keeps its last value, as in InfluxDB.
        let mut want_cols: BTreeMap<String, &'static str> = BTreeMap::new();
        want_cols.insert("time".into(), "Timestamp");
        let mut want_rows: Vec<(i64, BTreeMap<String, Val>)> = Vec::new();
        for p in points {
            let mut row = BTreeMap::new();
            for (k, v) in &p.tags {
                let k = String::from_utf8(k.clone())
                    .map_err(|_| format!("accepted a non-UTF-8 tag key {}", show(k)))?;
                want_cols.insert(k.clone(), "Utf8");
                row.insert(k, Val::Str(v.clone()));
            }
            for (k, v) in &p.fields {
                let k = String::from_utf8(k.clone())
                    .map_err(|_| format!("accepted a non-UTF-8 field key {}", show(k)))?;
                want_cols.insert(k.clone(), v.sql_type());
                row.insert(k, v.clone());
            }
            want_rows.push((p.time, row));
        }
        // Points sharing series (tag set) and time are one row: the table's
        // default dedup policy keeps the last one written. Lines without a
        // timestamp in one request share the server's time, so this matters.
        type SeriesTime = (Vec<(Vec<u8>, Vec<u8>)>, i64);
        let mut seen: BTreeMap<SeriesTime, usize> = BTreeMap::new();
        let mut deduped: Vec<Option<(i64, BTreeMap<String, Val>)>> = Vec::new();
        for (p, row) in points.iter().zip(want_rows) {
            let mut tags = p.tags.clone();
            tags.sort();
            tags.dedup_by(|a, b| a.0 == b.0);
            match seen.get(&(tags.clone(), p.time)) {
                Some(&i) => deduped[i] = Some(row),
                None => {
                    seen.insert((tags, p.time), deduped.len());
                    deduped.push(Some(row));
                }
            }
        }
        let want_rows: Vec<(i64, BTreeMap<String, Val>)> = deduped.into_iter().flatten().collect();

        let ident = table.replace('"', "\"\"");
        let doc = self.sql(db, &format!("SELECT * FROM \"{ident}\""))?;
        let cols: Vec<(String, String)> = doc
            .get("columns")
            .and_then(J::arr)
            .ok_or("result without columns")?
            .iter()
            .map(|c| {
                (
                    c.get("name").and_then(J::str).unwrap_or("").to_string(),
                    c.get("type").and_then(J::str).unwrap_or("").to_string(),
                )
            })
            .collect();
        let rows = doc
            .get("rows")
            .and_then(J::arr)
            .ok_or("result without rows")?;
        let got_cols: BTreeMap<String, String> = cols.iter().cloned().collect();
        let got_names: BTreeSet<&String> = got_cols.keys().collect();
        let want_names: BTreeSet<&String> = want_cols.keys().collect();
        if got_names != want_names {
            return Err(format!(
                "table {table:?}: columns {got_names:?}, want {want_names:?}"
            ));
        }
        for (name, ty) in &want_cols {
            let got = &got_cols[name];
            let ok = if *ty == "Timestamp" {
                got.starts_with("Timestamp")
            } else {
                got == ty
            };
            if !ok {
                return Err(format!(
                    "table {table:?}: column {name:?} has type {got}, want {ty}"
                ));
            }
        }
        if rows.len() != want_rows.len() {
            return Err(format!(
                "table {table:?}: {} row(s), want {}: {}",
                rows.len(),
                want_rows.len(),
                clip(&show_json(&J::Arr(rows.to_vec())), 400)
            ));
        }

        // Without a timestamp the server assigns its own time; the reference
        // shows the default time (truncated to the precision) there.
        let default_at_precision = c.default_time - c.default_time.rem_euclid(c.unit);
        let time_ok = |got: i64, want: i64| -> Result<(), String> {
            if got == want {
                return Ok(());
            }
            if want == default_at_precision || want == c.default_time {
                let lo = before - before.rem_euclid(c.unit);
                if got < lo || got > after {
                    return Err(format!(
                        "time {got} is outside the request window [{lo}, {after}] (line has no timestamp)"
                    ));
                }
                if got.rem_euclid(c.unit) != 0 {
                    return Err(format!(
                        "server-assigned time {got} is not truncated to the precision {}",
                        c.precision
                    ));
                }
                return Ok(());
            }
            Err(format!("time {got}, want {want}"))
        };

        let mut used = vec![false; rows.len()];
        for (want_time, want_row) in &want_rows {
            let mut first_err = None;
            let mut found = false;
            for (ri, row) in rows.iter().enumerate() {
                if used[ri] {
                    continue;
                }
                match match_row(&cols, row, *want_time, want_row, &time_ok) {
                    Ok(()) => {
                        used[ri] = true;
                        found = true;
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if !found {
                return Err(format!(
                    "table {table:?}: no row matches the point at {want_time} {}: {}",
                    show_val_row(want_row),
                    first_err.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

fn show_val_row(row: &BTreeMap<String, Val>) -> String {
    let parts: Vec<String> = row
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Val::Str(b) => show(b),
                Val::Float(f) => format!("{f:?}"),
                other => format!("{other:?}"),
            };
            format!("{k:?}={v}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn match_row(
    cols: &[(String, String)],
    row: &J,
    want_time: i64,
    want: &BTreeMap<String, Val>,
    time_ok: &dyn Fn(i64, i64) -> Result<(), String>,
) -> Result<(), String> {
    let cells = row.arr().ok_or("row is not an array")?;
    if cells.len() != cols.len() {
        return Err(format!(
            "row has {} cells for {} columns",
            cells.len(),
            cols.len()
        ));
    }
    for ((name, ty), cell) in cols.iter().zip(cells) {
        if name == "time" {
            let t = cell
                .str()
                .and_then(parse_rfc3339)
                .ok_or_else(|| format!("bad time {}", show_json(cell)))?;
            time_ok(t, want_time)?;
            continue;
        }
        let ok = match (want.get(name), cell) {
            (None, J::Null) => true,
            (None, _) | (Some(_), J::Null) => false,
            (Some(Val::Str(s)), J::Str(g)) => g.as_bytes() == s.as_slice(),
            (Some(Val::Bool(b)), J::Bool(g)) => b == g,
            (Some(Val::Int(i)), J::Num(g)) => ty == "Int64" && g.parse::<i64>().ok() == Some(*i),
            (Some(Val::UInt(u)), J::Num(g)) => ty == "UInt64" && g.parse::<u64>().ok() == Some(*u),
            (Some(Val::Float(f)), J::Num(g)) => {
                ty == "Float64" && g.parse::<f64>().ok().map(f64::to_bits) == Some(f.to_bits())
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "column {name:?} ({ty}) holds {}, want {}",
                show_json(cell),
                match want.get(name) {
                    None => "null".into(),
                    Some(Val::Str(b)) => show(b),
                    Some(Val::Float(f)) => format!("{f:?}"),
                    Some(v) => format!("{v:?}"),
                }
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

#[test]
fn line_protocol_corpus() {
    let cases = load_corpus();
    let divergences = load_divergences();
    let dump_path = std::env::var("SLUICE_LP_CORPUS_DUMP").ok();
    // The server reads every `SLUICE_*` variable as configuration and refuses
    // unknown ones: keep this test's own settings away from it.
    std::env::remove_var("SLUICE_LP_CORPUS");
    std::env::remove_var("SLUICE_LP_CORPUS_DUMP");
    let s = TestServer::start();
    let runner = Runner { s: &s };

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::with_capacity(cases.len()));
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                let o = runner.run(c);
                results.lock().unwrap().push((i, o));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let elapsed = started.elapsed();

    // The server must still be up after all of it.
    let health = s
        .client
        .get(s.url("/health"))
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(health.ok(), Some(200), "server unhealthy after the corpus");

    let valid_total = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Points(_)))
        .count();
    let error_total = cases.len() - valid_total;
    let mut valid_ok = 0;
    let mut error_ok = 0;
    let mut listed_by_cat: BTreeMap<String, (usize, usize)> = BTreeMap::new(); // (valid, error)
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    let mut dump = String::new();

    let by_key: HashMap<&str, &Case> = cases.iter().map(|c| (c.key.as_str(), c)).collect();
    for (i, o) in &results {
        let c = &cases[*i];
        let listed = divergences.cases.get(&c.key);
        match (o, listed) {
            (Outcome::ValidStored, None) => valid_ok += 1,
            (Outcome::ErrorRejected, None) => error_ok += 1,
            (Outcome::ValidStored | Outcome::ErrorRejected, Some((cat, _))) => {
                if *o == Outcome::ValidStored {
                    valid_ok += 1;
                } else {
                    error_ok += 1;
                }
                now_passing.push(format!("{}\t{cat}\t{}", c.key, show(&c.body)));
            }
            (Outcome::Failed(why), listed) => {
                let kind = match &c.expect {
                    Expect::Points(_) => "valid",
                    Expect::Error(..) => "error",
                };
                dump.push_str(&format!(
                    "{}\t{kind}\t{}\t{}\n",
                    c.key,
                    show(&c.body).replace('\t', "\\t"),
                    why.replace(['\t', '\n'], " ")
                ));
                match listed {
                    Some((cat, _)) => {
                        let e = listed_by_cat.entry(cat.clone()).or_default();
                        if kind == "valid" {
                            e.0 += 1;
                        } else {
                            e.1 += 1;
                        }
                    }
                    None => unexpected.push(format!(
                        "{} [{kind} case, precision {}] input {}\n    {}",
                        c.key,
                        c.precision,
                        show(&c.body),
                        match &c.expect {
                            Expect::Error(e, _) if !why.contains(e.as_str()) => {
                                format!("{why}\n    reference: {e}")
                            }
                            Expect::Error(..) => why.clone(),
                            Expect::Points(_) => why.clone(),
                        }
                    )),
                }
            }
        }
    }
    let stale: Vec<&String> = divergences
        .cases
        .keys()
        .filter(|k| !by_key.contains_key(k.as_str()))
        .collect();

    if let Some(p) = dump_path {
        std::fs::write(&p, &dump).expect("write dump");
        println!("failing cases written to {p}");
    }

    println!(
        "\nline-protocol corpus: {} cases in {:.1}s",
        cases.len(),
        elapsed.as_secs_f64()
    );
    println!("  valid cases stored exactly:      {valid_ok} / {valid_total}");
    println!("  error cases rejected:            {error_ok} / {error_total}");
    let listed_failing: usize = listed_by_cat.values().map(|(a, b)| a + b).sum();
    println!(
        "  listed divergences (failing):    {listed_failing} of {} listed",
        divergences.cases.len()
    );
    for (cat, (v, e)) in &listed_by_cat {
        println!("    {cat:<40} {:>5}  ({v} valid, {e} error)", v + e);
    }
    println!("  listed divergences now passing:  {}", now_passing.len());
    for p in &now_passing {
        println!("    {p}");
    }
    if !stale.is_empty() {
        println!("  listed keys not in the corpus:   {}", stale.len());
        for k in &stale {
            println!("    {k}");
        }
    }
    println!("  unexpected failures:             {}", unexpected.len());
    for u in &unexpected {
        println!("    {u}");
    }
    assert!(
        unexpected.is_empty(),
        "{} corpus case(s) failed that are not listed in {}",
        unexpected.len(),
        divergences_path().display()
    );
}

#[test]
fn reads_timestamps_and_exact_numbers() {
    assert_eq!(
        parse_rfc3339("2023-11-14T22:13:20Z"),
        Some(1_700_000_000_000_000_000)
    );
    assert_eq!(
        parse_rfc3339("2023-11-14T22:13:20.000000001Z"),
        Some(1_700_000_000_000_000_001)
    );
    assert_eq!(
        parse_rfc3339("1970-01-01T00:00:00.5+00:00"),
        Some(500_000_000)
    );
    assert_eq!(
        parse_rfc3339("1677-09-21T00:12:43.145224194Z"),
        Some(-9_223_372_036_854_775_806)
    );
    assert_eq!(
        parse_rfc3339("2262-04-11T23:47:16.854775807Z"),
        Some(i64::MAX)
    );
    let doc =
        parse_json(r#"{"a": [18446744073709551615, 0.1, -0, "\u00e9\ud83d\ude00"]}"#).unwrap();
    let a = doc.get("a").and_then(J::arr).unwrap();
    assert_eq!(a[0].num(), Some("18446744073709551615"));
    assert_eq!(a[1].num(), Some("0.1"));
    assert_eq!(a[2].num(), Some("-0"));
    assert_eq!(a[3].str(), Some("é😀"));
}
