//! Golden SQL: every `tests/sql/*.slt` file (sqllogictest format) runs
//! against the real server over `/api/v1/sql`. Each record is one request,
//! so a transaction is written as one record holding `BEGIN; …; COMMIT`.
//! Errors read `[SQLSTATE] message`, so `statement error` records can
//! match the code.

use std::path::PathBuf;

use serde_json::Value;
use sluice_tests::{SqlError, TestServer};
use sqllogictest::{DBOutput, DefaultColumnType};

struct Http<'a> {
    server: &'a TestServer,
    db: String,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl sqllogictest::DB for Http<'_> {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let (status, body) = self.server.sql_raw(&self.db, sql);
        let doc: Value = serde_json::from_str(&body)
            .map_err(|e| SqlError(format!("HTTP {status}: not JSON ({e}): {body}")))?;
        if status != 200 {
            return Err(SqlError(format!(
                "[{}] {}",
                doc["sqlstate"].as_str().unwrap_or("?????"),
                doc["error"].as_str().unwrap_or(&body)
            )));
        }
        let columns = doc["columns"].as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = doc["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                r.as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(cell)
                    .collect()
            })
            .collect();
        // A command answers one `result` row with its tag.
        if columns.len() == 1 && columns[0]["name"] == "result" {
            let tag = rows
                .first()
                .and_then(|r| r.first())
                .cloned()
                .unwrap_or_default();
            let n = tag
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            return Ok(DBOutput::StatementComplete(n));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns.len()],
            rows,
        })
    }
}

#[test]
fn golden_sql_files() {
    let server = TestServer::start();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        // Each file gets a database of its own, named after it.
        let db = f.file_stem().unwrap().to_string_lossy().replace('-', "_");
        let mut runner = sqllogictest::Runner::new(|| {
            let db = db.clone();
            let server = &server;
            async move { Ok(Http { server, db }) }
        });
        if let Err(e) = runner.run_file(f) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
