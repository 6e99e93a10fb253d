//! TLS on the HTTP API, the PostgreSQL port and MQTT, with certificates
//! made by the openssl command line, checked with curl, psql, mosquitto's
//! clients and Python's ssl module: the right CA verifies, a wrong CA and plain HTTP are refused,
//! SIGHUP swaps the certificate without dropping an open connection, and a
//! client CA makes client certificates mandatory.

use std::process::{Command, Stdio};

use sluice_tests::pki::{run, Pki};
use sluice_tests::TestServer;

fn curl(s: &TestServer, args: &[&str], path: &str) -> (bool, String) {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", s.http.port())))
}

#[test]
fn https_verifies_against_its_ca_and_nothing_else() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    let ca1 = pki.path("ca1.pem");
    let ca2 = pki.path("ca2.pem");
    let (ok, out) = curl(&s, &["--cacert", ca1.to_str().unwrap()], "/health");
    assert!(ok, "{out}");
    let (ok, out) = curl(
        &s,
        &[
            "--cacert",
            ca1.to_str().unwrap(),
            "-XPOST",
            "--data-binary",
            "m v=1 1",
        ],
        "/write?db=tls",
    );
    assert!(ok, "{out}");
    let (ok, out) = curl(
        &s,
        &[
            "--cacert",
            ca1.to_str().unwrap(),
            "--data-urlencode",
            "q=SELECT count(*) FROM tls.m",
            "-G",
        ],
        "/api/v1/sql",
    );
    assert!(ok && out.contains("[[1]]"), "{out}");
    let (ok, out) = curl(&s, &["--cacert", ca2.to_str().unwrap()], "/health");
    assert!(!ok, "a certificate of another CA was accepted: {out}");
    let (ok, out) = run(Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(s.url("/health")));
    assert!(!ok, "plain HTTP was answered on the TLS port: {out}");
}

#[test]
fn sighup_swaps_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    // One connection, kept open across the reload: it asks before and after.
    let script = r#"
import http.client, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
c.request("GET", "/health"); r = c.getresponse(); r.read(); assert r.status == 200
print("before", flush=True)
sys.stdin.readline()
c.request("GET", "/health"); r = c.getresponse(); r.read(); assert r.status == 200
print("after")
"#;
    let mut held = Command::new("python3")
        .args(["-c", script, &s.http.port().to_string()])
        .arg(pki.path("ca1.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "before");

    for ext in ["pem", "key"] {
        std::fs::copy(
            pki.path(&format!("server2.{ext}")),
            pki.path(&format!("server.{ext}")),
        )
        .unwrap();
    }
    let kill = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.log().contains("TLS certificate reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ca2 = pki.path("ca2.pem");
    let (ok, text) = curl(&s, &["--cacert", ca2.to_str().unwrap()], "/health");
    assert!(ok, "the new certificate is not served: {text}");
    let ca1 = pki.path("ca1.pem");
    let (ok, _) = curl(&s, &["--cacert", ca1.to_str().unwrap()], "/health");
    assert!(
        !ok,
        "the old certificate is still served to new connections"
    );

    use std::io::Write as _;
    writeln!(held.stdin.as_mut().unwrap()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(held.wait().unwrap().success(), "the open connection broke");
    assert_eq!(rest.trim(), "after");

    // A broken file is refused and the certificate in use stays.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.log().contains("TLS reload failed") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (ok, text) = curl(&s, &["--cacert", ca2.to_str().unwrap()], "/health");
    assert!(ok, "{text}");
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(true)));
    let ca1 = pki.path("ca1.pem");
    let (ok, out) = curl(&s, &["--cacert", ca1.to_str().unwrap()], "/health");
    assert!(!ok, "no client certificate got in: {out}");
    let (ok, out) = curl(
        &s,
        &[
            "--cacert",
            ca1.to_str().unwrap(),
            "--cert",
            pki.path("client.pem").to_str().unwrap(),
            "--key",
            pki.path("client.key").to_str().unwrap(),
        ],
        "/health",
    );
    assert!(ok, "{out}");
    // Signed by another CA: refused.
    let (ok, out) = curl(
        &s,
        &[
            "--cacert",
            ca1.to_str().unwrap(),
            "--cert",
            pki.path("server2.pem").to_str().unwrap(),
            "--key",
            pki.path("server2.key").to_str().unwrap(),
        ],
        "/health",
    );
    assert!(!ok, "a client certificate of another CA got in: {out}");
}

#[test]
fn psql_verifies_the_server_over_tls() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    let (ok, out) = curl(
        &s,
        &[
            "--cacert",
            pki.path("ca1.pem").to_str().unwrap(),
            "-XPOST",
            "--data-binary",
            "m v=7 1",
        ],
        "/write?db=plant",
    );
    assert!(ok, "{out}");
    let conn = |ca: &str| {
        format!(
            "host=127.0.0.1 port={} dbname=plant user=ops sslmode=verify-ca sslrootcert={}",
            s.pg.port(),
            pki.path(ca).display()
        )
    };
    let (ok, out) = run(Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT v FROM m"])
        .arg(conn("ca1.pem"))
        .env("PGCONNECT_TIMEOUT", "10"));
    assert!(ok && out.trim() == "7", "{out}");
    let (ok, out) = run(Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .arg(conn("ca2.pem"))
        .env("PGCONNECT_TIMEOUT", "10"));
    assert!(!ok, "psql accepted a server its CA did not sign: {out}");
    let plain = format!(
        "host=127.0.0.1 port={} dbname=plant user=ops sslmode=disable",
        s.pg.port()
    );
    let (ok, out) = run(Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .arg(plain)
        .env("PGCONNECT_TIMEOUT", "10"));
    assert!(!ok, "a plaintext client got in: {out}");
    assert!(out.contains("only TLS connections"), "{out}");
}

#[test]
fn mqtt_speaks_tls_on_its_own_port_and_plain_mqtt_is_off() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    let pub_ = |ca: &str, port: u16, msg: &str| {
        run(Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-V",
                "mqttv311",
            ])
            .args(["--cafile", pki.path(ca).to_str().unwrap()])
            .args(["-i", "tls-probe", "-t", "ingest/plant", "-m", msg]))
    };
    let (ok, out) = pub_("ca1.pem", s.mqtt_tls.port(), "tls v=7 1");
    assert!(ok, "mosquitto_pub over TLS: {out}");
    let ca = pki.path("ca1.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, out) = curl(
            &s,
            &["--cacert", ca.to_str().unwrap()],
            "/api/v1/sql?db=plant&q=SELECT%20v%20FROM%20tls",
        );
        if out.contains("[[7.0]]") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS publish was not stored: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A CA that did not sign the server's certificate is refused.
    let (ok, out) = pub_("ca2.pem", s.mqtt_tls.port(), "tls v=8 2");
    assert!(
        !ok,
        "mosquitto_pub trusted a server its CA did not sign: {out}"
    );
    // Plain MQTT is not served next to TLS.
    assert!(
        std::net::TcpStream::connect_timeout(&s.mqtt, std::time::Duration::from_secs(2)).is_err(),
        "plain MQTT is open while [tls] is set"
    );
    // A subscriber over TLS gets what a publisher over TLS sends.
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &s.mqtt_tls.port().to_string(),
            "-V",
            "mqttv311",
        ])
        .args(["--cafile", pki.path("ca1.pem").to_str().unwrap()])
        .args(["-t", "alerts/#", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let (ok, out) = run(Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &s.mqtt_tls.port().to_string(),
            "-q",
            "1",
        ])
        .args(["--cafile", pki.path("ca1.pem").to_str().unwrap()])
        .args(["-t", "alerts/line3", "-m", "overheat"]));
    assert!(ok, "{out}");
    let got = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "overheat");
}

/// Sends `lines` over TLS to the raw TCP port with Python's ssl module,
/// trusting `ca`, presenting `client` (a `.pem`/`.key` pair) if given.
fn tls_lines(s: &TestServer, pki: &Pki, lines: &str, client: Option<&str>) -> (bool, String) {
    let script = r#"
import socket, ssl, sys
port, lines, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 4:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as t:
        t.sendall(lines.encode())
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(s.lp_tcp.port().to_string())
        .arg(lines)
        .arg(pki.path("ca1.pem"));
    if let Some(c) = client {
        cmd.arg(pki.path(&format!("{c}.pem")))
            .arg(pki.path(&format!("{c}.key")));
    }
    run(&mut cmd)
}

/// Polls `sql` over HTTPS (with `auth` curl arguments) until its answer
/// holds `want`.
fn wait_https(s: &TestServer, pki: &Pki, auth: &[&str], sql: &str, want: &str) -> String {
    let ca = pki.path("ca1.pem");
    let mut args = vec!["--cacert", ca.to_str().unwrap()];
    args.extend_from_slice(auth);
    let path = format!("/api/v1/sql?db=default&q={}", sql.replace(' ', "%20"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, out) = curl(s, &args, &path);
        if out.contains(want) || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn raw_tcp_speaks_tls_and_with_authentication_takes_client_certificates() {
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    let (ok, out) = tls_lines(&s, &pki, "viatls v=1 1\nviatls v=2 2\n", None);
    assert!(ok, "{out}");
    let out = wait_https(&s, &pki, &[], "SELECT count(*) FROM viatls", "[[2]]");
    assert!(out.contains("[[2]]"), "{out}");
    // Plain text on the TLS port stores nothing.
    s.tcp_send(b"plain v=1 1\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The handshake failed, so nothing can arrive later: one look suffices.
    let out = wait_https(&s, &pki, &[], "SELECT count(*) FROM plain", "");
    assert!(!out.contains("[[1]]"), "plain text was stored: {out}");
    drop(s);

    // With authentication on, raw TCP opens only when client certificates
    // are required, and then takes only clients that show one.
    let config = format!("{}[auth]\nenabled = true\n", pki.config(true));
    let s = TestServer::start_with(
        &[("SLUICE_INITIAL_ADMIN_PASSWORD", "tls-admin-pw")],
        Some(&config),
    );
    let (ok, out) = tls_lines(&s, &pki, "certified v=1 1\n", Some("client"));
    assert!(ok, "{out}");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let admin = [
        "-u",
        "admin:tls-admin-pw",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let out = wait_https(&s, &pki, &admin, "SELECT count(*) FROM certified", "[[1]]");
    assert!(out.contains("[[1]]"), "{out}");
    let _ = tls_lines(&s, &pki, "uncertified v=1 1\n", None);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = wait_https(&s, &pki, &admin, "SELECT count(*) FROM uncertified", "");
    assert!(
        !out.contains("[[1]]"),
        "a client without a certificate wrote: {out}"
    );
}

#[test]
fn mqtt_over_secure_websocket_uses_the_certificate_and_plain_websocket_is_off() {
    use sluice_tests::clients::{mqtt_ws_publish, WsTarget};
    let pki = Pki::new();
    let s = TestServer::start_with(&[], Some(&pki.config(false)));
    let (good, bad) = (pki.path("ca1.pem"), pki.path("ca2.pem"));
    let wss = |ca| WsTarget {
        host: "localhost",
        port: s.mqtt_wss.port(),
        ca: Some(ca),
        login: None,
    };
    let (ok, out) = mqtt_ws_publish(&wss(&good), "ingest/default", "wss v=3 1");
    assert!(ok, "{out}");
    let out = wait_https(&s, &pki, &[], "SELECT count(*) FROM wss", "[[1]]");
    assert!(out.contains("[[1]]"), "{out}");
    let (ok, out) = mqtt_ws_publish(&wss(&bad), "ingest/default", "wss v=4 2");
    assert!(
        !ok,
        "a CA that did not sign the certificate was trusted: {out}"
    );
    assert!(
        std::net::TcpStream::connect_timeout(&s.mqtt_ws, std::time::Duration::from_secs(2))
            .is_err(),
        "plain WebSocket is open while [tls] is set"
    );
}
