//! With a token configured, no port and no endpoint reads or writes without
//! it: every HTTP endpoint, the PostgreSQL port (SCRAM-SHA-256, driven by
//! psql), the MQTT broker (rumqttc) and the raw TCP port, tried without
//! credentials and with wrong ones. Each refusal says why and never echoes the secret.

use std::net::TcpStream;
use std::time::Duration;

use rumqttc::{Client, QoS};
use sluice_tests::clients::{mqtt_ws_publish, WsTarget};
use sluice_tests::TestServer;

const TOKEN: &str = "tok-8c1f0e9d";

fn secured(extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![("SLUICE_HTTP__AUTH_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    TestServer::start_with_env(&env)
}

/// Every HTTP endpoint that reads or writes, with its method.
const ENDPOINTS: [(&str, &str); 12] = [
    ("POST", "/write?db=x"),
    ("POST", "/api/v2/write?bucket=x"),
    ("GET", "/query?q=SHOW%20DATABASES"),
    ("GET", "/api/v1/sql?q=SELECT%201"),
    ("POST", "/api/v1/sql?q=SELECT%201"),
    ("POST", "/api/v1/flush"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/schema"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/0123456789abcdef"),
];

/// An HTTP client whose connections come from `from` (any 127.0.0.x reaches
/// a server on 127.0.0.1, as a second host would).
fn client_from(from: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

#[test]
fn every_http_endpoint_refuses_strangers_and_wrong_tokens() {
    let s = secured(&[]);
    for (i, (method, path)) in ENDPOINTS.into_iter().enumerate() {
        // Each endpoint from an address of its own, so that the failures
        // stay below the per-address login limit.
        let c = client_from(&format!("127.0.1.{}", i + 1));
        let req = |auth: Option<&str>| {
            let mut r = match method {
                "GET" => c.get(s.url(path)),
                "DELETE" => c.delete(s.url(path)),
                _ => c.post(s.url(path)).body("m v=1 1"),
            };
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send().unwrap()
        };
        for (auth, why) in [
            (None, "Token"),
            (Some("Token nope"), "invalid token"),
            (Some("Bearer nope"), "invalid token"),
            (Some("Basic dXNlcjpub3Bl"), "wrong user name or password"),
        ] {
            let r = req(auth);
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
            let body = r.text().unwrap();
            assert!(body.contains(why), "{method} {path}: {body}");
            assert!(!body.contains(TOKEN), "{method} {path} leaks the token");
        }
        let ok = req(Some(&format!("Token {TOKEN}")));
        assert!(
            ok.status().is_success() || ok.status() == 400 || ok.status() == 404,
            "{method} {path} with the token: {}",
            ok.status()
        );
    }
    // Liveness stays open: it says nothing but "up".
    let c = reqwest::blocking::Client::new();
    assert_eq!(c.get(s.url("/health")).send().unwrap().status(), 200);
    assert!(!s.log().contains(TOKEN), "the log holds the token");
}

#[test]
fn metrics_can_be_opened_to_a_scraper_alone() {
    let s = secured(&[("SLUICE_HTTP__METRICS_PUBLIC", "true")]);
    let c = reqwest::blocking::Client::new();
    assert_eq!(c.get(s.url("/metrics")).send().unwrap().status(), 200);
    assert_eq!(c.get(s.url("/api/v1/status")).send().unwrap().status(), 401);
}

fn psql(s: &TestServer, password: Option<&str>) -> (bool, String) {
    sluice_tests::clients::psql(s, "operator", password, "plant", "SELECT 40 + 2")
}

#[test]
fn the_postgresql_port_asks_for_the_token_by_scram() {
    let s = secured(&[]);
    assert_eq!(s.write("plant", "m v=1 1").status(), 204);
    let (ok, out) = psql(&s, None);
    assert!(!ok, "no password got in: {out}");
    assert!(out.contains("password"), "{out}");
    let (ok, out) = psql(&s, Some("wrong"));
    assert!(!ok, "a wrong password got in: {out}");
    assert!(
        out.contains("password authentication failed") || out.contains("authentication"),
        "{out}"
    );
    let (ok, out) = psql(&s, Some(TOKEN));
    assert!(ok, "the token was refused: {out}");
    assert_eq!(out.trim(), "42");
}

#[test]
fn raw_tcp_is_closed_while_authentication_is_on() {
    let s = secured(&[]);
    assert!(
        TcpStream::connect_timeout(&s.lp_tcp, Duration::from_secs(2)).is_err(),
        "the TCP line protocol port is open without credentials"
    );
    assert!(
        s.log().contains("line protocol over TCP is off"),
        "{}",
        s.log()
    );
    let status: serde_json::Value = reqwest::blocking::Client::new()
        .get(s.url("/api/v1/status"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tcp = &status["ingest"]["frontends"][1];
    assert_eq!(
        (&tcp["name"], &tcp["enabled"]),
        (&"tcp".into(), &false.into())
    );

    // The operator may open it on a network they trust.
    let open = secured(&[("SLUICE_LP_TCP__ALLOW_UNAUTHENTICATED", "true")]);
    open.tcp_send(b"trusted v=1 1\n");
    open.wait_scalar(
        "default",
        "SELECT count(*) FROM trusted",
        1,
        Duration::from_secs(20),
    );
}

/// What the broker answers a CONNECT with these credentials.
fn mqtt_connect(s: &TestServer, login: Option<(&str, &str)>) -> (Client, Result<(), String>) {
    let (client, mut conn, answer) =
        sluice_tests::clients::mqtt_connect(s, "sec-probe", login, None);
    if answer.is_ok() {
        std::thread::spawn(move || for _ in conn.iter() {});
    }
    (client, answer)
}

#[test]
fn the_mqtt_broker_asks_for_the_token() {
    let s = secured(&[]);
    let (_, anonymous) = mqtt_connect(&s, None);
    assert!(anonymous.is_err(), "an anonymous client got in");
    let (_, wrong) = mqtt_connect(&s, Some(("plc-7", "guess")));
    assert!(wrong.is_err(), "a wrong password got in");
    let (client, ok) = mqtt_connect(&s, Some(("plc-7", TOKEN)));
    ok.expect("the token as password");
    client
        .publish("ingest/plant", QoS::AtLeastOnce, false, "meter kw=3 1")
        .unwrap();
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM meter",
        1,
        Duration::from_secs(20),
    );

    // MQTT over WebSocket asks the same.
    let ws = |login| WsTarget {
        host: "127.0.0.1",
        port: s.mqtt_ws.port(),
        ca: None,
        login,
    };
    let (ok, out) = mqtt_ws_publish(&ws(None), "ingest/plant", "meter kw=4 2");
    assert!(!ok, "an anonymous WebSocket client got in: {out}");
    assert!(out.contains("refused"), "{out}");
    let (ok, out) = mqtt_ws_publish(
        &ws(Some(("plc-7", "guess"))),
        "ingest/plant",
        "meter kw=4 2",
    );
    assert!(!ok, "a wrong password got in over WebSocket: {out}");
    let (ok, out) = mqtt_ws_publish(&ws(Some(("plc-7", TOKEN))), "ingest/plant", "meter kw=5 3");
    assert!(ok, "{out}");
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM meter",
        2,
        Duration::from_secs(20),
    );
}

#[test]
fn failed_logins_on_any_port_hold_back_their_address_on_every_port() {
    let s = secured(&[
        ("SLUICE_AUTH__MAX_FAILED_LOGINS", "3"),
        ("SLUICE_AUTH__FAILED_LOGIN_WINDOW_SECS", "120"),
    ]);
    let http = |c: &reqwest::blocking::Client, token: &str| {
        c.get(s.url("/api/v1/sql?q=SELECT%201"))
            .header("Authorization", format!("Token {token}"))
            .send()
            .unwrap()
    };
    let here = client_from("127.0.0.1");
    // One failure on each of three ports, all from 127.0.0.1.
    assert_eq!(http(&here, "guess").status(), 401);
    assert!(!psql(&s, Some("guess")).0);
    assert!(mqtt_connect(&s, Some(("plc-7", "guess"))).1.is_err());

    // Now the right secret is refused too, on every port, saying why.
    let r = http(&here, TOKEN);
    assert_eq!(r.status(), 429);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header");
    assert!((1..=120).contains(&wait), "{wait}");
    let body = r.text().unwrap();
    assert!(body.contains("too many failed logins"), "{body}");
    let (ok, out) = psql(&s, Some(TOKEN));
    assert!(!ok, "the PostgreSQL port let a held-back address in: {out}");
    assert!(out.contains("too many failed logins"), "{out}");
    let (_, mqtt) = mqtt_connect(&s, Some(("plc-7", TOKEN)));
    assert!(mqtt.is_err(), "the broker let a held-back address in");

    // Another address is not held back.
    let there = client_from("127.0.0.2");
    assert_eq!(http(&there, TOKEN).status(), 200);
    assert!(
        s.log().contains("too many failed logins"),
        "the lockout is not logged"
    );
    assert!(!s.log().contains(TOKEN), "the log holds the token");
}
