//! Real clients the end-to-end tests share: psql for the PostgreSQL port,
//! rumqttc for the broker.

use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{Client, ConnectReturnCode, Connection, Event, LastWill, MqttOptions, Packet, QoS};

use crate::TestServer;

/// Runs `sql` with psql as `user` (password, if any, from `PGPASSWORD`) in
/// database `db`; whether it succeeded, and all it printed.
pub fn psql(
    s: &TestServer,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
) -> (bool, String) {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(s.pg.ip().to_string())
        .arg("-p")
        .arg(s.pg.port().to_string())
        .args(["-U", user, "-d", db, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .expect("psql (apt-get install postgresql-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An MQTT client, connected (or not): the broker's answer to its CONNECT.
pub fn mqtt_connect(
    s: &TestServer,
    id: &str,
    login: Option<(&str, &str)>,
    will: Option<&str>,
) -> (Client, Connection, Result<(), String>) {
    let mut o = MqttOptions::new(id, s.mqtt.ip().to_string(), s.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    if let Some(t) = will {
        o.set_last_will(LastWill::new(t, "{\"v\": 0}", QoS::AtLeastOnce, false));
    }
    let (client, mut conn) = Client::new(o, 10);
    let answer = loop {
        match conn.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                break if ack.code == ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("{:?}", ack.code))
                };
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break Err(e.to_string()),
            Err(e) => break Err(format!("no CONNACK: {e:?}")),
        }
    };
    (client, conn, answer)
}

/// How [`mqtt_ws`] reaches the broker over WebSocket.
pub struct WsTarget<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Set: wss, trusting this CA.
    pub ca: Option<&'a std::path::Path>,
    pub login: Option<(&'a str, &'a str)>,
}

fn ws_command(t: &WsTarget, args: &[&str]) -> Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mqtt/ws_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(args[0])
        .arg(t.host)
        .arg(t.port.to_string())
        .args(&args[1..])
        .stdin(Stdio::null());
    if let Some(ca) = t.ca {
        cmd.arg("--ca").arg(ca);
    }
    if let Some((u, p)) = t.login {
        cmd.args(["--user", u, "--password", p]);
    }
    cmd
}

/// Publishes `payload` to `topic` at QoS 1 over WebSocket with paho-mqtt
/// (`tests/mqtt/ws_client.py`) and waits for the PUBACK: whether it came,
/// and what the client said.
pub fn mqtt_ws_publish(t: &WsTarget, topic: &str, payload: &str) -> (bool, String) {
    let out = ws_command(t, &["pub", topic, payload])
        .output()
        .expect("python3 with paho-mqtt (pip install paho-mqtt)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A WebSocket subscriber, subscribed: [`WsSubscriber::message`] gives
/// the first message it receives.
pub struct WsSubscriber {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl WsSubscriber {
    /// The first message's payload, or why none came.
    pub fn message(mut self) -> Result<String, String> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            return Ok(line.trim_end().to_string());
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Err(err)
    }
}

/// Subscribes to `topic` over WebSocket and returns once the SUBACK came.
pub fn mqtt_ws_subscribe(t: &WsTarget, topic: &str) -> WsSubscriber {
    use std::io::BufRead;
    let mut child = ws_command(t, &["sub", topic])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with paho-mqtt (pip install paho-mqtt)");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut out = std::io::BufReader::new(stdout);
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    assert_eq!(
        first.trim(),
        "subscribed",
        "the WebSocket subscriber did not subscribe"
    );
    WsSubscriber { child, out }
}
