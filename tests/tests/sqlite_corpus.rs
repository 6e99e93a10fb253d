//! SQLite sqllogictest corpus, as a measurement: how many records of the
//! public corpus (`select*.test`, `index/**/*.test`) Sluice passes. The
//! corpus is not part of the repository; point `SLUICE_SQLITE_SLT` at a
//! directory holding it (searched recursively for `*.test`) and run
//!
//! ```text
//! SLUICE_SQLITE_SLT=/tmp/sqlite-corpus cargo nextest run -p sluice-tests \
//!     --test sqlite_corpus --run-ignored ignored-only --no-capture
//! ```
//!
//! Each file runs in a database of its own, record by record, so a failure
//! does not stop the file. Records are skipped or run as a PostgreSQL
//! dialect engine would be (`skipif postgresql`, `onlyif mysql`, …). Values
//! are printed the way the reference harness prints them: by the column
//! type the record declares (`I` integer, `R` three decimals, `T` text),
//! `NULL` as `NULL` and the empty string as `(empty)`, one value per
//! line, and hashed by the crate above 8 values (or the file's own
//! `hash-threshold`). Nothing is asserted: the test prints a table per
//! file, the totals and the most common failure causes.
//! `SLUICE_SQLITE_SLT_LOG=<file>` also writes every failure there, one a
//! line.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{SqlError, TestServer};
use sqllogictest::{
    Control, DBOutput, DefaultColumnType, QueryExpect, Record, RecordOutput, ResultMode, TestError,
    TestErrorKind,
};

/// How long one record may take before it counts as failed.
const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// The column types the record being run declares; the harness formats
/// values by them, as the SQLite reference harness does.
type Declared = Arc<Mutex<Vec<DefaultColumnType>>>;

/// The server, restarted on the same data directory when a record crashes
/// it; `crashes` counts those.
struct Server {
    inner: Mutex<TestServer>,
    crashes: AtomicUsize,
}

struct Http<'a> {
    server: &'a Server,
    db: String,
    declared: Declared,
}

impl Http<'_> {
    /// `TestServer::sql_raw`, but a timeout or a crash is an error of the
    /// record rather than a panic of the whole measurement.
    fn post(&self, sql: &str) -> Result<(u16, String), SqlError> {
        let mut server = self.server.inner.lock().unwrap();
        let sent = server
            .client
            .post(server.url("/api/v1/sql"))
            .timeout(RECORD_TIMEOUT)
            .json(&serde_json::json!({ "db": self.db, "sql": sql }))
            .send()
            .and_then(|r| {
                let status = r.status().as_u16();
                Ok((status, r.text()?))
            });
        match sent {
            Ok(answer) => Ok(answer),
            Err(e) => match server.wait_exit(Duration::from_secs(2)) {
                Some(status) => {
                    let log = server.log();
                    let last = log
                        .lines()
                        .rev()
                        .filter(|l| !l.trim().is_empty())
                        .take(2)
                        .collect::<Vec<_>>();
                    let last = last.into_iter().rev().collect::<Vec<_>>().join(" / ");
                    self.server.crashes.fetch_add(1, Ordering::Relaxed);
                    server.restart();
                    Err(SqlError(format!("server crashed ({status}): {last}")))
                }
                None => Err(SqlError(format!("HTTP request failed: {e}"))),
            },
        }
    }
}

/// Text as the reference harness prints it: printable ASCII only.
fn text(s: &str) -> String {
    if s.is_empty() {
        return "(empty)".into();
    }
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '@' })
        .collect()
}

/// The leading number of a text, the way SQLite reads text as a number
/// (`'12abc'` is 12, `'abc'` is 0); `real` also takes a fraction and an
/// exponent.
fn leading_number(s: &str, real: bool) -> f64 {
    let s = s.trim_start();
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    end = digits(end);
    if real {
        if b.get(end) == Some(&b'.') {
            end = digits(end + 1);
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut e = end + 1;
            if matches!(b.get(e), Some(b'+' | b'-')) {
                e += 1;
            }
            let after = digits(e);
            if after > e {
                end = after;
            }
        }
    }
    s[..end].parse().unwrap_or(0.0)
}

/// An integer the way the reference harness prints a column declared `I`
/// (`sqlite3_column_int64`: reals truncate, text reads its leading digits).
fn integer(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_u64().map(|u| u.to_string()))
            .or_else(|| n.as_f64().map(|f| format!("{}", f.trunc() as i64))),
        Value::String(s) => Some(match s.trim().parse::<i64>() {
            Ok(i) => i.to_string(),
            Err(_) => format!("{}", leading_number(s, false) as i64),
        }),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        _ => None,
    }
}

/// A column declared `R`: `sqlite3_column_double`, three decimals.
fn real(v: &Value) -> Option<String> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => leading_number(s, true),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => return None,
    };
    Some(format!("{f:.3}"))
}

fn cell(v: &Value, declared: Option<&DefaultColumnType>) -> String {
    if v.is_null() {
        return "NULL".into();
    }
    let typed = match declared {
        Some(DefaultColumnType::Integer) => integer(v),
        Some(DefaultColumnType::FloatingPoint) => real(v),
        _ => None,
    };
    if let Some(s) = typed {
        return s;
    }
    match v {
        Value::String(s) => text(s),
        Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        Value::Number(n) if n.is_f64() && declared != Some(&DefaultColumnType::Text) => {
            format!("{:.3}", n.as_f64().unwrap_or_default())
        }
        other => text(&other.to_string()),
    }
}

impl sqllogictest::DB for Http<'_> {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let (status, body) = self.post(sql)?;
        let doc: Value = serde_json::from_str(&body)
            .map_err(|e| SqlError(format!("HTTP {status}: not JSON ({e}): {body}")))?;
        if status != 200 {
            return Err(SqlError(format!(
                "[{}] {}",
                doc["sqlstate"].as_str().unwrap_or("?????"),
                doc["error"].as_str().unwrap_or(&body)
            )));
        }
        // A failure after the first batch ends the document with `error`.
        if let Some(e) = doc["error"].as_str() {
            return Err(SqlError(format!("[mid-stream] {e}")));
        }
        let columns = doc["columns"].as_array().cloned().unwrap_or_default();
        let raw = doc["rows"].as_array().cloned().unwrap_or_default();
        // A command answers one `result` row with its tag.
        if columns.len() == 1 && columns[0]["name"] == "result" {
            let tag = raw
                .first()
                .and_then(|r| r.get(0))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let n = tag
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            return Ok(DBOutput::StatementComplete(n));
        }
        let declared = self.declared.lock().unwrap().clone();
        let rows = raw
            .iter()
            .map(|r| {
                r.as_array()
                    .map(|r| {
                        r.iter()
                            .enumerate()
                            .map(|(i, v)| cell(v, declared.get(i)))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns.len()],
            rows,
        })
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    records: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
    /// Records that crashed the server.
    crashes: usize,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.records += o.records;
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.crashes += o.crashes;
    }

    fn rate(&self) -> f64 {
        let run = self.passed + self.failed;
        if run == 0 {
            0.0
        } else {
            100.0 * self.passed as f64 / run as f64
        }
    }
}

/// An error message with its particulars (numbers, quoted names) masked,
/// so that messages of one cause count together.
fn normalise(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or_default();
    // The SQLSTATE in front stays as it is.
    let (mut out, rest) = match first.split_once("] ") {
        Some((code, rest)) if code.starts_with('[') && !code.contains(' ') => {
            (format!("{code}] "), rest)
        }
        _ => (String::new(), first),
    };
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    chars.next();
                }
                out.push('N');
            }
            '\'' | '"' | '`' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push(c);
                out.push('…');
                out.push(c);
            }
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    let out = out.trim().to_string();
    match out.char_indices().nth(140) {
        Some((i, _)) => format!("{}…", &out[..i]),
        None => out,
    }
}

/// Values of a result as the runner shows it: a hash line or the values.
fn value_count(shown: &str) -> (usize, bool) {
    let mut lines = shown.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next();
    if let Some((n, _)) = first.and_then(|l| l.split_once(" values hashing to ")) {
        if let Ok(n) = n.trim().parse() {
            return (n, true);
        }
    }
    (first.map_or(0, |_| 1 + lines.count()), false)
}

/// The cause of a failure, for counting; and the SQL.
fn cause(e: &TestError) -> (String, String) {
    match e.kind() {
        TestErrorKind::Fail { sql, err, kind } => (
            format!("{kind} failed: {}", normalise(&err.to_string())),
            sql,
        ),
        TestErrorKind::Ok { sql, kind } => (format!("{kind} expected to fail, but succeeded"), sql),
        TestErrorKind::StatementResultMismatch { sql, .. } => {
            ("statement affected another row count".into(), sql)
        }
        TestErrorKind::QueryResultMismatch {
            sql,
            expected,
            actual,
        } => {
            let (want, _) = value_count(&expected);
            let (got, _) = value_count(&actual);
            let what = if want == got {
                "query result mismatch: same number of values, other values"
            } else {
                "query result mismatch: another number of values"
            };
            (what.into(), sql)
        }
        other => (normalise(&other.to_string()), String::new()),
    }
}

/// Parses a file. The corpus puts comments after conditions
/// (`skipif mysql # not compatible`), which the crate does not accept; they
/// are cut off first.
fn read_script(f: &Path) -> Result<Vec<Record<DefaultColumnType>>, String> {
    let text = std::fs::read_to_string(f).map_err(|e| e.to_string())?;
    let script: String = text
        .lines()
        .map(|l| match l.split_once(" #") {
            Some((cond, _)) if l.starts_with("skipif ") || l.starts_with("onlyif ") => {
                cond.trim_end()
            }
            _ => l,
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    sqllogictest::parse_with_name(&script, f.to_string_lossy().into_owned())
        .map_err(|e| e.to_string())
}

fn find_tests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find_tests(&p, out);
        } else if p.extension().is_some_and(|x| x == "test") {
            out.push(p);
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[test]
#[ignore = "measurement over the external SQLite corpus; set SLUICE_SQLITE_SLT"]
fn sqlite_corpus() {
    let root = PathBuf::from(
        std::env::var("SLUICE_SQLITE_SLT")
            .expect("set SLUICE_SQLITE_SLT to a directory holding the SQLite *.test files"),
    );
    let mut files = Vec::new();
    find_tests(&root, &mut files);
    files.sort();
    println!("{} .test files under {}", files.len(), root.display());
    let mut log = std::env::var("SLUICE_SQLITE_SLT_LOG")
        .ok()
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("failure log")));

    let server = Server {
        inner: Mutex::new(TestServer::start()),
        crashes: AtomicUsize::new(0),
    };
    let mut table: Vec<(String, Counts, Duration)> = Vec::new();
    let mut causes: HashMap<String, (usize, String)> = HashMap::new();
    let mut unparsed = Vec::new();
    for f in &files {
        let name = f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let db: String = format!("slt_{name}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let started = Instant::now();
        let crashes_before = server.crashes.load(Ordering::Relaxed);
        let mut counts = Counts::default();
        let records = match read_script(f) {
            Ok(r) => r,
            Err(e) => {
                println!("{name}: parse error: {e}");
                unparsed.push(name);
                continue;
            }
        };
        let declared: Declared = Arc::default();
        let mut runner = sqllogictest::Runner::new(|| {
            let db = db.clone();
            let server = &server;
            let declared = declared.clone();
            async move {
                Ok(Http {
                    server,
                    db,
                    declared,
                })
            }
        });
        runner.add_label("postgresql");
        // The reference results were made with `--hash-threshold 8`; a
        // file's own `hash-threshold` record overrides it.
        runner.with_hash_threshold(8);
        // The corpus lists a result one value per line.
        runner
            .run(Record::Control(Control::ResultMode(ResultMode::ValueWise)))
            .expect("result mode");
        for record in records {
            let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
            if let Record::Query {
                expected: QueryExpect::Results { types, .. },
                ..
            } = &record
            {
                *declared.lock().unwrap() = types.clone();
            } else {
                declared.lock().unwrap().clear();
            }
            let out = runner.run(record);
            if !counted {
                continue;
            }
            counts.records += 1;
            match out {
                Ok(RecordOutput::Nothing) => counts.skipped += 1,
                Ok(_) => counts.passed += 1,
                Err(e) => {
                    counts.failed += 1;
                    let (what, sql) = cause(&e);
                    let entry = causes.entry(what.clone()).or_insert_with(|| {
                        (
                            0,
                            format!(
                                "{name}:{}\n      SQL: {}\n      got: {}",
                                e.location().line(),
                                one_line(&sql, 300),
                                one_line(&e.to_string(), 400)
                            ),
                        )
                    });
                    entry.0 += 1;
                    if let Some(w) = log.as_mut() {
                        let _ = writeln!(
                            w,
                            "{name}:{}\t{what}\t{}\t{}",
                            e.location().line(),
                            one_line(&sql, 2000),
                            one_line(&e.to_string(), 4000)
                        );
                    }
                }
            }
        }
        let took = started.elapsed();
        counts.crashes = server.crashes.load(Ordering::Relaxed) - crashes_before;
        println!(
            "{name}: {} records, {} passed, {} failed, {} skipped, {} crashes ({:.1}s)",
            counts.records,
            counts.passed,
            counts.failed,
            counts.skipped,
            counts.crashes,
            took.as_secs_f64()
        );
        table.push((name, counts, took));
    }
    if let Some(mut w) = log {
        let _ = w.flush();
    }

    let width = table.iter().map(|t| t.0.len()).max().unwrap_or(4).max(5);
    println!(
        "\n{:<width$} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
        "file", "records", "passed", "failed", "skipped", "crashes", "pass%", "secs"
    );
    let mut total = Counts::default();
    let mut total_time = Duration::ZERO;
    for (name, c, took) in &table {
        println!(
            "{name:<width$} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6.1}% {:>7.1}",
            c.records,
            c.passed,
            c.failed,
            c.skipped,
            c.crashes,
            c.rate(),
            took.as_secs_f64()
        );
        total.add(*c);
        total_time += *took;
    }
    println!(
        "{:<width$} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6.1}% {:>7.1}",
        "TOTAL",
        total.records,
        total.passed,
        total.failed,
        total.skipped,
        total.crashes,
        total.rate(),
        total_time.as_secs_f64()
    );
    println!("(pass% = passed / (passed + failed); skipped records are not run)");
    if !unparsed.is_empty() {
        println!("not parsed, so not counted: {}", unparsed.join(", "));
    }

    let mut top: Vec<_> = causes.into_iter().collect();
    top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    println!("\nmost common failure causes:");
    for (what, (n, example)) in top.iter().take(10) {
        println!("{n:>8}  {what}\n      e.g. {example}");
    }
}
