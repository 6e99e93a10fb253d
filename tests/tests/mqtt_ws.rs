//! MQTT over WebSocket, as browser dashboards and web HMIs speak it: a
//! real client (paho-mqtt, `tests/mqtt/ws_client.py`) against the broker's
//! WebSocket listener, mixed with clients on plain MQTT.

use std::time::Duration;

use rumqttc::QoS;
use sluice_tests::clients::{mqtt_connect, mqtt_ws_publish, mqtt_ws_subscribe, WsTarget};
use sluice_tests::TestServer;

fn ws(s: &TestServer) -> WsTarget<'static> {
    WsTarget {
        host: "127.0.0.1",
        port: s.mqtt_ws.port(),
        ca: None,
        login: None,
    }
}

#[test]
fn websocket_clients_publish_into_tables_and_subscribe_to_plain_publishers() {
    let s = TestServer::start();
    let (ok, out) = mqtt_ws_publish(
        &ws(&s),
        "ingest/default",
        "wsline,host=a v=1 1\nwsline,host=b v=2 2",
    );
    assert!(ok, "{out}");
    s.wait_scalar(
        "default",
        "SELECT count(*) FROM wsline",
        2,
        Duration::from_secs(20),
    );

    // A browser watching alarms sees what a PLC publishes over plain MQTT.
    let sub = mqtt_ws_subscribe(&ws(&s), "alarms/#");
    let (plc, mut conn, answer) = mqtt_connect(&s, "plc-1", None, None);
    answer.expect("plain MQTT CONNECT");
    std::thread::spawn(move || for _ in conn.iter() {});
    plc.publish("alarms/line3", QoS::AtLeastOnce, false, "overheat")
        .unwrap();
    assert_eq!(sub.message().expect("a message over WebSocket"), "overheat");
}

#[test]
fn websocket_can_be_switched_off() {
    let s = TestServer::start_with_env(&[("SLUICE_MQTT__WEBSOCKET", "false")]);
    let (ok, out) = mqtt_ws_publish(&ws(&s), "ingest/default", "x v=1 1");
    assert!(!ok, "WebSocket answered while off: {out}");
    assert!(out.contains("connect failed"), "{out}");
}
