//! The built-in MQTT broker, driven by a real MQTT client (rumqttc) against
//! the real binary.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, Connection, Event, MqttOptions, Outgoing, Packet, QoS};
use sluice_tests::TestServer;

fn options(s: &TestServer, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, s.mqtt.ip().to_string(), s.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(4 << 20, 4 << 20);
    o
}

/// Runs the connection on a thread and forwards its events.
fn drive(mut conn: Connection) -> mpsc::Receiver<Result<Event, String>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for ev in conn.iter() {
            let stop = ev.is_err();
            if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                return;
            }
        }
    });
    rx
}

fn wait_connack(rx: &mpsc::Receiver<Result<Event, String>>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return if ack.code == ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("{:?}", ack.code))
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no CONNACK".into())
}

/// A client connected as `id` (its CONNACK in), with its event stream.
fn connected(
    s: &TestServer,
    id: &str,
    cap: usize,
) -> (Client, mpsc::Receiver<Result<Event, String>>) {
    let (client, conn) = Client::new(options(s, id), cap);
    let rx = drive(conn);
    if let Err(e) = wait_connack(&rx) {
        panic!("{id} could not connect: {e}");
    }
    (client, rx)
}

#[test]
fn line_protocol_on_ingest_topics_and_json_routes_with_captures() {
    let s = TestServer::start_with(
        &[],
        Some(
            r#"
[[mqtt.routes]]
filter = "factory/{site}/{device}/telemetry"
database = "plant"
table = "telemetry"
format = "json"
time = { field = "ts", unit = "ms" }
tags = ["line"]
"#,
        ),
    );
    let (client, _rx) = connected(&s, "dev-1", 100);
    client
        .publish(
            "ingest/farm",
            QoS::AtLeastOnce,
            false,
            "soil,field=north moisture=0.31 1700000000000000000\nsoil,field=south moisture=0.29 1700000000000000000",
        )
        .unwrap();
    client
        .publish(
            "factory/berlin/press-7/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"[{"ts": 1700000000123, "line": 4, "temp": 21.5, "motor": {"rpm": 1500}},
                {"ts": 1700000000124, "line": 4, "temp": 22}]"#,
        )
        .unwrap();
    s.wait_scalar(
        "farm",
        "SELECT count(*) FROM soil",
        2,
        Duration::from_secs(30),
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM telemetry",
        2,
        Duration::from_secs(30),
    );
    let rows = s.rows(
        "plant",
        "SELECT site, device, line, temp, \"motor.rpm\", CAST(time AS BIGINT) AS t FROM telemetry ORDER BY t",
    );
    assert_eq!(rows[0][0], "berlin");
    assert_eq!(rows[0][1], "press-7");
    assert_eq!(rows[0][2], "4");
    assert_eq!(rows[0][3], 21.5);
    assert_eq!(rows[0][4], 1500.0);
    assert_eq!(rows[0][5], 1_700_000_000_123_000_000i64);
    assert!(rows[1][4].is_null());
    // Topics no route claims are plain broker traffic: nothing stored,
    // nothing dead-lettered.
    client
        .publish("chat/room", QoS::AtLeastOnce, false, "hello")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let dead = s.rows("plant", "SELECT count(*) FROM system.dead_letters");
    assert_eq!(dead[0][0], 0);
}

/// Publishes `n` QoS 1 messages (one line each, `seq` field), and returns
/// the sequence numbers the broker acknowledged.
fn publish_numbered(
    client: &Client,
    rx: &mpsc::Receiver<Result<Event, String>>,
    topic: &str,
    n: usize,
) -> HashSet<usize> {
    let mut order = std::collections::VecDeque::new();
    let mut pkid_to_seq = std::collections::HashMap::new();
    let mut acked = HashSet::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} acknowledged",
            acked.len()
        );
        while sent < n && sent - acked.len() < 64 {
            let line = format!(
                "seq,src=a seq={sent}i {}",
                1_700_000_000_000_000_000i64 + sent as i64
            );
            client
                .publish(topic, QoS::AtLeastOnce, false, line)
                .unwrap();
            order.push_back(sent);
            sent += 1;
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(seq) = order.pop_front() {
                    pkid_to_seq.insert(pkid, seq);
                }
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(seq) = pkid_to_seq.remove(&ack.pkid) {
                    acked.insert(seq);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection failed: {e}"),
            Err(e) => panic!("no progress: {e}"),
        }
    }
    acked
}

#[test]
fn ten_thousand_qos1_messages_stored_exactly_once_and_delivered_to_a_subscriber() {
    let s = TestServer::start();
    let (_sub, sub_rx) = subscriber(&s, "watcher", "ingest/#");
    let (client, rx) = connected(&s, "pub-1", 200);
    let n = 10_000;
    let acked = publish_numbered(&client, &rx, "ingest/qos1", n);
    assert_eq!(acked.len(), n);
    // Acknowledged means durable: every row is visible at once.
    let rows = s.rows(
        "qos1",
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM seq",
    );
    assert_eq!(rows[0][0], n as i64);
    assert_eq!(rows[0][1], n as i64);
    assert_eq!(rows[0][2], 0);
    assert_eq!(rows[0][3], n as i64 - 1);
    // The broker checks a window of publishes as one batch; subscribers
    // must still see one publisher's messages in the order it sent them.
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < n && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            sub_rx.recv_timeout(Duration::from_secs(10))
        {
            assert_eq!(p.topic, "ingest/qos1");
            let expected = format!("seq,src=a seq={received}i ");
            assert!(
                p.payload.starts_with(expected.as_bytes()),
                "message {received} out of order: {:?}",
                String::from_utf8_lossy(&p.payload)
            );
            received += 1;
        }
    }
    assert_eq!(received, n, "the third-party subscriber got every message");
}

/// QoS 1 publishes are checked in batches while the connection reads on; a
/// QoS 0 publish behind them must still not overtake them.
#[test]
fn mixed_qos_publishes_keep_their_order() {
    let s = TestServer::start();
    let (_sub, sub_rx) = subscriber(&s, "orderly", "ingest/mixed");
    let (client, conn) = Client::new(options(&s, "mixer"), 1000);
    let _rx = drive(conn);
    let n = 600;
    let lines: Vec<String> = (0..n)
        .map(|i| format!("m,src=a seq={i}i {}", 1_700_000_000_000_000_000i64 + i))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        // Runs of QoS 1 broken by a QoS 0 publish every fourth message.
        let qos = if i % 4 == 3 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        client
            .publish("ingest/mixed", qos, false, line.clone())
            .unwrap();
    }
    let got = received(&sub_rx, Duration::from_secs(3));
    assert_eq!(got, lines, "the subscriber sees the publisher's order");
    s.wait_scalar(
        "mixed",
        "SELECT count(DISTINCT seq) FROM m",
        n,
        Duration::from_secs(30),
    );
}

#[test]
fn retained_messages_reach_late_subscribers() {
    let s = TestServer::start();
    let (client, _rx) = connected(&s, "retainer", 10);
    client
        .publish("status/pump-1", QoS::AtLeastOnce, true, "running")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let (late, late_rx) = connected(&s, "late", 10);
    late.subscribe("status/+", QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no retained message");
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            late_rx.recv_timeout(Duration::from_secs(10))
        {
            assert!(p.retain);
            assert_eq!(&p.payload[..], b"running");
            break;
        }
    }
}

#[test]
fn username_and_password_are_checked() {
    let s = TestServer::start_with(&[], Some("[mqtt]\nusers = { device = \"s3cret\" }\n"));
    let mut good = options(&s, "good");
    good.set_credentials("device", "s3cret");
    let (_c, conn) = Client::new(good, 10);
    wait_connack(&drive(conn)).expect("right password accepted");
    let mut bad = options(&s, "bad");
    bad.set_credentials("device", "guess");
    let (_c2, conn) = Client::new(bad, 10);
    assert!(
        wait_connack(&drive(conn)).is_err(),
        "wrong password refused"
    );
    let (_c3, conn) = Client::new(options(&s, "anon"), 10);
    assert!(wait_connack(&drive(conn)).is_err(), "anonymous refused");
}

#[test]
fn garbage_payloads_are_dead_lettered_and_the_broker_stays_up() {
    let s = TestServer::start_with(
        &[],
        Some("[[mqtt.routes]]\nfilter = \"json/{dev}\"\ndatabase = \"iot\"\ntable = \"t\"\nformat = \"json\"\n"),
    );
    let (client, _rx) = connected(&s, "fuzzer", 500);
    let mut rng = 0x2545F4914F6CDD1Du64;
    let garbage = 200;
    for i in 0..garbage {
        let mut payload = Vec::new();
        for _ in 0..(i % 50 + 1) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            payload.push((rng % 256) as u8);
        }
        // Never valid: JSON must start with `{` or `[`, line protocol
        // needs a field after a space.
        payload.insert(0, b'#');
        payload.insert(0, b'\x01');
        let topic = if i % 2 == 0 { "ingest/iot" } else { "json/d1" };
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
    // A valid message after the flood is stored.
    client
        .publish("ingest/iot", QoS::AtLeastOnce, false, "ok v=1 1")
        .unwrap();
    s.wait_scalar("iot", "SELECT count(*) FROM ok", 1, Duration::from_secs(30));
    s.wait_scalar(
        "iot",
        "SELECT count(*) FROM system.dead_letters WHERE source = 'mqtt'",
        garbage,
        Duration::from_secs(30),
    );
    let rows = s.rows(
        "iot",
        "SELECT topic, error, payload FROM system.dead_letters WHERE topic = 'json/d1' LIMIT 1",
    );
    let error = rows[0][1].as_str().unwrap();
    assert!(error.contains("JSON"), "{error}");
    assert!(s.metric("sluice_mqtt_dead_letters_total") >= garbage as f64);
}

#[test]
fn a_port_in_use_fails_startup_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["serve", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", sluice_tests::free_port()),
        ])
        .args([
            "--lp-tcp-addr",
            &format!("127.0.0.1:{}", sluice_tests::free_port()),
        ])
        .args(["--mqtt-addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen for MQTT"), "{err}");
}

#[test]
fn no_acknowledged_message_is_lost_to_sigkill() {
    let mut s = TestServer::start();
    let (client, rx) = connected(&s, "streamer", 200);
    // Stream until the server dies under the publisher.
    let (done_tx, done_rx) = mpsc::channel();
    let pid = s.pid();
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        unsafe_kill(pid);
        let _ = done_tx.send(());
    });
    let mut order = std::collections::VecDeque::new();
    let mut pkid_to_seq = std::collections::HashMap::new();
    let mut acked = HashSet::new();
    let mut sent = 0usize;
    loop {
        if done_rx.try_recv().is_ok() {
            break;
        }
        while sent - acked.len() < 64 {
            let line = format!(
                "k seq={sent}i {}",
                1_700_000_000_000_000_000i64 + sent as i64
            );
            if client
                .try_publish("ingest/kill", QoS::AtLeastOnce, false, line)
                .is_err()
            {
                break;
            }
            order.push_back(sent);
            sent += 1;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(seq) = order.pop_front() {
                    pkid_to_seq.insert(pkid, seq);
                }
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(seq) = pkid_to_seq.remove(&ack.pkid) {
                    acked.insert(seq);
                }
            }
            Ok(Err(_)) => break,
            _ => {}
        }
    }
    killer.join().unwrap();
    s.kill9();
    s.restart();
    assert!(
        acked.len() > 100,
        "too few acknowledged before the kill: {}",
        acked.len()
    );
    let stored: HashSet<usize> = s
        .rows("kill", "SELECT seq FROM k")
        .iter()
        .map(|r| r[0].as_i64().unwrap() as usize)
        .collect();
    let missing: Vec<usize> = acked.difference(&stored).copied().collect();
    eprintln!(
        "kill test: {} sent, {} acknowledged, {} stored, {} acknowledged but missing",
        sent,
        acked.len(),
        stored.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

fn unsafe_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// Collects the payloads of the publishes `rx` receives until `quiet`
/// passes without one.
fn received(rx: &mpsc::Receiver<Result<Event, String>>, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.recv_timeout(quiet) {
        if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
            out.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    out
}

fn wait_suback(rx: &mpsc::Receiver<Result<Event, String>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) = rx.recv_timeout(Duration::from_secs(10))
        {
            return;
        }
    }
    panic!("no SUBACK");
}

/// A connected client subscribed (QoS 1) to `filter`, once its SUBACK is in.
fn subscriber(
    s: &TestServer,
    id: &str,
    filter: &str,
) -> (Client, mpsc::Receiver<Result<Event, String>>) {
    let (c, rx) = connected(s, id, 100);
    c.subscribe(filter, QoS::AtLeastOnce).unwrap();
    wait_suback(&rx);
    (c, rx)
}

#[test]
fn shared_subscriptions_split_messages_between_members() {
    let s = TestServer::start();
    let mut members = Vec::new();
    for id in ["worker-a", "worker-b"] {
        members.push(subscriber(&s, id, "$share/workers/jobs/+"));
    }
    let (publisher, conn) = Client::new(options(&s, "dispatcher"), 100);
    let _prx = drive(conn);
    for i in 0..40 {
        publisher
            .publish("jobs/resize", QoS::AtLeastOnce, false, format!("job-{i}"))
            .unwrap();
    }
    let a = received(&members[0].1, Duration::from_secs(2));
    let b = received(&members[1].1, Duration::from_secs(1));
    assert_eq!(a.len() + b.len(), 40, "a: {a:?}\nb: {b:?}");
    assert!(!a.is_empty() && !b.is_empty(), "both members get work");
    let all: HashSet<&String> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 40, "each message to exactly one member");
}

#[test]
fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let s = TestServer::start();
    let mut opts = options(&s, "field-unit-7");
    opts.set_clean_session(false);
    // Subscribe, then go away without a DISCONNECT, as a device that loses
    // its network does.
    let (c, mut conn) = Client::new(opts.clone(), 10);
    c.subscribe("commands/unit-7", QoS::AtLeastOnce).unwrap();
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev {
            break;
        }
        ev.expect("first connection");
    }
    drop(conn);
    drop(c);
    thread::sleep(Duration::from_millis(500));

    let (publisher, _prx) = connected(&s, "control-room", 10);
    for i in 0..5 {
        publisher
            .publish(
                "commands/unit-7",
                QoS::AtLeastOnce,
                false,
                format!("cmd-{i}"),
            )
            .unwrap();
    }
    thread::sleep(Duration::from_millis(500));

    let (_c, conn) = Client::new(opts, 10);
    let rx = drive(conn);
    let got = received(&rx, Duration::from_secs(2));
    assert_eq!(got, (0..5).map(|i| format!("cmd-{i}")).collect::<Vec<_>>());
}

/// A publish over `mqtt.max_payload_bytes` is refused and ends the
/// connection (the client resends after reconnecting); the publishes before
/// it, even in the same batch, are acknowledged and stored.
#[test]
fn an_oversized_publish_is_refused_after_what_came_before_it_is_acknowledged() {
    let s = TestServer::start_with_env(&[("SLUICE_MQTT__MAX_PAYLOAD_BYTES", "1000")]);
    let (c, rx) = connected(&s, "big-sender", 10);
    for i in 0..3 {
        let line = format!("m,src=a seq={i}i {}", 1_700_000_000_000_000_000i64 + i);
        c.publish("ingest/limits", QoS::AtLeastOnce, false, line)
            .unwrap();
    }
    c.publish("ingest/limits", QoS::AtLeastOnce, false, "x".repeat(5000))
        .unwrap();
    let mut acks = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
    assert_eq!(acks, 3);
    s.wait_scalar(
        "limits",
        "SELECT count(*) FROM m",
        3,
        Duration::from_secs(10),
    );
    assert!(s.log().contains("exceeds mqtt.max_payload_bytes"));
}

/// One MQTT 5 session in raw packets, as rumqttc cannot choose a DISCONNECT
/// reason: CONNECT with a will (its payload is its topic), CONNACK, then
/// DISCONNECT with `reason`; returns once the broker has closed the socket.
fn v5_session_with_will(s: &TestServer, id: &str, will_topic: &str, reason: u8) {
    use std::io::{Read, Write};
    fn string(out: &mut Vec<u8>, v: &[u8]) {
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    }
    // Protocol name, level 5, flags (will, clean start), keep-alive 30 s,
    // no properties; then client id, no will properties, will topic, payload.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 30, 0];
    string(&mut body, id.as_bytes());
    body.push(0);
    string(&mut body, will_topic.as_bytes());
    string(&mut body, will_topic.as_bytes());
    assert!(body.len() < 128, "one-byte remaining length");
    let mut sock = std::net::TcpStream::connect(s.mqtt).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(&[&[0x10, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut head = [0u8; 2];
    sock.read_exact(&mut head).unwrap();
    let mut rest = vec![0u8; head[1] as usize];
    sock.read_exact(&mut rest).unwrap();
    assert_eq!((head[0], rest[1]), (0x20, 0), "CONNACK, success");
    sock.write_all(&[0xE0, 0x01, reason]).unwrap();
    let mut buf = [0u8; 64];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

#[test]
fn a_v5_disconnect_with_will_message_publishes_the_will() {
    let s = TestServer::start();
    let (_sub, rx) = subscriber(&s, "will-watcher", "wills/#");
    // 0x00 (normal disconnection) discards the will; 0x04 asks for it.
    v5_session_with_will(&s, "meter-1", "wills/normal", 0x00);
    v5_session_with_will(&s, "meter-2", "wills/asked", 0x04);
    let got = received(&rx, Duration::from_secs(2));
    assert_eq!(got, ["wills/asked"]);
}

/// The broker remembers topics that matched no subscription; a subscription
/// made later must still get what is published to them from then on.
#[test]
fn a_later_subscriber_gets_topics_that_had_no_subscriber() {
    let s = TestServer::start();
    let (publisher, prx) = connected(&s, "early-bird", 100);
    let topics = ["ingest/late", "plant/pump-1/state"];
    let publish_round = |round: usize| {
        for t in topics {
            let payload = format!("m,round={round} v={round}i");
            publisher
                .publish(t, QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut acks = 0;
        while acks < topics.len() {
            assert!(Instant::now() < deadline, "round {round}: {acks} PUBACKs");
            if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
                prx.recv_timeout(Duration::from_secs(10))
            {
                acks += 1;
            }
        }
    };
    publish_round(1);
    publish_round(2);
    let (_sub, srx) = subscriber(&s, "latecomer", "#");
    publish_round(3);
    let mut got = received(&srx, Duration::from_secs(2));
    got.sort();
    assert_eq!(got, vec!["m,round=3 v=3i".to_string(); 2], "one per topic");
    s.wait_scalar("late", "SELECT count(*) FROM m", 3, Duration::from_secs(30));
}
