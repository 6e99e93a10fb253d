//! An online backup while points and bank transfers keep coming, then a
//! restore into a new data directory: the restored node holds every point
//! acknowledged before the backup began, nothing that was never sent, and
//! relational state at one transaction boundary (the bank's total holds).

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::{sluice_bin, TestServer};

const T0: i64 = 1_700_000_000_000_000_000;
const BATCH: u64 = 50;
const ACCOUNTS: i64 = 10;

fn restore(from: &std::path::Path, to: &std::path::Path) -> (bool, String) {
    let out = Command::new(sluice_bin())
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data-dir")
        .arg(to)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_backup_taken_under_load_restores_every_acknowledged_point_and_a_consistent_bank() {
    let mut s = TestServer::start();
    s.sql(
        "bank",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)",
    );
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, 100)")).collect();
    s.sql(
        "bank",
        &format!("INSERT INTO accounts VALUES {}", values.join(", ")),
    );
    s.sql("bank", "CREATE USER backup_probe WITH PASSWORD 'probe-pw'");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let url = s.url("/write?db=plant");
    let writer = {
        let (stop, acked, sent) = (stop.clone(), acked.clone(), sent.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (n..n + BATCH)
                    .map(|k| format!("pts,host=h{} seq={k}i {}\n", k % 5, T0 + k as i64))
                    .collect();
                sent.store(n + BATCH, Ordering::SeqCst);
                let r = c.post(&url).body(body).send().unwrap();
                assert_eq!(r.status(), 204);
                n += BATCH;
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    let sql_url = s.url("/api/v1/sql");
    let transfers = Arc::new(AtomicU64::new(0));
    let bank = {
        let (stop, transfers) = (stop.clone(), transfers.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = (i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS);
                i += 1;
                let sql = format!(
                    "BEGIN; UPDATE accounts SET balance = balance - 3 WHERE id = {from}; \
                     UPDATE accounts SET balance = balance + 3 WHERE id = {to}; COMMIT;"
                );
                let r = c
                    .post(&sql_url)
                    .json(&serde_json::json!({"db": "bank", "sql": sql}))
                    .send()
                    .unwrap();
                // A serialization conflict (409, 40001) is retried by the next turn.
                assert!(
                    r.status() == 200 || r.status() == 409,
                    "{}",
                    r.text().unwrap()
                );
                transfers.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup-1");
    let before = acked.load(Ordering::SeqCst);
    let r = s
        .client
        .post(s.url("/api/v1/backup"))
        .json(&serde_json::json!({ "path": target }))
        .send()
        .unwrap();
    let status = r.status();
    let info: serde_json::Value = r.json().unwrap();
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["shards"].as_array().map(Vec::len), Some(2), "{info}");
    assert!(info["bytes"].as_u64().unwrap() > 0);
    // A second backup into the same place is refused.
    let again = s
        .client
        .post(s.url("/api/v1/backup"))
        .json(&serde_json::json!({ "path": target }))
        .send()
        .unwrap();
    assert_eq!(again.status(), 400);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    bank.join().unwrap();
    assert!(
        acked.load(Ordering::SeqCst) > before,
        "writes went on during the backup"
    );
    assert!(transfers.load(Ordering::Relaxed) > 0);
    let total_sent = sent.load(Ordering::SeqCst);
    s.kill9();

    let restored = tempfile::tempdir().unwrap();
    let (ok, out) = restore(&target, &restored.path().join("data"));
    assert!(ok, "{out}");
    assert!(out.contains("--shards 2"), "{out}");
    let (ok, out) = restore(&target, &restored.path().join("data"));
    assert!(!ok && out.contains("not empty"), "{out}");
    let (ok, out) = restore(dir.path(), &restored.path().join("other"));
    assert!(!ok && out.contains("backup.json"), "{out}");

    let r = TestServer::start_in(restored, &[]);
    let n = r.scalar(
        "plant",
        &format!("SELECT count(*) FROM pts WHERE seq < {before}"),
    );
    assert_eq!(
        n,
        Some(before as i64),
        "points acknowledged before the backup"
    );
    let distinct = r
        .scalar("plant", "SELECT count(DISTINCT seq) FROM pts")
        .unwrap();
    let all = r.scalar("plant", "SELECT count(*) FROM pts").unwrap();
    assert_eq!(distinct, all, "a point appears twice");
    let max = r.scalar("plant", "SELECT max(seq) FROM pts").unwrap();
    eprintln!(
        "acknowledged before the backup: {before}; restored: {all}; sent in all: {total_sent}; transfers: {}; backup: {info}",
        transfers.load(Ordering::Relaxed)
    );
    assert!((max as u64) < total_sent, "a point that was never sent");
    let rows = r.rows(
        "bank",
        "SELECT sum(balance), count(*), min(balance) >= 100 - 3 * 1000000 FROM accounts",
    );
    assert_eq!(rows[0][0], 100 * ACCOUNTS, "the bank's total");
    assert_eq!(rows[0][1], ACCOUNTS);
    let roles = r.rows("bank", "SELECT name FROM system.roles");
    assert_eq!(roles, vec![vec![serde_json::json!("backup_probe")]]);
    // The restored node takes writes and serves them with the old ones.
    assert_eq!(
        r.write(
            "plant",
            &format!("pts,host=h9 seq={}i {}", total_sent + 1, T0 - 1)
        )
        .status(),
        204
    );
    assert_eq!(
        r.scalar("plant", "SELECT count(*) FROM pts").unwrap(),
        all + 1
    );
}
