//! The PostgreSQL wire protocol with real clients: Debian's `psql`, which
//! speaks the simple query protocol and shows what PostgreSQL would;
//! psycopg 3 (`tests/pg/psycopg_client.py`), which speaks the extended
//! protocol (bound parameters, prepared statements, binary rows, pipelined
//! executemany); and the Hermitage isolation cases (`tests/pg/hermitage.py`),
//! interleaving the transactions of several psycopg connections.
//! `bash scripts/test.sh` installs postgresql-client and psycopg.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice_tests::TestServer;

/// Long enough for the slowest script on a loaded machine; a server that
/// stops answering fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Line protocol for `boiler`: units 7 and 8 at 2023-11-14 22:13:20 UTC,
/// unit 7 again a minute later. The psycopg script expects exactly these.
const BOILER: &str = "boiler,unit=7 temp=80 1700000000000000000\n\
                      boiler,unit=8 temp=70 1700000000000000000\n\
                      boiler,unit=7 temp=90.5 1700000060000000000\n";

fn write_boiler(s: &TestServer, db: &str) {
    let r = s.write(db, BOILER);
    assert_eq!(r.status().as_u16(), 204, "line protocol write to {db}");
}

/// Runs `cmd` with `input` on stdin; kills it after [`CLIENT_TIMEOUT`].
fn run(mut cmd: Command, input: &str) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name} ({e}): `bash scripts/test.sh` installs it"));
    // Dropping stdin after the write closes it, so the client sees EOF.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to stdin");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(CLIENT_TIMEOUT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{name}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{name} did not finish within {CLIENT_TIMEOUT:?}");
        }
    }
}

/// psql connected to database `db`, with output unaligned and tuples only:
/// one row a line, columns split by `|`.
fn psql_cmd(s: &TestServer, db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-q", "-h"])
        .arg(s.pg.ip().to_string())
        .arg("-p")
        .arg(s.pg.port().to_string())
        .args(["-U", "sluice", "-d", db])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGOPTIONS", "");
    cmd
}

/// Runs the psql script `sql` (statements one after another, as `-f`
/// does) in database `db`, stopping at the first error; returns (success,
/// stdout, stderr).
fn psql(s: &TestServer, db: &str, sql: &str) -> (bool, String, String) {
    let mut cmd = psql_cmd(s, db);
    cmd.args(["-v", "ON_ERROR_STOP=1", "-f", "-"]);
    let out = run(cmd, sql);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Like [`psql`], for a script that must succeed; returns its output.
fn psql_ok(s: &TestServer, db: &str, sql: &str) -> String {
    let (ok, out, err) = psql(s, db, sql);
    assert!(ok, "psql failed on {sql:?}:\n{err}");
    out
}

/// Runs `tests/pg/<script>` against the server's PostgreSQL port in `db`
/// and fails with its output unless it exits 0. The scripts print one line
/// per check, shown in the failure or, on success, with `--nocapture`.
fn python(s: &TestServer, script: &str, db: &str) {
    let psycopg = Command::new("python3")
        .args(["-c", "import psycopg"])
        .status();
    assert!(
        psycopg.is_ok_and(|st| st.success()),
        "python3 with psycopg 3 is needed: `bash scripts/test.sh` installs psycopg[binary]"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pg")
        .join(script);
    let mut cmd = Command::new("python3");
    cmd.arg(&path)
        .arg("--host")
        .arg(s.pg.ip().to_string())
        .arg("--port")
        .arg(s.pg.port().to_string())
        .args(["--dbname", db]);
    let out = run(cmd, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
}

#[test]
fn psql_reaches_both_engines_with_transactions_and_sqlstates() {
    let s = TestServer::start();
    write_boiler(&s, "plant");
    let out = psql_ok(
        &s,
        "plant",
        "CREATE TABLE devices (unit text PRIMARY KEY, site text NOT NULL);\n\
         INSERT INTO devices VALUES ('7', 'north'), ('8', 'south');\n\
         SELECT d.site, c.temp FROM boiler c JOIN devices d ON c.unit = d.unit ORDER BY d.site, c.temp;\n",
    );
    assert_eq!(out, "north|80\nnorth|90.5\nsouth|70");

    // A transaction spans statements of one connection; its writes are
    // visible to itself before COMMIT and to others after it.
    let out = psql_ok(
        &s,
        "plant",
        "BEGIN;\nUPDATE devices SET site = 'east' WHERE unit = '8';\n\
         SELECT site FROM devices WHERE unit = '8';\nCOMMIT;\n",
    );
    assert_eq!(out, "east");
    let out = psql_ok(&s, "plant", "SELECT site FROM devices WHERE unit = '8';");
    assert_eq!(out, "east");

    // An error inside a transaction aborts it (25P02) until ROLLBACK, and
    // nothing of it is kept.
    let (_, out, err) = psql(
        &s,
        "plant",
        "\\set ON_ERROR_STOP 0\n\\set VERBOSITY verbose\nBEGIN;\n\
         INSERT INTO devices VALUES ('9', 'west');\n\
         INSERT INTO devices VALUES ('7', 'dup');\n\
         SELECT 1;\nROLLBACK;\nSELECT count(*) FROM devices;\n",
    );
    assert!(err.contains("23505"), "{err}");
    assert!(err.contains("devices_pkey"), "{err}");
    assert!(err.contains("25P02"), "{err}");
    assert_eq!(out, "2");

    // An unknown table is 42P01, as in PostgreSQL.
    let (ok, _, err) = psql(
        &s,
        "plant",
        "\\set VERBOSITY verbose\nSELECT * FROM nowhere;",
    );
    assert!(!ok);
    assert!(err.contains("42P01"), "{err}");
}

/// The time-series table written over HTTP, read over the PostgreSQL port:
/// timestamps print as PostgreSQL prints a timestamptz in UTC, and
/// aggregates and time filters work as in the HTTP API.
#[test]
fn psql_reads_time_series_written_over_http() {
    let s = TestServer::start();
    write_boiler(&s, "plant");
    let out = psql_ok(
        &s,
        "plant",
        "SELECT time, unit, temp FROM boiler ORDER BY time, unit;\n\
         SELECT unit, count(*), max(temp) FROM boiler GROUP BY unit ORDER BY unit;\n\
         SELECT count(*) FROM boiler WHERE time > '2023-11-14T22:13:20Z';\n",
    );
    assert_eq!(
        out,
        "2023-11-14 22:13:20+00|7|80\n\
         2023-11-14 22:13:20+00|8|70\n\
         2023-11-14 22:14:20+00|7|90.5\n\
         7|2|90.5\n\
         8|1|70\n\
         1"
    );
}

/// PostgreSQL runs the statements of one simple Query message (psql's
/// `-c "a; b"`) as one implicit transaction unless they hold their own
/// BEGIN/COMMIT: when one fails, none of them is kept.
#[test]
fn psql_multi_statement_query_is_one_transaction() {
    let s = TestServer::start();
    psql_ok(&s, "app", "CREATE TABLE m (id integer PRIMARY KEY);");
    // `-c` sends its text as one Query message.
    let mut cmd = psql_cmd(&s, "app");
    cmd.arg("-c")
        .arg("INSERT INTO m VALUES (1); INSERT INTO m VALUES (2); INSERT INTO m VALUES (1)");
    let out = run(cmd, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("m_pkey"), "{err}");
    assert_eq!(
        psql_ok(&s, "app", "SELECT count(*) FROM m;"),
        "0",
        "rows kept from a multi-statement query that failed"
    );
}

/// COMMIT over the PostgreSQL port answers once the transaction is durable:
/// it survives SIGKILL, and the restarted server listens on the same port.
#[test]
fn psql_commits_survive_sigkill() {
    let mut s = TestServer::start();
    psql_ok(
        &s,
        "app",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL);\n\
         BEGIN;\nINSERT INTO orders (item) VALUES ('bolt'), ('nut');\nCOMMIT;\n",
    );
    s.kill9();
    s.restart();
    assert_eq!(
        psql_ok(&s, "app", "SELECT id, item FROM orders ORDER BY id;"),
        "1|bolt\n2|nut"
    );
}

#[test]
fn psycopg_parameters_transactions_and_sqlstates() {
    let s = TestServer::start();
    write_boiler(&s, "app");
    python(&s, "psycopg_client.py", "app");
}

#[test]
fn hermitage_anomalies_are_prevented() {
    let s = TestServer::start();
    python(&s, "hermitage.py", "hermitage");
}
