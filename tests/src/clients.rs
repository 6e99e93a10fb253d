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
