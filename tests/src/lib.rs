//! End-to-end test support: [`TestServer`] runs the real `sluice` binary on
//! free loopback ports with its own data directory, and talks to it the way
//! clients do (HTTP and TCP).

pub mod clients;
pub mod pki;
pub mod webdriver;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use reqwest::blocking::Client;
use serde_json::Value;

/// Path of the `sluice` binary built for this test run.
pub fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    // Tests run from target/<profile>/deps/; the binary sits one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("sluice");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p sluice` before the end-to-end tests",
        bin.display()
    );
    bin
}

/// A free loopback port below the kernel's ephemeral range: a port handed
/// out by `bind(0)` can be taken again as the local port of some client
/// connection, which then blocks the server from binding it on restart.
/// A port is handed out once per test process: tests start servers in
/// parallel, and a port free when one test looked may be a port another
/// test's server is about to bind.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

pub struct TestServer {
    child: Option<Child>,
    pub http: SocketAddr,
    pub lp_tcp: SocketAddr,
    pub mqtt: SocketAddr,
    /// MQTT over TLS, when the config has `[tls]`.
    pub mqtt_tls: SocketAddr,
    /// MQTT over WebSocket, and over secure WebSocket with `[tls]`.
    pub mqtt_ws: SocketAddr,
    pub mqtt_wss: SocketAddr,
    /// The PostgreSQL wire protocol port.
    pub pg: SocketAddr,
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    pub client: Client,
    log_path: PathBuf,
}

impl TestServer {
    /// A server on a fresh data directory.
    pub fn start() -> TestServer {
        Self::start_with_env(&[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        Self::start_with(env, None)
    }

    /// A server reading `toml` as its configuration file, and `env`.
    pub fn start_with(env: &[(&str, &str)], toml: Option<&str>) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::build(tmp.path().join("data"), env);
        if let Some(text) = toml {
            let path = tmp.path().join("sluice.toml");
            std::fs::write(&path, text).expect("write config");
            s.config = Some(path);
        }
        s._tmp = Some(tmp);
        s.spawn();
        s
    }

    /// A server on `tmp/data`, which the caller may have filled.
    pub fn start_in(tmp: tempfile::TempDir, env: &[(&str, &str)]) -> TestServer {
        let mut s = Self::build(tmp.path().join("data"), env);
        s._tmp = Some(tmp);
        s.spawn();
        s
    }

    fn build(data_dir: PathBuf, env: &[(&str, &str)]) -> TestServer {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let lp_tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mqtt_tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mqtt_ws = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mqtt_wss = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pg = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_path = data_dir.with_extension("log");
        TestServer {
            child: None,
            http,
            lp_tcp,
            mqtt,
            mqtt_tls,
            mqtt_ws,
            mqtt_wss,
            pg,
            data_dir,
            config: None,
            _tmp: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            log_path,
        }
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_ready();
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(self.http.to_string())
            .arg("--lp-tcp-addr")
            .arg(self.lp_tcp.to_string())
            .arg("--mqtt-addr")
            .arg(self.mqtt.to_string())
            .arg("--pg-addr")
            .arg(self.pg.to_string())
            .arg("--shards")
            .arg("2")
            .env("RUST_LOG", "info")
            .env("SLUICE_MQTT__TLS_ADDR", self.mqtt_tls.to_string())
            .env("SLUICE_MQTT__WS_ADDR", self.mqtt_ws.to_string())
            .env("SLUICE_MQTT__WSS_ADDR", self.mqtt_wss.to_string())
            // The disk the tests run on is shared with builds; a test that
            // is about a full disk sets its own reserve.
            .env("SLUICE_STORAGE__MIN_FREE_BYTES", (8u64 << 20).to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn sluice"));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut port_retries = 0;
        // Over HTTPS this client cannot ask; the server says when it is.
        let tls = self.config_text().contains("[tls]");
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    // Right after a SIGKILL the kernel may still hold the old
                    // process's ports for a moment; that is not a server bug.
                    if port_retries < 25
                        && self
                            .log()
                            .lines()
                            .last()
                            .is_some_and(|l| l.contains("Address already in use"))
                    {
                        port_retries += 1;
                        std::thread::sleep(Duration::from_millis(200));
                        self.child = None;
                        self.spawn_process();
                        continue;
                    }
                    panic!("sluice exited during startup ({status}):\n{}", self.log());
                }
            }
            if tls {
                if self.log().contains("sluice is ready") {
                    return;
                }
            } else if let Ok(r) = self.client.get(self.url("/health")).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sluice did not become ready:\n{}", self.log());
    }

    fn config_text(&self) -> String {
        self.config
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Sets (or with `None` removes) an environment variable for the next
    /// start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Waits for the server to exit on its own; `None` if it still runs
    /// after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts the server again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn();
    }

    /// Adds the configured API token, if the server was started with one,
    /// or else the first superuser's password, if the test gave it.
    fn authed(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        let var = |name: &str| self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        match (
            var("SLUICE_HTTP__AUTH_TOKEN"),
            var("SLUICE_INITIAL_ADMIN_PASSWORD"),
        ) {
            (Some(t), _) => rb.header("Authorization", format!("Token {t}")),
            (None, Some(p)) => rb.basic_auth("admin", Some(p)),
            (None, None) => rb,
        }
    }

    pub fn write(&self, db: &str, body: &str) -> reqwest::blocking::Response {
        self.authed(self.client.post(self.url(&format!("/write?db={db}"))))
            .body(body.to_string())
            .send()
            .expect("write request")
    }

    /// Runs SQL; panics unless it answers 200. Returns the JSON document.
    pub fn sql(&self, db: &str, sql: &str) -> Value {
        let r = self
            .authed(self.client.post(self.url("/api/v1/sql")))
            .json(&sql_body(db, sql))
            .send()
            .expect("sql request");
        let status = r.status();
        let text = r.text().expect("sql body");
        assert!(
            status.is_success(),
            "SQL {sql:?} failed with {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
    }

    /// Rows of a query's result.
    pub fn rows(&self, db: &str, sql: &str) -> Vec<Vec<Value>> {
        let v = self.sql(db, sql);
        serde_json::from_value(v["rows"].clone()).expect("rows")
    }

    /// Runs SQL and returns the status and body, whatever they are.
    pub fn sql_raw(&self, db: &str, sql: &str) -> (u16, String) {
        let r = self
            .authed(self.client.post(self.url("/api/v1/sql")))
            .json(&sql_body(db, sql))
            .send()
            .expect("sql request");
        let status = r.status().as_u16();
        (status, r.text().expect("sql body"))
    }

    /// The first value of `sql`'s answer as an integer; `None` while the
    /// database does not exist yet, on an error, or for NULL.
    pub fn scalar(&self, db: &str, sql: &str) -> Option<i64> {
        let (status, body) = self.sql_raw(db, sql);
        if status != 200 {
            return None;
        }
        serde_json::from_str::<Value>(&body).ok()?["rows"][0][0].as_i64()
    }

    /// Polls `sql` until its first value is `want`; fails with the server
    /// log after `timeout`. For data that arrives asynchronously (MQTT,
    /// Kafka), where the database may not exist yet.
    pub fn wait_scalar(&self, db: &str, sql: &str, want: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.scalar(db, sql);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql}: wanted {want}, got {got:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST /api/v1/flush`: buffers to chunks, then compaction.
    pub fn flush(&self) {
        let r = self
            .authed(self.client.post(self.url("/api/v1/flush")))
            .send()
            .expect("flush request");
        let status = r.status();
        assert!(
            status.is_success(),
            "flush failed with {status}: {}",
            r.text().unwrap_or_default()
        );
    }

    /// The `EXPLAIN` text of a query.
    pub fn explain(&self, db: &str, sql: &str) -> String {
        self.rows(db, &format!("EXPLAIN {sql}"))
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One sample of `/metrics`, summed over its labels.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn count(&self, db: &str, table: &str) -> i64 {
        let rows = self.rows(db, &format!("SELECT count(*) FROM \"{table}\""));
        rows[0][0].as_i64().expect("count")
    }

    pub fn tcp_send(&self, data: &[u8]) {
        let mut s = TcpStream::connect(self.lp_tcp).expect("connect lp tcp");
        s.write_all(data).expect("tcp write");
    }
}

/// The SQL request; an empty `db` names none (for `system` tables).
fn sql_body(db: &str, sql: &str) -> Value {
    if db.is_empty() {
        serde_json::json!({ "sql": sql })
    } else {
        serde_json::json!({ "db": db, "sql": sql })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sluice log ---\n{}", self.log());
        }
        self.kill9();
    }
}

/// An SQL request's failure as an sqllogictest driver reports it
/// (`[SQLSTATE] message`, or what went wrong with the request).
#[derive(Debug)]
pub struct SqlError(pub String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}
