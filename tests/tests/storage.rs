//! Chunks end to end: flush, compaction, restart, dedup policies, retention,
//! statistics-answered aggregates, corruption and backpressure, against the
//! real binary.

use std::time::Duration;

use serde_json::Value;
use sluice_tests::TestServer;

const T0: i64 = 1_700_000_000_000_000_000;
const MIN: i64 = 60_000_000_000;

fn lines(hosts: usize, points: usize, start: i64) -> String {
    let mut s = String::new();
    for p in 0..points {
        for h in 0..hosts {
            let t = start + p as i64 * MIN;
            s.push_str(&format!(
                "cpu,host=h{h},rack=r{} usage={}.{},load={}i {t}\n",
                h % 3,
                (p * 7 + h) % 100,
                p % 10,
                p + h
            ));
        }
    }
    s
}

fn all(s: &TestServer, db: &str, table: &str) -> Vec<Vec<Value>> {
    s.rows(db, &format!("SELECT * FROM {table} ORDER BY host, time"))
}

#[test]
fn flush_compaction_and_restart_keep_every_row() {
    let mut s = TestServer::start();
    assert_eq!(s.write("db", &lines(10, 50, T0)).status(), 204);
    let before = all(&s, "db", "cpu");
    assert_eq!(before.len(), 500);
    s.flush();
    let chunks = s.rows(
        "db",
        "SELECT count(*), sum(rows) FROM system.chunks WHERE \"table\" = 'cpu'",
    );
    assert!(chunks[0][0].as_i64().unwrap() >= 1, "{chunks:?}");
    assert_eq!(chunks[0][1].as_i64(), Some(500));
    assert_eq!(all(&s, "db", "cpu"), before, "after flush");

    // More data in the same partition: a second chunk, then compaction.
    assert_eq!(s.write("db", &lines(10, 50, T0 + 50 * MIN)).status(), 204);
    let before = all(&s, "db", "cpu");
    s.flush();
    assert_eq!(all(&s, "db", "cpu"), before, "after compaction");
    let per_shard = s.rows(
        "db",
        "SELECT shard, count(*) FROM system.chunks WHERE \"table\" = 'cpu' GROUP BY shard",
    );
    for r in &per_shard {
        assert_eq!(
            r[1].as_i64(),
            Some(1),
            "one chunk per shard after compaction: {per_shard:?}"
        );
    }
    assert!(s.metric("sluice_compactions_total") >= 1.0);

    s.terminate();
    s.restart();
    assert_eq!(all(&s, "db", "cpu"), before, "after restart");

    // Unflushed rows replay from the log on top of the chunks after SIGKILL.
    assert_eq!(s.write("db", &lines(10, 5, T0 + 100 * MIN)).status(), 204);
    let before = all(&s, "db", "cpu");
    s.kill9();
    s.restart();
    assert_eq!(all(&s, "db", "cpu"), before, "after SIGKILL");
}

#[test]
fn flushed_log_segments_are_deleted() {
    let mut s = TestServer::start_with_env(&[("SLUICE_STORAGE__LOG_SEGMENT_BYTES", "1048576")]);
    for round in 0..6 {
        assert_eq!(
            s.write("db", &lines(50, 400, T0 + round * 400 * MIN))
                .status(),
            204
        );
        s.flush();
    }
    assert!(
        s.metric("sluice_log_segments_removed_total") >= 1.0,
        "{}",
        s.log()
    );
    let before = all(&s, "db", "cpu");
    assert_eq!(before.len(), 6 * 50 * 400);
    s.kill9();
    s.restart();
    assert_eq!(all(&s, "db", "cpu"), before);
}

#[test]
fn dedup_policies_across_buffer_and_chunks() {
    let s = TestServer::start();
    for (table, policy) in [("ov", "override"), ("mg", "merge"), ("ds", "discard")] {
        // First write creates the table; the policy applies to what follows.
        assert_eq!(
            s.write("db", &format!("{table},host=a a=1,b=1 {T0}\n"))
                .status(),
            204
        );
        let r = s.rows(
            "db",
            &format!("ALTER TABLE {table} SET (dedup = '{policy}')"),
        );
        assert_eq!(r[0][0], "ok");
        s.flush();
        // Same point again: one field only, in the buffer over a chunk.
        assert_eq!(
            s.write("db", &format!("{table},host=a a=2 {T0}\n"))
                .status(),
            204
        );
        // And a duplicate inside the buffer.
        assert_eq!(
            s.write("db", &format!("{table},host=a a=3 {T0}\n"))
                .status(),
            204
        );
    }
    let check = |stage: &str| {
        let get = |t: &str| s.rows("db", &format!("SELECT a, b FROM {t}"));
        assert_eq!(
            get("ov"),
            vec![vec![Value::from(3.0), Value::Null]],
            "override {stage}"
        );
        assert_eq!(
            get("mg"),
            vec![vec![Value::from(3.0), Value::from(1.0)]],
            "merge {stage}"
        );
        assert_eq!(
            get("ds"),
            vec![vec![Value::from(1.0), Value::from(1.0)]],
            "discard {stage}"
        );
    };
    check("before flush");
    s.flush();
    check("after flush and compaction");
    let policies = s.rows(
        "db",
        "SELECT \"table\", dedup FROM system.tables ORDER BY 1",
    );
    assert_eq!(
        policies,
        vec![
            vec![Value::from("ds"), Value::from("discard")],
            vec![Value::from("mg"), Value::from("merge")],
            vec![Value::from("ov"), Value::from("override")],
        ]
    );
}

#[test]
fn retention_drops_old_partitions() {
    let s = TestServer::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let day = 86_400_000_000_000i64;
    let body = format!(
        "m,host=a v=1 {}\nm,host=a v=2 {}\n",
        now - 10 * day,
        now - 60_000_000_000
    );
    assert_eq!(s.write("db", &body).status(), 204);
    s.flush();
    assert_eq!(s.count("db", "m"), 2);
    let r = s.rows("db", "ALTER TABLE m SET (retention = '3d')");
    assert_eq!(r[0][0], "ok");
    s.flush();
    assert_eq!(
        s.rows("db", "SELECT v FROM m"),
        vec![vec![Value::from(2.0)]]
    );
    assert_eq!(
        s.rows(
            "db",
            "SELECT retention FROM system.tables WHERE \"table\" = 'm'"
        ),
        vec![vec![Value::from("3d")]]
    );
    let (status, body) = s.sql_raw("db", "ALTER TABLE m SET (retention = 'forever')");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("retention"), "{body}");
    let (status, body) = s.sql_raw("db", "ALTER TABLE nope SET (dedup = 'merge')");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn aggregates_come_from_statistics_and_match_a_full_scan() {
    let s = TestServer::start();
    assert_eq!(s.write("db", &lines(20, 100, T0)).status(), 204);
    s.flush();
    // Some rows only in the buffer, too.
    assert_eq!(s.write("db", &lines(20, 10, T0 + 100 * MIN)).status(), 204);
    let aggs = "count(*), count(usage), min(usage), max(usage), sum(load), avg(usage), min(time), max(time)";
    for filter in [
        String::new(),
        format!(
            "WHERE time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({})",
            T0 + 10 * MIN,
            T0 + 105 * MIN
        ),
    ] {
        let q = format!("SELECT {aggs} FROM cpu {filter}");
        let plan = s.explain("db", &q);
        assert!(plan.contains("SluiceStatsAggregateExec"), "{plan}");
        let fast = s.rows("db", &q);
        // `host IS NOT NULL OR host IS NULL` is true for every row but not a
        // time predicate, so the rule stays out and the scan decodes all.
        let glue = if filter.is_empty() { "WHERE" } else { "AND" };
        let slow_q =
            format!("SELECT {aggs} FROM cpu {filter} {glue} (host IS NOT NULL OR host IS NULL)");
        assert!(!s
            .explain("db", &slow_q)
            .contains("SluiceStatsAggregateExec"));
        let slow = s.rows("db", &slow_q);
        assert_eq!(fast.len(), 1);
        for (i, (a, b)) in fast[0].iter().zip(&slow[0]).enumerate() {
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if i == 5 => {
                    assert!((x - y).abs() <= 1e-9 * y.abs(), "{q}: {a} vs {b}")
                }
                _ => assert_eq!(a, b, "{q}: column {i}"),
            }
        }
    }
    assert!(s.metric("sluice_query_chunks_from_stats_total") >= 1.0);
}

#[test]
fn corrupt_chunk_is_reported_and_other_tables_stay_readable() {
    let mut s = TestServer::start_with_env(&[("SLUICE_ENGINE__SHARDS", "1")]);
    assert_eq!(s.write("db", &lines(5, 20, T0)).status(), 204);
    assert_eq!(s.write("db", "other,host=a v=1 1\n").status(), 204);
    s.flush();
    let files: Vec<(String, i64)> = s
        .rows("db", "SELECT \"table\", chunk_id FROM system.chunks")
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    let (_, id) = files
        .iter()
        .find(|(t, _)| t == "cpu")
        .expect("cpu chunk")
        .clone();
    s.terminate();
    let path = s
        .data_dir
        .join("shard-0")
        .join("chunks")
        .join(format!("{id:010}.chk"));
    let mut bytes = std::fs::read(&path).expect("chunk file");
    // A byte in the data blocks (not the footer): the footer still opens.
    bytes[16] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    s.restart();
    let (status, body) = s.sql_raw("db", "SELECT * FROM cpu");
    assert!(status >= 400 || body.contains("error"), "{status} {body}");
    assert!(
        body.contains(&format!("{id:010}.chk")),
        "error names the file: {body}"
    );
    assert_eq!(
        s.rows("db", "SELECT v FROM other"),
        vec![vec![Value::from(1.0)]]
    );

    // A destroyed footer: the chunk is listed as broken, the server serves.
    s.terminate();
    let len = bytes.len();
    bytes[len - 20..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    s.restart();
    let broken = s.rows(
        "db",
        "SELECT chunk_id, error FROM system.chunks WHERE error IS NOT NULL",
    );
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0][0].as_i64(), Some(id));
    assert_eq!(s.count("db", "other"), 1);
}

#[test]
fn a_write_flood_gets_backpressure_not_an_oom() {
    let s = TestServer::start_with_env(&[
        ("SLUICE_STORAGE__FLUSH_BYTES", "262144"),
        ("SLUICE_STORAGE__MAX_BUFFER_BYTES", "262144"),
    ]);
    let mut acked = 0usize;
    let mut refused = 0usize;
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let url = s.url("/write?db=flood");
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                let (mut ok, mut busy) = (0, 0);
                for b in 0..40 {
                    let body = lines(50, 20, T0 + ((w * 40 + b) * 20) as i64 * MIN);
                    loop {
                        let r = c.post(&url).body(body.clone()).send().expect("write");
                        match r.status().as_u16() {
                            204 => {
                                ok += 1000;
                                break;
                            }
                            503 => {
                                assert!(r.headers().get("retry-after").is_some());
                                busy += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            other => panic!(
                                "unexpected status {other}: {}",
                                r.text().unwrap_or_default()
                            ),
                        }
                    }
                }
                (ok, busy)
            })
        })
        .collect();
    for t in threads {
        let (ok, busy) = t.join().unwrap();
        acked += ok;
        refused += busy;
    }
    assert_eq!(s.count("flood", "cpu") as usize, acked);
    eprintln!("flood: {acked} rows acknowledged, {refused} writes refused with 503");
    assert!(refused > 0, "a 256 KiB limit should have pushed back");
}

#[test]
fn latest_returns_the_newest_row_of_every_series() {
    let s = TestServer::start();
    assert_eq!(s.write("db", &lines(10, 30, T0)).status(), 204);
    s.flush();
    // Hosts 0–4 get newer points in the buffer; a late point for h7 must not win.
    assert_eq!(s.write("db", &lines(5, 3, T0 + 30 * MIN)).status(), 204);
    assert_eq!(
        s.write(
            "db",
            &format!("cpu,host=h7,rack=r1 usage=0.5,load=1i {}\n", T0 - MIN)
        )
        .status(),
        204
    );
    let fast = s.rows(
        "db",
        "SELECT host, rack, usage, load, time FROM latest('cpu') ORDER BY host",
    );
    let slow = s.rows(
        "db",
        "SELECT DISTINCT ON (host) host, rack, usage, load, time FROM cpu ORDER BY host, time DESC",
    );
    assert_eq!(fast.len(), 10);
    assert_eq!(fast, slow);
    let (status, body) = s.sql_raw("db", "SELECT * FROM latest('nope')");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nope"), "{body}");
    // A table without tags is one series: its newest row, from the buffer
    // and from chunks alike.
    assert_eq!(
        s.write("db", "plain v=1 1000\nplain v=3 3000").status(),
        204
    );
    s.flush();
    assert_eq!(s.write("db", "plain v=2 2000").status(), 204);
    assert_eq!(
        s.rows("db", "SELECT v FROM latest('plain')"),
        vec![vec![serde_json::json!(3.0)]]
    );
}
