//! `/api/v1/status`, `/api/v1/schema` and the console's files: the status
//! agrees with `/metrics` and with what SQL counts, after writes through
//! every front end that a test can drive here (HTTP, TCP, MQTT).

use std::time::Duration;

use rumqttc::{Client, MqttOptions, QoS};
use serde_json::Value;
use sluice_tests::TestServer;

fn get_json(s: &TestServer, path: &str) -> Value {
    let r = s.client.get(s.url(path)).send().expect(path);
    assert_eq!(r.status(), 200, "{path}");
    r.json().expect("JSON")
}

fn frontend<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["ingest"]["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no front end {name} in {status}"))
}

#[test]
fn status_agrees_with_metrics_and_with_sql() {
    let s = TestServer::start();
    // HTTP: two rows and one bad line.
    let r = s.write("plant", "m,unit=a v=1 1\nm,unit=b v=2 2\nm,unit=c 3");
    assert_eq!(r.status(), 400);
    // TCP: five rows into its database.
    let tcp: String = (0..5)
        .map(|i| format!("t,k=x v={i} {}\n", i + 10))
        .collect();
    s.tcp_send(tcp.as_bytes());
    // MQTT: four rows and one dead letter.
    let mut o = MqttOptions::new("status-test", s.mqtt.ip().to_string(), s.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(o, 10);
    std::thread::spawn(move || for _ in conn.iter() {});
    client
        .publish(
            "ingest/site",
            QoS::AtLeastOnce,
            false,
            "e,d=1 kw=1 1\ne,d=2 kw=2 1",
        )
        .unwrap();
    client
        .publish(
            "ingest/site",
            QoS::AtLeastOnce,
            false,
            "e,d=3 kw=3 1\ne,d=4 kw=4 1",
        )
        .unwrap();
    client
        .publish("ingest/site", QoS::AtLeastOnce, false, "garbage")
        .unwrap();
    let timeout = Duration::from_secs(30);
    s.wait_scalar("default", "SELECT count(*) FROM t", 5, timeout);
    s.wait_scalar("site", "SELECT count(*) FROM e", 4, timeout);
    s.wait_scalar(
        "site",
        "SELECT count(*) FROM system.dead_letters",
        1,
        timeout,
    );

    // Rows are readable once in the shard's buffer, a moment before the
    // front end that wrote them counts them.
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        let st = get_json(&s, "/api/v1/status");
        let settled = frontend(&st, "tcp")["rows"] == 5 && frontend(&st, "mqtt")["rows"] == 4;
        if settled || std::time::Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let http = frontend(&status, "http");
    assert_eq!(
        (&http["writes"], &http["rows"], &http["rejected_lines"]),
        (&Value::from(1), &Value::from(2), &Value::from(1)),
        "{http}"
    );
    assert_eq!(frontend(&status, "tcp")["rows"], 5);
    let mqtt = frontend(&status, "mqtt");
    assert_eq!(mqtt["rows"], 4, "{mqtt}");
    assert_eq!(mqtt["rejected_lines"], 1, "{mqtt}");
    assert_eq!(frontend(&status, "kafka")["enabled"], false);
    assert_eq!(status["mqtt"]["clients"], 1, "{}", status["mqtt"]);
    assert_eq!(status["mqtt"]["dead_letters"], 1);
    assert_eq!(status["dead_letters"], 1);
    assert!(status["kafka"].is_null());
    // Rows per database are what SQL counts there.
    for (db, table) in [("plant", "m"), ("default", "t"), ("site", "e")] {
        let rows = status["ingest"]["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == db)
            .map(|d| d["rows"].as_i64().unwrap());
        assert_eq!(rows, Some(s.count(db, table)), "{db}");
    }
    // The same counters, as Prometheus text.
    for (name, fe) in [
        ("http", http),
        ("tcp", frontend(&status, "tcp")),
        ("mqtt", mqtt),
    ] {
        let metric = s.metric(&format!("sluice_ingest_rows_total{{frontend=\"{name}\"}}"));
        assert_eq!(metric, fe["rows"].as_f64().unwrap(), "{name}");
    }
    assert_eq!(
        s.metric("sluice_ingest_database_rows_total{database=\"site\"}"),
        4.0
    );
    assert_eq!(s.metric("sluice_mqtt_dead_letters_total"), 1.0);
    assert_eq!(s.metric("sluice_mqtt_connections"), 1.0);
    let shards = status["storage"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let buffered: u64 = shards
        .iter()
        .map(|x| x["buffer_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(status["storage"]["buffer_bytes"], buffered);
    assert_eq!(s.metric("sluice_buffer_bytes"), buffered as f64);
    let _ = client.disconnect();
}

#[test]
fn the_schema_lists_both_engines_with_roles_and_usage() {
    let s = TestServer::start();
    assert_eq!(
        s.write(
            "plant",
            "boiler,unit=7 temp=81.5 1\nboiler,unit=8 temp=80 2"
        )
        .status(),
        204
    );
    s.sql(
        "plant",
        "CREATE TABLE devices (unit text PRIMARY KEY, site text NOT NULL)",
    );
    s.sql("plant", "COMMENT ON TABLE devices IS 'one row per unit'");
    s.flush();
    let schema = get_json(&s, "/api/v1/schema");
    let db = schema["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "plant")
        .unwrap_or_else(|| panic!("{schema}"));
    let table = |name: &str| {
        db["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {db}"))
            .clone()
    };
    let boiler = table("boiler");
    assert_eq!(boiler["kind"], "timeseries");
    assert_eq!(boiler["rows"], 2);
    assert_eq!(
        boiler["chunks"],
        s.scalar(
            "plant",
            "SELECT count(*) FROM system.chunks WHERE \"table\" = 'boiler'"
        )
        .unwrap()
    );
    assert!(boiler["bytes_on_disk"].as_u64().unwrap() > 0);
    let roles: Vec<(String, String)> = boiler["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [("time", "time"), ("unit", "tag"), ("temp", "field")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let devices = table("devices");
    assert_eq!(devices["kind"], "relational");
    assert_eq!(devices["comment"], "one row per unit");
    assert_eq!(devices["columns"][0]["role"], "key");
    assert_eq!(devices["columns"][1]["nullable"], false);
}

#[test]
fn console_files_are_compressed_cached_and_confined() {
    let s = TestServer::start();
    let no_redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(s.url("/")).send().unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/ui/");

    // Raw HTTP: the client library would undo the compression it is testing.
    let head = raw_head(&s, "/ui/", "Accept-Encoding: gzip, br\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    let plain = raw_head(&s, "/ui/", "");
    assert!(!plain.contains("content-encoding"), "{plain}");
    let etag = plain
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("no etag: {plain}"))
        .to_string();
    let again = no_redirect
        .get(s.url("/ui/"))
        .header("if-none-match", etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);

    // The page loads only files that are there.
    let page = s.client.get(s.url("/ui/")).send().unwrap().text().unwrap();
    for asset in ["app.js", "app.css"] {
        assert!(page.contains(asset), "index.html does not load {asset}");
        let r = s.client.get(s.url(&format!("/ui/{asset}"))).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
    // Sent raw: a client library would resolve the dots before sending.
    for bad in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/..%2fCargo.toml",
        "/ui/..%2f..%2fCargo.toml",
        "/ui/%2fetc%2fpasswd",
        "/ui/nope.js",
    ] {
        let head = raw_head(&s, bad, "");
        assert!(
            head.starts_with("HTTP/1.1 404") || head.starts_with("HTTP/1.1 400"),
            "{bad}: {head}"
        );
    }
}

/// The status line and headers of a GET, lower-cased names as sent.
fn raw_head(s: &TestServer, path: &str, extra: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.http).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    String::from_utf8_lossy(&out[..end]).replace("\r\n", "\n")
}
