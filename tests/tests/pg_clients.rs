//! The PostgreSQL wire protocol with a real client: Debian's `psql`, which
//! speaks the simple query protocol and shows what PostgreSQL would.

use std::process::Command;

use sluice_tests::TestServer;

/// Runs `sql` through psql in database `db`; returns (success, stdout, stderr).
fn psql(s: &TestServer, db: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(s.pg.port().to_string())
        .args(["-U", "sluice", "-d", db])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGOPTIONS", "")
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(sql);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

trait WithStdin {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output;
}

impl WithStdin for Command {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("psql is not installed: `bash scripts/test.sh` installs postgresql-client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to psql");
        child.wait_with_output().expect("psql output")
    }
}

#[test]
fn psql_reaches_both_engines_with_transactions_and_sqlstates() {
    let s = TestServer::start();
    let r = s.write(
        "plant",
        "boiler,unit=7 temp=80 1700000000000000000\nboiler,unit=8 temp=70 1700000000000000000\n",
    );
    assert_eq!(r.status().as_u16(), 204);
    let (ok, out, err) = psql(
        &s,
        "plant",
        "CREATE TABLE devices (unit text PRIMARY KEY, site text NOT NULL);\n\
         INSERT INTO devices VALUES ('7', 'north'), ('8', 'south');\n\
         SELECT d.site, c.temp FROM boiler c JOIN devices d ON c.unit = d.unit ORDER BY d.site;\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "north|80\nsouth|70");

    // A transaction spans statements of one connection; its writes are
    // visible to itself before COMMIT and to others after it.
    let (ok, out, err) = psql(
        &s,
        "plant",
        "BEGIN;\nUPDATE devices SET site = 'east' WHERE unit = '8';\n\
         SELECT site FROM devices WHERE unit = '8';\nCOMMIT;\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "east");
    let (_, out, _) = psql(&s, "plant", "SELECT site FROM devices WHERE unit = '8';");
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
