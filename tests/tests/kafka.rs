//! The Kafka consumer against librdkafka's mock cluster: a real Kafka
//! protocol implementation, run in this test process on loopback ports, that
//! the real `sluice` binary consumes from.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use sluice_tests::TestServer;

/// Mock time base for message timestamps (ms): 2023-11-14T22:13:20Z.
const T0_MS: i64 = 1_700_000_000_000;

struct Kafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Kafka {
    fn new(topics: &[(&str, i32)]) -> Kafka {
        let cluster = MockCluster::new(1).expect("mock cluster");
        for (t, parts) in topics {
            cluster.create_topic(t, *parts, 1).expect("create topic");
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Kafka { cluster, producer }
    }

    /// Sends one message to an explicit partition with an explicit
    /// timestamp (ms), retrying while the producer queue is full.
    fn send(&self, topic: &str, partition: i32, ts_ms: i64, payload: &str) {
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .timestamp(ts_ms)
            .payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    record = r;
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(30))
            .expect("flush producer");
    }

    fn config(&self, group: &str, routes: &str, extra: &str) -> String {
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{group}"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{extra}
{routes}
"#,
            self.cluster.bootstrap_servers()
        )
    }
}

const ROUTES: &str = r#"
[[kafka.routes]]
topic = "lp"
database = "plant"

[[kafka.routes]]
topic = "json"
database = "plant"
format = "json"
table = "telemetry"
time = { field = "ts", unit = "ms" }
tags = ["device"]
"#;

#[test]
fn routes_deterministic_times_poison_messages_and_partition_status() {
    let k = Kafka::new(&[("lp", 4), ("json", 2)]);
    // Lines with their own timestamps, 10 per message, over 4 partitions.
    for m in 0..200i64 {
        let body: String = (0..10)
            .map(|i| {
                let n = m * 10 + i;
                format!(
                    "power,meter=m{} kw={n}.25 {}\n",
                    n % 7,
                    (T0_MS + n) * 1_000_000
                )
            })
            .collect();
        k.send("lp", (m % 4) as i32, T0_MS + m, &body);
    }
    // Lines without timestamps take the message's timestamp.
    for m in 0..20i64 {
        k.send(
            "lp",
            0,
            T0_MS + 5_000 + m,
            &format!("gauge,site=a level={m}i"),
        );
    }
    k.send(
        "json",
        0,
        T0_MS,
        r#"[{"ts": 1700000000100, "device": "oven-1", "temp": 211.5, "door": {"open": true}},
            {"ts": 1700000000200, "device": "oven-1", "temp": 212}]"#,
    );
    k.send("json", 1, T0_MS, r#"{"device": "oven-2", "temp": 180}"#);
    // Poison: not line protocol, not JSON, a type conflict.
    k.send("lp", 1, T0_MS, "this is not line protocol");
    k.send("json", 1, T0_MS, "{\"device\": ");
    k.send(
        "lp",
        2,
        T0_MS + 9,
        "power,meter=m1 kw=\"text\" 1700000000000000000",
    );
    k.flush();

    let s = TestServer::start_with(&[], Some(&k.config("routes", ROUTES, "")));
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM power",
        2000,
        Duration::from_secs(90),
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM gauge",
        20,
        Duration::from_secs(90),
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM telemetry",
        3,
        Duration::from_secs(90),
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM system.dead_letters",
        3,
        Duration::from_secs(90),
    );

    let sum = s.rows("plant", "SELECT sum(kw) FROM power");
    assert_eq!(sum[0][0], (0..2000).map(|n| n as f64 + 0.25).sum::<f64>());
    let times = s.rows(
        "plant",
        "SELECT min(CAST(time AS BIGINT)), max(CAST(time AS BIGINT)) FROM gauge",
    );
    assert_eq!(times[0][0], (T0_MS + 5_000) * 1_000_000);
    assert_eq!(times[0][1], (T0_MS + 5_019) * 1_000_000);
    let oven2 = s.rows(
        "plant",
        "SELECT CAST(time AS BIGINT), temp FROM telemetry WHERE device = 'oven-2'",
    );
    assert_eq!(oven2[0][0], T0_MS * 1_000_000);
    assert_eq!(oven2[0][1], 180.0);

    let dead = s.rows(
        "plant",
        "SELECT source, topic, \"partition\", \"offset\", error FROM system.dead_letters ORDER BY topic, \"partition\"",
    );
    assert_eq!(dead[0][0], "kafka");
    assert_eq!(dead[0][1], "json");
    assert_eq!(dead[0][2], 1);
    assert_eq!(dead[0][3], 1, "offset of the broken JSON in json[1]");
    let lp_dead: Vec<(i64, String)> = dead[1..]
        .iter()
        .map(|r| (r[2].as_i64().unwrap_or(-1), r[4].to_string()))
        .collect();
    assert_eq!(lp_dead[0].0, 1);
    assert_eq!(lp_dead[1].0, 2);
    assert!(
        lp_dead[1].1.contains("kw"),
        "type conflict names the field: {lp_dead:?}"
    );

    // Every partition is consumed to its end, and the status says so once
    // the coordinator has confirmed the commits.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = s.scalar("plant",
            "SELECT sum(lag) + sum(high_watermark - committed_offset) FROM system.kafka_partitions WHERE assigned",
        );
        if lag == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag stays {lag:?}: {:?}",
            s.rows("plant", "SELECT * FROM system.kafka_partitions")
        );
        thread::sleep(Duration::from_millis(200));
    }
    let parts = s.rows(
        "plant",
        "SELECT topic, \"partition\", committed_offset, messages FROM system.kafka_partitions ORDER BY topic, \"partition\"",
    );
    assert_eq!(parts.len(), 6, "{parts:?}");
    // lp[0]: 50 timestamped messages and 20 without.
    assert_eq!(parts[2][1], 0);
    assert_eq!(parts[2][2], 70);
    assert_eq!(parts[2][3], 70);
    assert_eq!(
        s.metric("sluice_ingest_rows_total{frontend=\"kafka\"}"),
        2023.0
    );
    assert_eq!(s.metric("sluice_kafka_dead_letters_total"), 3.0);
    assert!(s.metric("sluice_kafka_lag") == 0.0);
}

/// Messages carrying one line each, without a timestamp: only the message
/// timestamp makes a redelivered line land on the same point.
fn produce_sequence(k: &Kafka, topic: &str, partitions: i32, n: i64) {
    for seq in 0..n {
        k.send(
            topic,
            (seq % partitions as i64) as i32,
            T0_MS + seq,
            &format!("seq,src=k n={seq}i"),
        );
    }
    k.flush();
}

const SEQ_ROUTE: &str = r#"
[[kafka.routes]]
topic = "seq"
database = "q"
"#;

fn assert_exactly_once(s: &TestServer, n: i64) {
    s.wait_scalar("q", "SELECT count(*) FROM seq", n, Duration::from_secs(90));
    // Give a redelivery the chance to show up as a duplicate.
    thread::sleep(Duration::from_secs(1));
    let r = s.rows(
        "q",
        "SELECT count(*), count(DISTINCT n), min(n), max(n) FROM seq",
    );
    assert_eq!(r[0][0], n, "no duplicates");
    assert_eq!(r[0][1], n, "no gaps");
    assert_eq!(r[0][2], 0);
    assert_eq!(r[0][3], n - 1);
}

#[test]
fn crash_between_write_and_commit_and_sigkill_lose_and_duplicate_nothing() {
    let n = 6_000;
    let k = Kafka::new(&[("seq", 3)]);
    produce_sequence(&k, "seq", 3, n);
    // Small batches, so the stream spans many writes and commits.
    let cfg = k.config("crashy", SEQ_ROUTE, "max_batch_messages = 100");
    let mut s = TestServer::start_with(
        &[("SLUICE_FAILPOINT_KAFKA_CRASH_AFTER_BATCHES", "5")],
        Some(&cfg),
    );
    let st = s
        .wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the failpoint did not fire\n{}", s.log()));
    assert!(!st.success(), "aborted, not a clean exit: {st}");

    // Restart: the batch whose offsets were never committed is consumed
    // again; then SIGKILL in the middle of the stream, and once more.
    s.set_env("SLUICE_FAILPOINT_KAFKA_CRASH_AFTER_BATCHES", None);
    s.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.scalar("q", "SELECT count(*) FROM seq").unwrap_or(0) < n / 3 {
        assert!(Instant::now() < deadline, "no progress\n{}", s.log());
        thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    s.restart();
    assert_exactly_once(&s, n);

    // A clean restart resumes at the committed offset: nothing is read
    // again, and new messages are picked up.
    assert!(s.terminate(), "clean shutdown");
    s.restart();
    for seq in n..n + 10 {
        k.send("seq", 0, T0_MS + seq, &format!("seq,src=k n={seq}i"));
    }
    k.flush();
    s.wait_scalar(
        "q",
        "SELECT count(*) FROM seq",
        n + 10,
        Duration::from_secs(90),
    );
    let messages = s.scalar("q", "SELECT sum(messages) FROM system.kafka_partitions");
    assert_eq!(messages, Some(10), "only the new messages were consumed");
}

#[test]
fn two_servers_in_one_group_split_the_partitions() {
    let n = 2_000;
    let k = Kafka::new(&[("seq", 4)]);
    let cfg = k.config("pair", SEQ_ROUTE, "");
    let a = TestServer::start_with(&[], Some(&cfg));
    let b = TestServer::start_with(&[], Some(&cfg));
    // Wait until the group has settled on both members.
    let assigned = |s: &TestServer| {
        s.scalar(
            "",
            "SELECT count(*) FROM system.kafka_partitions WHERE assigned",
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(assigned(&a) > 0 && assigned(&b) > 0 && assigned(&a) + assigned(&b) == 4) {
        assert!(
            Instant::now() < deadline,
            "group did not settle\n--- a ---\n{}\n--- b ---\n{}",
            a.log(),
            b.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    produce_sequence(&k, "seq", 4, n);
    let count = |s: &TestServer| s.scalar("q", "SELECT count(*) FROM seq").unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&a) + count(&b) < n {
        assert!(
            Instant::now() < deadline,
            "consumed {} + {}",
            count(&a),
            count(&b)
        );
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&a) + count(&b), n);
    assert!(count(&a) > 0 && count(&b) > 0);
    let mut seen = BTreeSet::new();
    for s in [&a, &b] {
        for r in s.rows("q", "SELECT n FROM seq") {
            assert!(seen.insert(r[0].as_i64().unwrap_or(-1)), "stored twice");
        }
    }
    assert_eq!(seen.len() as i64, n);
}
