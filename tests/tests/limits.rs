//! Floods and slow clients do not starve the others: HTTP and PostgreSQL
//! connections are capped per client address, and a client that does not finish its
//! request headers in time is disconnected (slowloris), as is an MQTT
//! socket that sends no CONNECT.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_tests::TestServer;

/// Whether the server closed `c` within `within` (read returns 0 or fails
/// with a reset).
fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match c.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// `GET /health` with curl from source address `from` (127.0.0.x all reach
/// a server on 127.0.0.1, as a second client host would).
fn health_from(s: &TestServer, from: &str) -> bool {
    std::process::Command::new("curl")
        .args(["-sSf", "--max-time", "10", "--interface", from])
        .arg(s.url("/health"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__REQUEST_HEADER_TIMEOUT_SECS", "2")]);
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(s.http).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: s\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // Others are served meanwhile.
    assert!(health_from(&s, "127.0.0.1"));
    let started = Instant::now();
    for c in &mut slow {
        assert!(
            closed_within(c, Duration::from_secs(10)),
            "a slow client was not cut off"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // A keep-alive client between requests is held to the same deadline.
    let mut idle = TcpStream::connect(s.http).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: s\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)));
}

#[test]
fn one_client_address_cannot_take_every_connection() {
    let s = TestServer::start_with_env(&[
        ("SLUICE_HTTP__MAX_CONNECTIONS_PER_CLIENT", "20"),
        ("SLUICE_HTTP__REQUEST_HEADER_TIMEOUT_SECS", "60"),
    ]);
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(s.http).unwrap())
        .collect();
    // Connections are counted once accepted; give the accept loop a moment.
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(s.http).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)),
        "a connection past the per-client limit was kept"
    );
    assert!(!health_from(&s, "127.0.0.1"), "the flooding address got in");
    assert!(health_from(&s, "127.0.0.2"), "another address was starved");
    // The refusals are counted where operators look.
    let metrics = std::process::Command::new("curl")
        .args(["-sSf", "--max-time", "10", "--interface", "127.0.0.3"])
        .arg(s.url("/metrics"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.stdout);
    let refused: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sluice_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refusal count in:\n{text}"));
    assert!(refused >= 2.0, "{refused}");
    held.truncate(5);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        health_from(&s, "127.0.0.1"),
        "closed connections were not given back"
    );
    drop(held);
}

/// psql's answer to `SELECT 1`.
fn psql_select_1(s: &TestServer) -> (bool, String) {
    sluice_tests::clients::psql(s, "sluice", None, "plant", "SELECT 1")
}

#[test]
fn the_postgresql_port_refuses_past_its_limit_as_postgresql_does() {
    let s = TestServer::start_with_env(&[("SLUICE_PG__MAX_CONNECTIONS_PER_CLIENT", "3")]);
    assert_eq!(s.write("plant", "m v=1 1").status(), 204);
    // Three idle connections take this address's share.
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(s.pg).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = psql_select_1(&s);
    assert!(!ok, "a fourth connection got in: {out}");
    assert!(out.contains("too many clients"), "{out}");
    assert!(s.metric("sluice_pg_connections_refused_total") >= 1.0);
    assert_eq!(s.metric("sluice_pg_connections"), 3.0);
    // One goes: there is room again.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = psql_select_1(&s);
        if ok {
            assert_eq!(out.trim(), "1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
}

#[test]
fn request_bodies_held_at_once_have_a_budget() {
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__MAX_INFLIGHT_BODY_BYTES", "1048576")]);
    assert_eq!(s.write("plant", "m v=1 1").status(), 204);
    // A client that sends most of a large body and then stalls holds its
    // share of the budget.
    let line = "m v=1 1\n";
    let hold = line.repeat(900_000 / line.len());
    let mut stalled = TcpStream::connect(s.http).unwrap();
    write!(
        stalled,
        "POST /write?db=plant HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n{hold}"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Another body that does not fit waits for room...
    let url = s.url("/write?db=plant");
    let body = line.repeat(400_000 / line.len());
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let r = reqwest::blocking::Client::new()
            .post(url)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !waiting.is_finished(),
        "a body past the budget was taken at once"
    );
    // ...and goes through once the stalled one is gone.
    drop(stalled);
    let (status, waited) = waiting.join().unwrap();
    assert_eq!(status, 204);
    assert!(waited >= Duration::from_millis(1500));
    // A body that never gets room is told to retry.
    let mut stalled = TcpStream::connect(s.http).unwrap();
    write!(
        stalled,
        "POST /write?db=plant HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n{hold}"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r = reqwest::blocking::Client::new()
        .post(s.url("/write?db=plant"))
        .body(line.repeat(400_000 / line.len()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert!(r.text().unwrap().contains("max_inflight_body_bytes"));
    drop(stalled);
    assert_eq!(s.write("plant", "m v=2 2").status(), 204);
}

#[test]
fn mqtt_sockets_that_never_send_connect_are_cut_off() {
    let s = TestServer::start_with_env(&[("SLUICE_MQTT__CONNECT_TIMEOUT_SECS", "1")]);
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(s.mqtt).unwrap())
        .chain((0..10).map(|_| TcpStream::connect(s.mqtt_ws).unwrap()))
        .collect();
    // A real client connects and publishes meanwhile.
    let (client, mut conn, answer) = sluice_tests::clients::mqtt_connect(&s, "meter", None, None);
    answer.expect("CONNECT while idle sockets wait");
    std::thread::spawn(move || for _ in conn.iter() {});
    client
        .publish(
            "ingest/default",
            rumqttc::QoS::AtLeastOnce,
            false,
            "beside v=1 1",
        )
        .unwrap();
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM beside",
        1,
        Duration::from_secs(20),
    );
    for c in &mut idle {
        assert!(
            closed_within(c, Duration::from_secs(10)),
            "a socket that sent no CONNECT was kept"
        );
    }
}

#[test]
fn one_client_address_cannot_take_every_mqtt_connection() {
    use sluice_tests::clients::{mqtt_connect, mqtt_ws_publish, WsTarget};
    let s = TestServer::start_with_env(&[("SLUICE_MQTT__MAX_CONNECTIONS_PER_CLIENT", "3")]);
    let mut held = Vec::new();
    for i in 0..3 {
        let (client, conn, answer) = mqtt_connect(&s, &format!("dev-{i}"), None, None);
        answer.expect("a connection within the limit");
        held.push((client, conn));
    }
    // Past the limit, over TCP and over WebSocket alike.
    let (_c, _conn, answer) = mqtt_connect(&s, "dev-3", None, None);
    assert!(
        answer.is_err(),
        "a fourth connection from one address got in"
    );
    let ws = WsTarget {
        host: "127.0.0.1",
        port: s.mqtt_ws.port(),
        ca: None,
        login: None,
    };
    let (ok, out) = mqtt_ws_publish(&ws, "ingest/default", "over v=1 1");
    assert!(!ok, "a WebSocket connection past the limit got in: {out}");
    assert!(s.metric("sluice_mqtt_connections_refused_total") >= 2.0);
    // A connection that ends gives its slot back.
    let (client, mut conn) = held.pop().unwrap();
    client.disconnect().unwrap();
    for event in conn.iter() {
        if event.is_err() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, _conn, answer) = mqtt_connect(&s, "dev-4", None, None);
        if answer.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot was not given back: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_client_address_cannot_take_every_raw_tcp_connection() {
    let s = TestServer::start_with_env(&[("SLUICE_LP_TCP__MAX_CONNECTIONS_PER_CLIENT", "2")]);
    // Each core accepts on its own, so which of the three is the one too
    // many depends on the order the cores took them.
    let (mut held, refused): (Vec<TcpStream>, Vec<TcpStream>) = (0..3)
        .map(|_| TcpStream::connect(s.lp_tcp).unwrap())
        .partition(|c| {
            let mut c = c.try_clone().unwrap();
            !closed_within(&mut c, Duration::from_secs(2))
        });
    assert_eq!(
        (held.len(), refused.len()),
        (2, 1),
        "two connections from one address are kept, the third closed"
    );
    // The two within the limit still write.
    held[0].write_all(b"held v=1 1\n").unwrap();
    held[1].write_all(b"held v=2 2\n").unwrap();
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM held",
        2,
        Duration::from_secs(20),
    );
    assert!(s.metric("sluice_lp_tcp_connections_refused_total") >= 1.0);
    // A connection that ends gives its slot back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(s.lp_tcp).unwrap();
        if !closed_within(&mut c, Duration::from_millis(300)) {
            c.write_all(b"held v=3 3\n").unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot was not given back"
        );
    }
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM held",
        3,
        Duration::from_secs(20),
    );
}

#[test]
fn a_silent_raw_tcp_connection_is_closed_and_its_complete_lines_kept() {
    let s = TestServer::start_with_env(&[("SLUICE_LP_TCP__IDLE_TIMEOUT_SECS", "2")]);
    let mut c = TcpStream::connect(s.lp_tcp).unwrap();
    // A whole line, then one cut off by the stall.
    c.write_all(b"idle,host=a v=1 1\nidle,host=b v=").unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(15)),
        "a silent connection was kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM idle",
        1,
        Duration::from_secs(20),
    );
    assert_eq!(
        s.scalar("default", "SELECT count(*) FROM idle WHERE host = 'b'"),
        Some(0)
    );
    // A connection that keeps talking is not cut off by the timeout.
    let mut busy = TcpStream::connect(s.lp_tcp).unwrap();
    for i in 0..5 {
        busy.write_all(format!("idle,host=c v={i} {}\n", i + 10).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
    }
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM idle WHERE host = 'c'",
        5,
        Duration::from_secs(20),
    );
}
