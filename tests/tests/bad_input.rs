//! Bad input gets a clear error naming what and where, and valid data in the
//! same request is kept. Nothing takes the server down.

use std::io::Write;

use rand::{Rng, SeedableRng};
use sluice_tests::TestServer;

fn json(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

#[test]
fn malformed_lines_and_type_conflicts_keep_the_valid_lines() {
    let s = TestServer::start();
    let body = "m,t=a v=1 1\n\
                this is not line protocol\n\
                m,t=b v=2 2\n\
                m,t=c v=\"text\" 3\n\
                m,t=d v=4i 4\n\
                m,t=e v=5 5\n\
                m time=1 6\n";
    let (status, doc) = json(s.write("bad", body));
    assert_eq!(status, 400);
    assert_eq!(doc["lines_written"], 3);
    assert_eq!(doc["lines_rejected"], 4);
    let lines: Vec<i64> = doc["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4, 5, 7]);
    let reason = doc["rejected"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`v`") && reason.contains("float"),
        "{reason}"
    );
    let rows = s.rows("bad", "SELECT t, v FROM m ORDER BY t");
    assert_eq!(
        rows,
        vec![
            vec![serde_json::json!("a"), serde_json::json!(1.0)],
            vec![serde_json::json!("b"), serde_json::json!(2.0)],
            vec![serde_json::json!("e"), serde_json::json!(5.0)],
        ]
    );
}

#[test]
fn garbage_bodies_and_oversized_requests() {
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__MAX_BODY_BYTES", "1048576")]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20 {
        let len = rng.gen_range(1..50_000);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let r = s
            .client
            .post(s.url("/write?db=junk"))
            .body(junk)
            .send()
            .unwrap();
        assert!(
            r.status().as_u16() == 400 || r.status().as_u16() == 204,
            "random bytes gave {}",
            r.status()
        );
    }
    // Over the limit, plain.
    let big = "m v=1\n".repeat(200_000);
    let r = s
        .client
        .post(s.url("/write?db=junk"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Over the limit once inflated (a small gzip bomb).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b'a'; 8 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let r = s
        .client
        .post(s.url("/write?db=junk"))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Broken gzip.
    let r = s
        .client
        .post(s.url("/write?db=junk"))
        .header("Content-Encoding", "gzip")
        .body("definitely not gzip")
        .send()
        .unwrap();
    let (status, doc) = json(r);
    assert_eq!(status, 400);
    assert!(doc["error"].as_str().unwrap().contains("gzip"));
    // Parameters.
    let (status, doc) = json(s.client.post(s.url("/write")).body("m v=1").send().unwrap());
    assert_eq!(status, 400);
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("database is required"));
    let (status, _) = json(
        s.client
            .post(s.url("/write?db=x&precision=fortnight"))
            .body("m v=1")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);
    // Still alive and correct.
    assert_eq!(s.write("ok", "m v=1 1").status().as_u16(), 204);
    assert_eq!(s.count("ok", "m"), 1);
}

#[test]
fn query_errors_say_what_went_wrong() {
    let s = TestServer::start();
    assert_eq!(s.write("q", "m v=1 1").status().as_u16(), 204);
    let post = |db: &str, sql: &str| {
        json(
            s.client
                .post(s.url("/api/v1/sql"))
                .json(&serde_json::json!({"db": db, "sql": sql}))
                .send()
                .unwrap(),
        )
    };
    let (status, doc) = post("nope", "SELECT 1");
    assert_eq!(status, 404);
    assert!(doc["error"].as_str().unwrap().contains("nope"));
    let (status, doc) = post("q", "SELEKT * FROM m");
    assert_eq!(status, 400);
    assert!(doc["error"].as_str().unwrap().contains("SELEKT"));
    let (status, doc) = post("q", "SELECT * FROM missing_table");
    assert_eq!(status, 400);
    assert!(doc["error"].as_str().unwrap().contains("missing_table"));
    let (status, _) = post(
        "q",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
    );
    assert_eq!(status, 400, "DDL must be refused");
    let (status, _) = json(
        s.client
            .post(s.url("/api/v1/sql"))
            .body("{not json")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);
    let (status, _) = json(
        s.client
            .get(s.url("/api/v1/sql?db=q&q=SELECT%201&format=xml"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);
}

/// A query built to be as deep as it is long (an operator chain parses into
/// a tree of that depth) is refused with 54001 before it is parsed, over
/// HTTP and over the PostgreSQL port, and the server answers the next query.
/// Before the limit, `SELECT 1 + 1 + …` with 5,000 terms aborted the process
/// with a stack overflow.
#[test]
fn statements_too_deep_to_walk_are_refused_not_fatal() {
    let s = TestServer::start();
    assert_eq!(s.write("db", "m v=1 1\n").status(), 204);
    let chain = |n: usize| format!("SELECT 1{}", " + 1".repeat(n));
    let (status, body) = s.sql_raw("db", &chain(1_500));
    assert_eq!(status, 200, "{body}");
    for n in [2_001, 200_000] {
        let (status, body) = s.sql_raw("db", &chain(n));
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("54001") && body.contains("operators"),
            "{body}"
        );
    }
    let ors = format!("SELECT 1 WHERE {}", vec!["1 = 1"; 3_000].join(" OR "));
    let (status, body) = s.sql_raw("db", &ors);
    assert_eq!(status, 400, "{body}");
    // A long IN list is flat, and fine.
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let (status, body) = s.sql_raw("db", &format!("SELECT 1 WHERE 5 IN ({})", list.join(", ")));
    assert_eq!(status, 200, "{body}");
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &s.pg.port().to_string(),
            "-U",
            "sluice",
            "-d",
            "db",
            "-c",
        ])
        .arg(chain(100_000))
        .output();
    if let Ok(out) = out {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("operators"), "{err}");
    }
    assert_eq!(s.scalar("db", "SELECT 41 + 1"), Some(42));
}

/// Reads from `c` until `marker` has been seen or the peer closed; returns
/// whether the marker came.
fn read_until(c: &mut std::net::TcpStream, marker: u8) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) if buf[..n].contains(&marker) => return true,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_malformed_postgresql_message_ends_only_its_own_connection() {
    let s = TestServer::start();
    assert_eq!(s.write("plant", "m v=1 1").status(), 204);
    let mut c = std::net::TcpStream::connect(s.pg).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let params = b"user\0ops\0database\0plant\0\0";
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params);
    c.write_all(&startup).unwrap();
    assert!(read_until(&mut c, b'Z'), "no ReadyForQuery after startup");
    // A Parse message whose body is shorter than its fields: pgwire's
    // decoder panics on it (found by the fuzz target); the connection ends.
    c.write_all(b"P\0\0\0\x04").unwrap();
    assert!(!read_until(&mut c, b'Z'), "the connection went on");
    // Everyone else is served as before.
    let out = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-h"])
        .arg(s.pg.ip().to_string())
        .arg("-p")
        .arg(s.pg.port().to_string())
        .args(["-U", "ops", "-d", "plant", "-c", "SELECT count(*) FROM m"])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert_eq!(s.count("plant", "m"), 1);
}
