//! The embedded broker driven by Debian's `mosquitto_pub` and `mosquitto_sub`
//! (package mosquitto-clients, installed by scripts/test.sh): the command-line
//! clients people reach for first, over MQTT 3.1.1 and 5.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use sluice_tests::TestServer;

const CONFIG: &str = r#"
[mqtt.users]
dev = "s3cret"

[[mqtt.routes]]
filter = "factory/{site}/{device}/telemetry"
database = "plant"
table = "telemetry"
format = "json"
time = { field = "ts", unit = "ms" }
tags = ["line"]
"#;

fn tool(name: &str) -> Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(name).is_file());
    assert!(
        found,
        "{name} is not installed: `bash scripts/test.sh` installs Debian's mosquitto-clients"
    );
    Command::new(name)
}

/// Host, port and credentials, as every invocation needs them.
fn conn_args(s: &TestServer, password: &str) -> Vec<String> {
    vec![
        "-h".into(),
        s.mqtt.ip().to_string(),
        "-p".into(),
        s.mqtt.port().to_string(),
        "-u".into(),
        "dev".into(),
        "-P".into(),
        password.into(),
    ]
}

fn publish(s: &TestServer, extra: &[&str]) -> Output {
    tool("mosquitto_pub")
        .args(conn_args(s, "s3cret"))
        .args(extra)
        .output()
        .expect("run mosquitto_pub")
}

fn publish_ok(s: &TestServer, extra: &[&str]) {
    let out = publish(s, extra);
    assert!(
        out.status.success(),
        "mosquitto_pub {extra:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}

/// Starts `mosquitto_sub` that exits after `count` messages (or 20 s).
fn subscribe(s: &TestServer, filter: &str, count: usize, version: &str) -> Child {
    tool("mosquitto_sub")
        .args(conn_args(s, "s3cret"))
        .args(["-V", version, "-q", "1", "-v", "-t", filter])
        .args(["-C", &count.to_string(), "-W", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub")
}

fn finish(mut child: Child) -> String {
    let status = child.wait().expect("wait for mosquitto_sub");
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "mosquitto_sub failed: {status}: {err}");
    out
}

fn write_lines(dir: &Path, n: usize) -> String {
    let body: String = (0..n)
        .map(|i| {
            format!(
                "meter,unit=u{} kwh={i}.5 {}\n",
                i % 10,
                1_700_000_000_000_000_000i64 + i as i64 * 1_000_000_000
            )
        })
        .collect();
    let path = dir.join("lines.lp");
    std::fs::write(&path, body).expect("write payload file");
    path.to_string_lossy().into_owned()
}

#[test]
fn mosquitto_clients_publish_subscribe_and_store() {
    let s = TestServer::start_with(&[], Some(CONFIG));
    let tmp = tempfile::tempdir().expect("tempdir");

    // A subscriber on the JSON route's topics sees what is stored.
    let watcher = subscribe(&s, "factory/#", 2, "mqttv5");
    thread::sleep(Duration::from_millis(500));

    // One message of 100 lines, QoS 1, MQTT 3.1.1; acknowledged = durable.
    let file = write_lines(tmp.path(), 100);
    publish_ok(
        &s,
        &[
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            "ingest/energy",
            "-f",
            &file,
        ],
    );
    let n = s.rows("energy", "SELECT count(*), sum(kwh) FROM meter");
    assert_eq!(n[0][0], 100);
    assert_eq!(n[0][1], (0..100).map(|i| i as f64 + 0.5).sum::<f64>());

    // JSON over MQTT 5 at QoS 2 and QoS 0; the topic levels become tags.
    publish_ok(
        &s,
        &[
            "-V",
            "mqttv5",
            "-q",
            "2",
            "-t",
            "factory/lyon/oven-2/telemetry",
            "-m",
            r#"{"ts": 1700000000500, "line": 3, "temp": 212.5, "door": {"open": false}}"#,
        ],
    );
    publish_ok(
        &s,
        &[
            "-V",
            "mqttv5",
            "-q",
            "0",
            "-t",
            "factory/lyon/oven-3/telemetry",
            "-m",
            r#"[{"ts": 1700000000600, "line": 3, "temp": 199}]"#,
        ],
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM telemetry",
        2,
        Duration::from_secs(30),
    );
    let rows = s.rows(
        "plant",
        "SELECT site, device, line, temp, \"door.open\" FROM telemetry ORDER BY device",
    );
    assert_eq!(rows[0][0], "lyon");
    assert_eq!(rows[0][1], "oven-2");
    assert_eq!(rows[0][2], "3");
    assert_eq!(rows[0][3], 212.5);
    assert_eq!(rows[0][4], false);
    assert_eq!(rows[1][3], 199.0);

    let seen = finish(watcher);
    assert!(
        seen.contains("factory/lyon/oven-2/telemetry {\"ts\": 1700000000500"),
        "subscriber got: {seen}"
    );
    assert!(seen.contains("factory/lyon/oven-3/telemetry"), "{seen}");

    // A retained message reaches a subscriber that comes later.
    publish_ok(
        &s,
        &["-q", "1", "-r", "-t", "status/oven-2", "-m", "online"],
    );
    let late = finish(subscribe(&s, "status/#", 1, "mqttv311"));
    assert_eq!(late.trim(), "status/oven-2 online");

    // A bad payload is dead-lettered; the connection is not the victim.
    publish_ok(
        &s,
        &["-q", "1", "-t", "ingest/energy", "-m", "not line protocol"],
    );
    s.wait_scalar(
        "energy",
        "SELECT count(*) FROM system.dead_letters WHERE topic = 'ingest/energy'",
        1,
        Duration::from_secs(30),
    );

    // A wrong password is refused, in both protocol versions.
    for version in ["mqttv311", "mqttv5"] {
        let out = tool("mosquitto_pub")
            .args(conn_args(&s, "wrong"))
            .args(["-V", version, "-q", "1", "-t", "ingest/energy"])
            .args(["-m", "meter,unit=x kwh=1 1"])
            .output()
            .expect("run mosquitto_pub");
        assert!(
            !out.status.success(),
            "{version}: accepted a wrong password"
        );
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("not authori") || err.contains("bad user name or password"),
            "{version}: {err}"
        );
    }
    let n = s.rows("energy", "SELECT count(*) FROM meter WHERE unit = 'x'");
    assert_eq!(n[0][0], 0);
}
