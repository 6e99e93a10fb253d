//! End to end against a real Kafka-compatible broker process: tansu, on
//! loopback with in-memory storage (`scripts/test.sh` installs it and sets
//! `TANSU_BIN`). An rdkafka producer preloads topics; the real `sluice`
//! binary consumes them, is killed with SIGKILL mid-stream, and restarts.
//! Behind stunnel, the same broker is reached over TLS.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use sluice_tests::pki::Pki;
use sluice_tests::{free_port, TestServer};

const T0_MS: i64 = 1_700_000_000_000;

fn tansu_bin() -> PathBuf {
    let bin = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("tansu"))
                .find(|p| p.is_file())
        });
    match bin {
        Some(b) if b.is_file() => b,
        _ => {
            panic!("tansu is not installed: `bash scripts/test.sh` installs it and sets TANSU_BIN")
        }
    }
}

struct Tansu {
    child: Child,
    url: String,
    log: tempfile::NamedTempFile,
}

impl Tansu {
    fn start() -> Tansu {
        Self::start_advertising(None)
    }

    /// A broker that tells clients to reach it at `advertised` (a TLS
    /// terminator in front of it) instead of where it listens.
    fn start_advertising(advertised: Option<&str>) -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                advertised.unwrap_or(&url),
            ])
            .args([
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "sluice-e2e",
            ])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, url, log }
    }

    fn bootstrap(&self) -> &str {
        self.url.trim_start_matches("tcp://")
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &self.url])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!("--- tansu log ---\n{log}");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    producer_with(bootstrap, &[])
}

fn producer_with(
    bootstrap: &str,
    extra: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("linger.ms", "10");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// stunnel ending TLS on `accept` with the test PKI's server certificate
/// and handing the bytes to `connect`.
struct Stunnel {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    fn start(pki: &Pki, accept: u16, connect: &str) -> Stunnel {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{accept}\nconnect = {connect}\n\
                 cert = {}\nkey = {}\n",
                pki.path("server.pem").display(),
                pki.path("server.key").display()
            ),
        )
        .expect("stunnel.conf");
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 (apt-get install stunnel4)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", accept)).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Stunnel { child, _dir: dir }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn consumes_from_a_broker_behind_tls() {
    let pki = Pki::new();
    let tls_port = free_port();
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let broker = Tansu::start_advertising(Some(&format!("tcp://{tls_addr}")));
    broker.create_topic("secure", 2);
    let _tls = Stunnel::start(&pki, tls_port, broker.bootstrap());
    let ca = pki.path("ca1.pem");
    let ca = ca.to_str().unwrap();
    let tls = [("security.protocol", "ssl"), ("ssl.ca.location", ca)];
    let p = producer_with(&tls_addr, &tls);
    for i in 0..500i64 {
        send(
            &p,
            "secure",
            (i % 2) as i32,
            T0_MS + i,
            &format!("vault,door=d{} open={i}i", i % 3),
        );
    }
    p.flush(Duration::from_secs(60)).expect("flush over TLS");

    let cfg = format!(
        r#"
[kafka]
brokers = "{tls_addr}"
group_id = "tls"
properties = {{ "security.protocol" = "ssl", "ssl.ca.location" = "{ca}", "session.timeout.ms" = "6000" }}

[[kafka.routes]]
topic = "secure"
database = "bank"
"#
    );
    let s = TestServer::start_with(&[], Some(&cfg));
    wait_until("the TLS consumer stores every message", &s, || {
        s.scalar("bank", "SELECT count(*) FROM vault").unwrap_or(0) == 500
    });
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, part: i32, ts: i64, body: &str) {
    let mut record = BaseRecord::<(), str>::to(topic)
        .partition(part)
        .timestamp(ts)
        .payload(body);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn wait_until(what: &str, s: &TestServer, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}\n{}", s.log());
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn consumes_from_tansu_exactly_once_across_a_sigkill() {
    let broker = Tansu::start();
    broker.create_topic("meters", 4);
    broker.create_topic("events", 1);
    let p = producer(broker.bootstrap());
    let n = 20_000i64;
    // One untimed line per message: its time is the message timestamp.
    for i in 0..n {
        send(
            &p,
            "meters",
            (i % 4) as i32,
            T0_MS + i,
            &format!("meter,id=m{} kwh={i}i", i % 50),
        );
    }
    for i in 0..200i64 {
        send(
            &p,
            "events",
            0,
            T0_MS + i,
            &format!(
                r#"{{"at": "2024-05-01T12:00:{:02}.{:03}Z", "door": "d{}", "open": {}}}"#,
                i / 1000,
                i % 1000,
                i % 3,
                i % 2 == 0
            ),
        );
    }
    send(&p, "meters", 0, T0_MS, "garbage that is not line protocol");
    p.flush(Duration::from_secs(60)).expect("flush");

    let cfg = format!(
        r#"
[kafka]
brokers = "{}"
group_id = "e2e"
properties = {{ "session.timeout.ms" = "6000" }}
max_batch_messages = 500

[[kafka.routes]]
topic = "meters"
database = "energy"

[[kafka.routes]]
topic = "events"
database = "energy"
format = "json"
table = "doors"
time = {{ field = "at", unit = "rfc3339" }}
tags = ["door"]
"#,
        broker.bootstrap()
    );
    let mut s = TestServer::start_with(&[], Some(&cfg));
    wait_until("consumption starts", &s, || {
        s.scalar("energy", "SELECT count(*) FROM meter")
            .unwrap_or(0)
            >= n / 4
    });
    s.kill9();
    s.restart();
    wait_until("all rows stored", &s, || {
        s.scalar("energy", "SELECT count(*) FROM meter") == Some(n)
            && s.scalar("energy", "SELECT count(*) FROM doors") == Some(200)
    });
    thread::sleep(Duration::from_secs(1));
    let r = s.rows(
        "energy",
        "SELECT count(*), count(DISTINCT kwh), min(CAST(time AS BIGINT)), max(CAST(time AS BIGINT)) FROM meter",
    );
    assert_eq!(r[0][0], n, "no duplicates after the SIGKILL");
    assert_eq!(r[0][1], n, "no gaps");
    assert_eq!(r[0][2], T0_MS * 1_000_000);
    assert_eq!(r[0][3], (T0_MS + n - 1) * 1_000_000);
    let doors = s.rows(
        "energy",
        "SELECT count(DISTINCT door), sum(CAST(open AS INT)) FROM doors",
    );
    assert_eq!(doors[0][0], 3);
    assert_eq!(doors[0][1], 100);
    let dead = s.rows(
        "energy",
        "SELECT topic, \"partition\", \"offset\" FROM system.dead_letters",
    );
    assert!(!dead.is_empty());
    assert!(dead
        .iter()
        .all(|d| d[0] == "meters" && d[1] == 0 && d[2] == 5_000));
    // librdkafka's statistics carry tansu's high watermarks: lag reaches 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.scalar(
        "",
        "SELECT sum(lag) FROM system.kafka_partitions WHERE assigned",
    ) != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "lag stays: {:?}",
            s.rows("", "SELECT * FROM system.kafka_partitions")
        );
        thread::sleep(Duration::from_millis(100));
    }
}
