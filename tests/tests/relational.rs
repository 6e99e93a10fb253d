//! The relational store end to end: joins with time-series tables, and
//! committed transactions under concurrency and SIGKILL (a bank workload:
//! concurrent transfers with retries on serialization failures; money is
//! neither made nor lost, and every acknowledged transfer survives).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use sluice_tests::TestServer;

/// A statement that reads a time-series table twice (a self-join, a
/// subquery) reads one capture of it, even while writers add rows.
#[test]
fn a_statement_reads_one_state_of_a_time_series_table() {
    let s = Arc::new(TestServer::start());
    assert_eq!(s.write("plant", "meter,unit=0 kw=1 1\n").status(), 204);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut t = 2i64;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (0..50)
                    .map(|i| format!("meter,unit={} kw={i} {t}\n", i % 7))
                    .collect();
                assert_eq!(s.write("plant", &body).status(), 204);
                t += 1;
            }
            t
        })
    };
    let mut differences = Vec::new();
    let mut grew = 0;
    let mut last = 0;
    for _ in 0..60 {
        let rows = s.rows(
            "plant",
            "SELECT a.n, b.n FROM (SELECT count(*) AS n FROM meter) a, \
             (SELECT count(*) AS n FROM meter WHERE kw >= 0) b",
        );
        let (a, b) = (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap());
        if a != b {
            differences.push((a, b));
        }
        if a > last {
            grew += 1;
            last = a;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(grew > 5, "the writer did not move the table between reads");
    assert!(
        differences.is_empty(),
        "one statement saw two states of the table: {differences:?}"
    );
}

#[test]
fn relational_and_time_series_tables_join_in_one_statement() {
    let s = TestServer::start();
    let r = s.write(
        "plant",
        "boiler,unit=7 temp=80 1700000000000000000\n\
         boiler,unit=8 temp=70 1700000000000000000\n\
         boiler,unit=9 temp=60 1700000000000000000\n\
         boiler,unit=7 temp=90 1700000060000000000\n",
    );
    assert_eq!(r.status().as_u16(), 204);
    s.sql(
        "plant",
        "CREATE TABLE devices (unit text PRIMARY KEY, site text NOT NULL, active boolean NOT NULL)",
    );
    s.sql(
        "plant",
        "INSERT INTO devices VALUES ('7', 'north', true), ('8', 'south', true), ('9', 'north', false)",
    );
    let rows = s.rows(
        "plant",
        "SELECT d.site, avg(c.temp), count(*) FROM boiler c JOIN devices d ON c.unit = d.unit \
         WHERE d.active GROUP BY d.site ORDER BY d.site",
    );
    assert_eq!(
        rows,
        vec![
            vec![Value::from("north"), Value::from(85.0), Value::from(2)],
            vec![Value::from("south"), Value::from(70.0), Value::from(1)],
        ]
    );
    // A relational name cannot shadow a time-series table.
    let (status, body) = s.sql_raw("plant", "CREATE TABLE boiler (a int PRIMARY KEY)");
    assert_eq!(status, 409, "{body}");
    // information_schema lists both kinds.
    let tables = s.rows(
        "plant",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'plant' ORDER BY table_name",
    );
    assert_eq!(
        tables,
        vec![vec![Value::from("boiler")], vec![Value::from("devices")]]
    );
}

const ACCOUNTS: i64 = 8;
const START: i64 = 1000;
const AMOUNT: i64 = 7;

fn transfer(
    client: &reqwest::blocking::Client,
    url: &str,
    id: &str,
    a: i64,
    b: i64,
) -> Option<u16> {
    let sql = format!(
        "BEGIN; \
         UPDATE accounts SET balance = balance - {AMOUNT} WHERE id = {a}; \
         UPDATE accounts SET balance = balance + {AMOUNT} WHERE id = {b}; \
         INSERT INTO transfers (id, src, dst) VALUES ('{id}', {a}, {b}); \
         COMMIT"
    );
    let r = client
        .post(url)
        .json(&serde_json::json!({"db": "bank", "sql": sql}))
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    Some(r.status().as_u16())
}

fn balances(s: &TestServer) -> Vec<i64> {
    s.rows("bank", "SELECT balance FROM accounts ORDER BY id")
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

#[test]
fn bank_transfers_stay_consistent_through_sigkill() {
    let mut s = TestServer::start();
    s.sql(
        "bank",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)",
    );
    s.sql(
        "bank",
        "CREATE TABLE transfers (id text PRIMARY KEY, src bigint NOT NULL REFERENCES accounts (id), dst bigint NOT NULL REFERENCES accounts (id))",
    );
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {START})")).collect();
    s.sql(
        "bank",
        &format!("INSERT INTO accounts VALUES {}", values.join(", ")),
    );

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let conflicts = Arc::new(Mutex::new(0u64));
    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..4 {
            let (stop, acked, conflicts, url) = (
                stop.clone(),
                acked.clone(),
                conflicts.clone(),
                s.url("/api/v1/sql"),
            );
            threads.push(std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut rng = rand::thread_rng();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = rng.gen_range(0..ACCOUNTS);
                    let b = (a + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                    let id = format!("r{round}w{w}n{n}");
                    n += 1;
                    // Retry serialization failures until it commits or the
                    // server goes away.
                    loop {
                        match transfer(&client, &url, &id, a, b) {
                            Some(200) => {
                                acked.lock().unwrap().push(id);
                                break;
                            }
                            Some(409) => *conflicts.lock().unwrap() += 1,
                            _ => return,
                        }
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(
            1500 + rand::thread_rng().gen_range(0..1000),
        ));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        s.restart();
        let bal = balances(&s);
        assert_eq!(
            bal.iter().sum::<i64>(),
            ACCOUNTS * START,
            "money appeared or vanished: {bal:?}"
        );
        // Replaying the transfer log from the start gives the balances: no
        // transfer was half applied.
        let mut expect = vec![START; ACCOUNTS as usize];
        let mut present = std::collections::HashSet::new();
        for r in s.rows("bank", "SELECT id, src, dst FROM transfers") {
            let (src, dst) = (r[1].as_i64().unwrap(), r[2].as_i64().unwrap());
            expect[src as usize] -= AMOUNT;
            expect[dst as usize] += AMOUNT;
            present.insert(r[0].as_str().unwrap().to_string());
        }
        assert_eq!(bal, expect);
        let acked = acked.lock().unwrap();
        let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "acknowledged transfers lost after SIGKILL: {lost:?}"
        );
        assert!(!acked.is_empty(), "no transfer committed in round {round}");
    }
    eprintln!(
        "bank: {} transfers acknowledged, {} serialization failures retried",
        acked.lock().unwrap().len(),
        conflicts.lock().unwrap()
    );
}

/// A statement about one row by its primary key runs without a plan; it
/// answers what the general path answers (the same statement with a
/// redundant `AND true` takes it), columns and types included, over HTTP
/// and over the PostgreSQL port.
#[test]
fn key_lookups_skip_the_planner_and_answer_as_it_would() {
    let s = TestServer::start();
    s.sql(
        "point",
        "CREATE TABLE acc (aid integer PRIMARY KEY, v integer, t text, r double precision)",
    );
    s.sql(
        "point",
        "INSERT INTO acc VALUES (1, 10, 'a', 0.5), (2, NULL, 'b', NULL)",
    );
    let counted = || s.metric("sluice_sql_point_statements_total");
    let before = counted();
    let queries = [
        "SELECT v, t FROM acc WHERE aid = 1",
        "SELECT * FROM acc WHERE aid = 2",
        "SELECT x.r AS rate, x.aid FROM acc x WHERE x.aid = 1",
        "SELECT v FROM acc WHERE aid = 7",
    ];
    for q in queries {
        let fast = s.sql("point", q);
        let general = s.sql("point", &format!("{q} AND true"));
        assert_eq!(fast["columns"], general["columns"], "{q}");
        assert_eq!(fast["rows"], general["rows"], "{q}");
        let (ok, by_pg) = sluice_tests::clients::psql(&s, "sluice", None, "point", q);
        let (ok2, by_pg_general) =
            sluice_tests::clients::psql(&s, "sluice", None, "point", &format!("{q} AND true"));
        assert!(ok && ok2, "{by_pg}{by_pg_general}");
        assert_eq!(by_pg, by_pg_general, "{q}");
    }
    s.sql("point", "UPDATE acc SET v = v + 5, t = 'c' WHERE aid = 1");
    s.sql("point", "UPDATE acc SET v = v + 5 WHERE aid = 1 AND true");
    s.sql("point", "INSERT INTO acc (aid, v) VALUES (3, -1)");
    assert_eq!(
        s.rows("point", "SELECT aid, v, t FROM acc ORDER BY aid"),
        vec![
            vec![Value::from(1), Value::from(20), Value::from("c")],
            vec![Value::from(2), Value::Null, Value::from("b")],
            vec![Value::from(3), Value::from(-1), Value::Null],
        ]
    );
    // Four reads over HTTP and four over psql, one update, one insert.
    assert_eq!(counted() - before, 10.0);
}
