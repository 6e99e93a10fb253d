//! The HTTP API as clients use it: writes, SQL formats, shutdown and restart.

use sluice_tests::TestServer;

#[test]
fn write_then_query_in_every_format() {
    let s = TestServer::start();
    let r = s.write(
        "db1",
        "cpu,host=a,region=eu usage=1.5,n=3i,ok=true,msg=\"hi\",u=7u 1700000000000000000\n\
         cpu,host=b usage=2.5 1700000000000000001\n",
    );
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().unwrap_or_default());

    let doc = s.sql("db1", "SELECT * FROM cpu ORDER BY time");
    let cols: Vec<(String, String)> = doc["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        ["time", "host", "region", "msg", "n", "ok", "u", "usage"]
    );
    assert_eq!(cols[4].1, "Int64");
    assert_eq!(cols[6].1, "UInt64");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "2023-11-14T22:13:20Z");
    assert_eq!(rows[0][1], "a");
    assert_eq!(rows[0][3], "hi");
    assert_eq!(rows[0][4], 3);
    assert_eq!(rows[0][5], true);
    assert_eq!(rows[0][6], 7);
    assert_eq!(rows[0][7], 1.5);
    assert_eq!(rows[1][2], serde_json::Value::Null);

    let csv = s
        .client
        .get(s.url(
            "/api/v1/sql?db=db1&q=SELECT%20host,usage%20FROM%20cpu%20ORDER%20BY%20host&format=csv",
        ))
        .send()
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(csv.text().unwrap(), "host,usage\na,1.5\nb,2.5\n");

    let jsonl = s
        .client
        .get(s.url("/api/v1/sql?db=db1&q=SELECT%20host%20FROM%20cpu%20ORDER%20BY%20host"))
        .header("Accept", "application/x-ndjson")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(jsonl, "{\"host\":\"a\"}\n{\"host\":\"b\"}\n");

    let arrow = s
        .client
        .post(s.url("/api/v1/sql"))
        .json(&serde_json::json!({"db": "db1", "sql": "SELECT usage FROM cpu", "format": "arrow"}))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    // An Arrow IPC stream opens with a continuation marker and a schema message.
    assert_eq!(&arrow[..4], &[0xff, 0xff, 0xff, 0xff]);

    let info = s.rows(
        "db1",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'db1'",
    );
    assert_eq!(info, vec![vec![serde_json::json!("cpu")]]);

    // A time predicate selects exactly the matching rows.
    let rows = s.rows(
        "db1",
        "SELECT host FROM cpu WHERE time > '2023-11-14T22:13:20Z'",
    );
    assert_eq!(rows, vec![vec![serde_json::json!("b")]]);
}

#[test]
fn tcp_line_protocol_and_clean_restart() {
    let mut s = TestServer::start();
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!("mem,host=h{} used={i}i {}\n", i % 7, 1_000 + i));
    }
    s.tcp_send(body.as_bytes());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ok = s
            .client
            .get(s.url("/api/v1/sql?db=default&q=SELECT%20count(*)%20FROM%20mem"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .map(|v| v["rows"][0][0] == 1000)
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TCP lines never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        s.terminate(),
        "SIGTERM must end the server cleanly:\n{}",
        s.log()
    );
    s.restart();
    assert_eq!(s.count("default", "mem"), 1000);
    let rows = s.rows("default", "SELECT sum(used) FROM mem");
    assert_eq!(rows[0][0], 499500);
}
