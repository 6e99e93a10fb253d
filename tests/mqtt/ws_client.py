"""MQTT over WebSocket, as a browser's client speaks it (paho-mqtt).

    ws_client.py pub HOST PORT TOPIC PAYLOAD [--ca FILE] [--user U --password P]
    ws_client.py sub HOST PORT TOPIC [--ca FILE] [--user U --password P]

pub publishes at QoS 1 and waits for the PUBACK; sub prints the first
message it receives. Exit status 0 on success; otherwise the reason is on
stderr (CONNACK refusal, connection error, timeout).
"""
import argparse
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pub", "sub"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("topic")
    ap.add_argument("payload", nargs="?", default="")
    ap.add_argument("--ca")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--timeout", type=float, default=15)
    a = ap.parse_args()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="websockets",
                    protocol=mqtt.MQTTv311)
    c.ws_set_options(path="/mqtt")
    if a.ca:
        c.tls_set(ca_certs=a.ca)
    if a.user:
        c.username_pw_set(a.user, a.password)
    connected = threading.Event()
    got = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason, props):
        result["connack"] = str(reason)
        if reason.is_failure:
            connected.set()
            return
        result["ok"] = True
        if a.mode == "sub":
            client.subscribe(a.topic, qos=1)
        connected.set()

    def on_subscribe(client, userdata, mid, reasons, props):
        # The parent waits for this line before it publishes.
        print("subscribed", flush=True)

    def on_message(client, userdata, msg):
        result["message"] = msg.payload.decode("utf-8", "replace")
        got.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(a.host, a.port, keepalive=30)
    except Exception as e:  # refused, reset, TLS failure: the reason is the answer
        print(f"connect failed: {e}", file=sys.stderr)
        return 1
    c.loop_start()
    try:
        if not connected.wait(a.timeout):
            print("no CONNACK", file=sys.stderr)
            return 1
        if not result.get("ok"):
            print(f"refused: {result.get('connack')}", file=sys.stderr)
            return 1
        if a.mode == "pub":
            info = c.publish(a.topic, a.payload.encode(), qos=1)
            info.wait_for_publish(timeout=a.timeout)
            if not info.is_published():
                print("no PUBACK", file=sys.stderr)
                return 1
            return 0
        if not got.wait(a.timeout):
            print("no message", file=sys.stderr)
            return 1
        print(result["message"], flush=True)
        return 0
    finally:
        c.disconnect()
        c.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
