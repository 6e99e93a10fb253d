//! Users, roles, grants and tokens, end to end: the first superuser, SQL
//! that manages the rest (over HTTP and through psql), and each entry point
//! (HTTP writes and SQL, the PostgreSQL port, the MQTT broker) allowing
//! exactly what the caller was granted, no more, from the moment it changes.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use rumqttc::{Client as MqttClient, Event, Packet, QoS};
use serde_json::Value;
use sluice_tests::TestServer;

const ADMIN_PW: &str = "first-admin-Pw-4d1c";

fn with_auth(toml: Option<&str>) -> TestServer {
    let toml = format!("[auth]\nenabled = true\n{}", toml.unwrap_or(""));
    TestServer::start_with(&[("SLUICE_INITIAL_ADMIN_PASSWORD", ADMIN_PW)], Some(&toml))
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// SQL as `user`; the status and the JSON answer.
fn sql_as(s: &TestServer, user: (&str, &str), db: &str, sql: &str) -> (u16, Value) {
    let r = http()
        .post(s.url("/api/v1/sql"))
        .basic_auth(user.0, Some(user.1))
        .json(&serde_json::json!({ "db": db, "sql": sql }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn admin(s: &TestServer, sql: &str) {
    let (status, body) = sql_as(s, ("admin", ADMIN_PW), "plant", sql);
    assert_eq!(status, 200, "{sql}: {body}");
}

fn write_as(
    s: &TestServer,
    auth: impl Fn(RequestBuilder) -> RequestBuilder,
    path: &str,
    body: &str,
) -> (u16, String) {
    let r = auth(http().post(s.url(path)))
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn count(s: &TestServer, sql: &str) -> i64 {
    s.rows("plant", sql)[0][0].as_i64().unwrap()
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_first_superuser_gets_a_generated_password_in_a_private_file() {
    let mut s = TestServer::start_with(&[], Some("[auth]\nenabled = true\n"));
    let file = s.data_dir.join("initial-admin-password");
    let pw = std::fs::read_to_string(&file)
        .expect("the password file")
        .trim()
        .to_string();
    assert!(pw.len() >= 20, "{pw:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the password file is readable by others");
    assert!(!s.log().contains(&pw), "the log holds the password");
    assert!(s.log().contains("initial-admin-password"), "{}", s.log());

    let (status, body) = sql_as(&s, ("admin", &pw), "public", "SELECT 40 + 2 AS n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], 42);
    let (status, _) = sql_as(&s, ("admin", "guess"), "public", "SELECT 1");
    assert_eq!(status, 401);

    // Only hashes reach the disk.
    admin_with(&s, &pw, "CREATE USER op WITH PASSWORD 'Op-Secret-99'");
    s.kill9();
    let mut all = Vec::new();
    files(&s.data_dir.join("meta"), &mut all);
    for (path, bytes) in &all {
        assert!(
            !holds(bytes, &pw),
            "{} holds the admin password",
            path.display()
        );
        assert!(
            !holds(bytes, "Op-Secret-99"),
            "{} holds a password",
            path.display()
        );
    }
    // The next start keeps the superuser (and the file) as they are.
    s.restart();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), pw);
    // op may log in (a query that reads no table needs no grant) and read
    // nothing.
    assert_eq!(
        sql_as(&s, ("op", "Op-Secret-99"), "public", "SELECT 1").0,
        200
    );
    let r = http()
        .post(s.url("/write?db=plant"))
        .basic_auth("admin", Some(&pw))
        .body("m v=1 1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = sql_as(&s, ("op", "Op-Secret-99"), "plant", "SELECT * FROM m");
    assert_eq!(status, 403, "{body}");
    let (status, body) = sql_as(
        &s,
        ("admin", &pw),
        "plant",
        "SELECT name, superuser FROM system.roles ORDER BY name",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([["admin", true], ["op", false]])
    );
}

fn admin_with(s: &TestServer, pw: &str, sql: &str) {
    let (status, body) = sql_as(s, ("admin", pw), "public", sql);
    assert_eq!(status, 200, "{sql}: {body}");
}

#[test]
fn grants_decide_every_http_call_and_take_effect_at_once() {
    let mut s = with_auth(None);
    for sql in [
        "CREATE ROLE readers",
        "GRANT READ ON DATABASE plant TO readers",
        "CREATE USER writer WITH PASSWORD 'w-pass'",
        "GRANT WRITE ON DATABASE plant TO writer",
        "CREATE USER viewer PASSWORD 'v-pass' IN ROLE readers",
    ] {
        admin(&s, sql);
    }
    let writer = |r: RequestBuilder| r.basic_auth("writer", Some("w-pass"));
    let viewer = |r: RequestBuilder| r.basic_auth("viewer", Some("v-pass"));

    // Telegraf's v1 output sends basic auth, or u= and p=.
    assert_eq!(write_as(&s, writer, "/write?db=plant", "m v=1 1").0, 204);
    assert_eq!(
        write_as(&s, |r| r, "/write?db=plant&u=writer&p=w-pass", "m v=2 2").0,
        204
    );
    assert_eq!(
        write_as(&s, writer, "/api/v2/write?bucket=plant", "m v=3 3").0,
        204
    );
    let (status, body) = write_as(&s, writer, "/write?db=other", "m v=1 1");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("writer may not write to database \\\"other\\\""),
        "{body}"
    );
    let (status, body) = write_as(&s, viewer, "/write?db=plant", "m v=9 9");
    assert_eq!(status, 403, "{body}");
    // Write does not include read.
    let (status, body) = sql_as(&s, ("writer", "w-pass"), "plant", "SELECT count(*) FROM m");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["sqlstate"], "42501");

    let (status, body) = sql_as(&s, ("viewer", "v-pass"), "plant", "SELECT count(*) FROM m");
    assert_eq!(
        (status, &body["rows"][0][0]),
        (200, &Value::from(3)),
        "{body}"
    );
    // A self-join, a subquery and latest() read the same database; one
    // that names another is refused whole.
    let (status, body) = sql_as(
        &s,
        ("viewer", "v-pass"),
        "plant",
        "SELECT * FROM latest('m')",
    );
    assert_eq!(status, 200, "{body}");
    s.write("secret", "pw v=1 1");
    for q in [
        "SELECT * FROM secret.pw",
        "SELECT * FROM m WHERE v IN (SELECT v FROM secret.pw)",
        "SELECT * FROM latest('secret.pw')",
        "SELECT * FROM system.roles",
    ] {
        let (status, body) = sql_as(&s, ("viewer", "v-pass"), "plant", q);
        assert_eq!(status, 403, "{q}: {body}");
        assert_eq!(body["sqlstate"], "42501", "{q}");
    }
    // Only a superuser manages users; anyone may change their own password.
    let (status, body) = sql_as(
        &s,
        ("viewer", "v-pass"),
        "plant",
        "CREATE USER intruder PASSWORD 'x'",
    );
    assert_eq!(
        (status, &body["sqlstate"]),
        (403, &Value::from("42501")),
        "{body}"
    );
    let (status, body) = sql_as(
        &s,
        ("viewer", "v-pass"),
        "plant",
        "ALTER USER viewer WITH PASSWORD 'v-pass-2'",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sql_as(&s, ("viewer", "v-pass"), "plant", "SELECT 1").0, 401);
    let viewer = |r: RequestBuilder| r.basic_auth("viewer", Some("v-pass-2"));

    // Relational tables follow the same grants: read, write, admin.
    admin(&s, "CREATE TABLE devices (id int PRIMARY KEY, site text)");
    admin(&s, "INSERT INTO devices VALUES (1, 'north')");
    let v = ("viewer", "v-pass-2");
    assert_eq!(
        sql_as(&s, v, "plant", "SELECT site FROM devices").1["rows"],
        serde_json::json!([["north"]])
    );
    let (status, body) = sql_as(&s, v, "plant", "INSERT INTO devices VALUES (2, 'south')");
    assert_eq!(status, 403, "{body}");
    admin(&s, "GRANT WRITE ON DATABASE plant TO viewer");
    assert_eq!(
        sql_as(&s, v, "plant", "INSERT INTO devices VALUES (2, 'south')").0,
        200
    );
    assert_eq!(write_as(&s, viewer, "/write?db=plant", "m v=4 4").0, 204);
    let (status, body) = sql_as(&s, v, "plant", "CREATE TABLE mine (id int PRIMARY KEY)");
    assert_eq!(status, 403, "{body}");
    let (status, body) = sql_as(&s, v, "plant", "ALTER TABLE m SET (retention = '30d')");
    assert_eq!(status, 403, "{body}");
    // What a constraint checks, a foreign key refers to, or a built-in
    // schema holds is no way around the grants.
    admin(&s, "CREATE TABLE secret.vault (k text PRIMARY KEY)");
    admin(&s, "INSERT INTO secret.vault VALUES ('gold')");
    admin(&s, "GRANT ADMIN ON DATABASE scratch TO viewer");
    assert_eq!(
        sql_as(&s, v, "scratch", "CREATE TABLE t (id int PRIMARY KEY)").0,
        200
    );
    assert_eq!(sql_as(&s, v, "scratch", "INSERT INTO t VALUES (1)").0, 200);
    for q in [
        "ALTER TABLE t ADD CONSTRAINT leak CHECK ((SELECT count(*) FROM secret.vault) = 0)",
        "CREATE TABLE probe (k text REFERENCES secret.vault (k))",
    ] {
        let (status, body) = sql_as(&s, v, "scratch", q);
        assert_eq!(
            (status, &body["sqlstate"]),
            (403, &Value::from("42501")),
            "{q}: {body}"
        );
    }
    for q in [
        "CREATE TABLE information_schema.columns (x int PRIMARY KEY)",
        "CREATE VIEW system.roles AS SELECT 1",
    ] {
        let (status, body) = sql_as(&s, ("admin", ADMIN_PW), "scratch", q);
        assert_eq!(status, 400, "{q}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("Sluice's own"),
            "{body}"
        );
    }
    // The join of both engines needs read on the one database.
    let (status, body) = sql_as(
        &s,
        v,
        "plant",
        "SELECT count(*) FROM m JOIN devices d ON d.id = 1",
    );
    assert_eq!(status, 200, "{body}");

    // Taking the role away takes its grants away, without a restart.
    admin(&s, "REVOKE readers FROM viewer");
    assert_eq!(sql_as(&s, v, "plant", "SELECT count(*) FROM m").0, 403);
    let rows = s.rows(
        "plant",
        "SELECT role, database, privileges FROM system.role_grants ORDER BY role",
    );
    assert_eq!(
        rows,
        serde_json::from_value::<Vec<Vec<Value>>>(serde_json::json!([
            ["readers", "plant", "read"],
            ["viewer", "plant", "write"],
            ["viewer", "scratch", "admin"],
            ["writer", "plant", "write"]
        ]))
        .unwrap()
    );

    // All of it is durable.
    s.kill9();
    s.restart();
    assert_eq!(write_as(&s, writer, "/write?db=plant", "m v=5 5").0, 204);
    assert_eq!(sql_as(&s, v, "plant", "SELECT count(*) FROM m").0, 403);
    assert_eq!(
        sql_as(
            &s,
            ("viewer", "v-pass-2"),
            "plant",
            "INSERT INTO devices VALUES (3, 'east')"
        )
        .0,
        200
    );
    admin(&s, "DROP USER viewer");
    assert_eq!(sql_as(&s, v, "plant", "SELECT 1").0, 401);
    assert_eq!(count(&s, "SELECT count(*) FROM devices"), 3);
}

#[test]
fn tokens_are_made_narrowed_listed_expired_and_revoked() {
    let s = with_auth(None);
    admin(&s, "CREATE USER carol WITH PASSWORD 'c-pass'");
    admin(&s, "GRANT READ, WRITE ON DATABASE plant TO carol");
    let carol = |r: RequestBuilder| r.basic_auth("carol", Some("c-pass"));
    let make = |body: Value| {
        let r = carol(http().post(s.url("/api/v1/tokens")))
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap())
    };
    let (status, made) = make(serde_json::json!({
        "description": "telegraf on line 3",
        "permissions": { "plant": ["write"] },
        "expires_in_secs": 3600
    }));
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("sl_"), "{token}");
    let with_token = |r: RequestBuilder| r.header("Authorization", format!("Token {token}"));
    assert_eq!(
        write_as(&s, with_token, "/api/v2/write?bucket=plant", "m v=1 1").0,
        204
    );
    // The token was made for writing only.
    let r = with_token(http().post(s.url("/api/v1/sql")))
        .json(&serde_json::json!({"db": "plant", "sql": "SELECT count(*) FROM m"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Listed without its secret, here and in system.tokens.
    let list = carol(http().get(s.url("/api/v1/tokens")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        list.contains(&id) && list.contains("telegraf on line 3"),
        "{list}"
    );
    assert!(!list.contains(&token[20..]), "the list shows the secret");
    let rows = s.rows(
        "plant",
        "SELECT id, owner, privileges, expired FROM system.tokens",
    );
    assert_eq!(rows[0][0], Value::from(id.clone()));
    assert_eq!(rows[0][1], "carol");
    assert_eq!(rows[0][2], "plant:write");
    assert_eq!(rows[0][3], false);
    // No more than the owner has.
    let (status, body) = make(serde_json::json!({"permissions": {"other": ["read"]}}));
    assert_eq!(status, 403, "{body}");
    // Revoked: refused at once.
    let r = carol(http().delete(s.url(&format!("/api/v1/tokens/{id}"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = write_as(&s, with_token, "/api/v2/write?bucket=plant", "m v=2 2");
    assert_eq!(status, 401, "{body}");
    // An expiry passes.
    let (_, short) = make(serde_json::json!({"expires_in_secs": 1}));
    let short = short["token"].as_str().unwrap().to_string();
    let with_short = |r: RequestBuilder| r.header("Authorization", format!("Bearer {short}"));
    assert_eq!(
        write_as(&s, with_short, "/write?db=plant", "m v=3 3").0,
        204
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = write_as(&s, with_short, "/write?db=plant", "m v=4 4");
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    assert_eq!(count(&s, "SELECT count(*) FROM m"), 2);
    assert!(
        !s.log().contains(&token) && !s.log().contains(&short),
        "the log holds a token"
    );
}

fn psql(s: &TestServer, user: &str, password: &str, sql: &str) -> (bool, String) {
    sluice_tests::clients::psql(s, user, Some(password), "plant", sql)
}

#[test]
fn psql_logs_in_as_each_user_by_scram_and_gets_its_grants() {
    let s = with_auth(None);
    assert_eq!(s.write("plant", "m v=1 1\nm v=2 2").status(), 204);
    // psql manages users too.
    let (ok, out) = psql(
        &s,
        "admin",
        ADMIN_PW,
        "CREATE USER grafana WITH PASSWORD 'g-pass'",
    );
    assert!(ok, "{out}");
    let (ok, out) = psql(
        &s,
        "admin",
        ADMIN_PW,
        "GRANT SELECT ON DATABASE plant TO grafana",
    );
    assert!(ok, "{out}");
    let (ok, out) = psql(&s, "grafana", "g-pass", "SELECT count(*) FROM m");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "2");
    // A wrong password and an unknown user fail the same way.
    for (user, pw) in [("grafana", "nope"), ("nobody", "g-pass")] {
        let (ok, out) = psql(&s, user, pw, "SELECT 1");
        assert!(!ok, "{user} got in: {out}");
        assert!(
            out.contains("password authentication failed") || out.contains("authentication"),
            "{out}"
        );
    }
    admin(&s, "CREATE TABLE alarms (id int PRIMARY KEY)");
    let (ok, out) = psql(&s, "grafana", "g-pass", "INSERT INTO alarms VALUES (1)");
    assert!(!ok, "{out}");
    assert!(out.contains("permission denied"), "{out}");
    // A user that may not log in does not get in, password or not.
    admin(&s, "ALTER ROLE grafana NOLOGIN");
    let (ok, out) = psql(&s, "grafana", "g-pass", "SELECT 1");
    assert!(!ok, "a NOLOGIN role got in: {out}");
}

fn mqtt(
    s: &TestServer,
    id: &str,
    login: Option<(&str, &str)>,
    will: Option<&str>,
) -> (MqttClient, rumqttc::Connection, Result<(), String>) {
    sluice_tests::clients::mqtt_connect(s, id, login, will)
}

/// What follows a publish (or a subscribe): an acknowledgement, or the
/// broker closing the connection.
fn next_answer(conn: &mut rumqttc::Connection) -> String {
    loop {
        match conn.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return "puback".into(),
            Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => {
                return format!("suback {:?}", a.return_codes)
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return format!("closed: {e}"),
            Err(e) => return format!("nothing: {e:?}"),
        }
    }
}

const MQTT_ACL: &str = r##"
[[mqtt.routes]]
filter = "sensors/{device}/{quantity}"
database = "plant"
table = "readings"
format = "json"

[[mqtt.acl]]
action = "publish"
topic = "sensors/${username}/#"

[[mqtt.acl]]
action = "subscribe"
topic = "alerts/#"

[[mqtt.acl]]
action = "all"
topic = "#"
permission = "deny"
"##;

#[test]
fn mqtt_clients_log_in_as_users_and_publish_only_where_acl_and_grants_allow() {
    let s = with_auth(Some(MQTT_ACL));
    admin(&s, "CREATE USER dev1 WITH PASSWORD 'p1'");
    admin(&s, "CREATE USER dev2 WITH PASSWORD 'p2'");
    admin(&s, "GRANT WRITE ON DATABASE plant TO dev1");

    for (login, why) in [
        (None, "anonymous"),
        (Some(("dev1", "p2")), "wrong password"),
        (Some(("ghost", "p1")), "unknown user"),
    ] {
        let (_, _, answer) = mqtt(&s, "probe", login, None);
        assert!(answer.is_err(), "{why} got in");
    }

    let (c, mut conn, ok) = mqtt(&s, "dev1-a", Some(("dev1", "p1")), None);
    ok.expect("dev1 logs in");
    c.publish(
        "sensors/dev1/temp",
        QoS::AtLeastOnce,
        false,
        "{\"v\": 21.5}",
    )
    .unwrap();
    assert_eq!(next_answer(&mut conn), "puback");
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM readings",
        1,
        Duration::from_secs(20),
    );
    c.subscribe("alerts/line3", QoS::AtLeastOnce).unwrap();
    assert!(
        next_answer(&mut conn).contains("Success"),
        "alerts are allowed"
    );
    c.subscribe("sensors/#", QoS::AtLeastOnce).unwrap();
    let sub = next_answer(&mut conn);
    assert!(sub.contains("Failure"), "{sub}");
    // Another device's topic: the ACL says no, the broker hangs up and
    // nothing is stored.
    c.publish("sensors/dev2/temp", QoS::AtLeastOnce, false, "{\"v\": 99}")
        .unwrap();
    let answer = next_answer(&mut conn);
    assert!(
        answer.starts_with("closed") || answer.starts_with("nothing"),
        "{answer}"
    );

    // dev2 may publish on its own topic by the ACL, but may not write to
    // the database the route stores it in.
    let (c2, mut conn2, ok) = mqtt(&s, "dev2-a", Some(("dev2", "p2")), None);
    ok.expect("dev2 logs in");
    c2.publish("sensors/dev2/temp", QoS::AtLeastOnce, false, "{\"v\": 7}")
        .unwrap();
    let answer = next_answer(&mut conn2);
    assert!(
        answer.starts_with("closed") || answer.starts_with("nothing"),
        "{answer}"
    );
    // Nor may it leave a will that would be stored there later.
    let (_, _, answer) = mqtt(
        &s,
        "dev2-b",
        Some(("dev2", "p2")),
        Some("sensors/dev2/state"),
    );
    assert!(answer.is_err(), "a will past the grants was accepted");
    // Granted, it may.
    admin(&s, "GRANT WRITE ON DATABASE plant TO dev2");
    let (c2, mut conn2, ok) = mqtt(&s, "dev2-c", Some(("dev2", "p2")), None);
    ok.expect("dev2 logs in");
    c2.publish("sensors/dev2/temp", QoS::AtLeastOnce, false, "{\"v\": 8}")
        .unwrap();
    assert_eq!(next_answer(&mut conn2), "puback");
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM readings",
        2,
        Duration::from_secs(20),
    );
    let rows = s.rows("plant", "SELECT device, v FROM readings ORDER BY device");
    assert_eq!(
        rows,
        serde_json::from_value::<Vec<Vec<Value>>>(serde_json::json!([
            ["dev1", 21.5],
            ["dev2", 8.0]
        ]))
        .unwrap()
    );
    assert!(s.log().contains("MQTT publish refused"), "{}", s.log());

    // A token logs in as its owner, whatever user name the client gives:
    // dev1's token under the name dev2 gets dev1's topics, not dev2's.
    let r = http()
        .post(s.url("/api/v1/tokens"))
        .basic_auth("dev1", Some("p1"))
        .json(&serde_json::json!({"description": "plc"}))
        .send()
        .unwrap();
    let token = r.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (c3, mut conn3, ok) = mqtt(&s, "dev1-as-dev2", Some(("dev2", &token)), None);
    ok.expect("a token logs in");
    c3.publish("sensors/dev2/temp", QoS::AtLeastOnce, false, "{\"v\": 66}")
        .unwrap();
    let answer = next_answer(&mut conn3);
    assert!(
        answer.starts_with("closed") || answer.starts_with("nothing"),
        "{answer}"
    );
    // A grant revoked while a client stays connected holds at its next publish.
    let (c4, mut conn4, ok) = mqtt(&s, "dev1-b", Some(("dev1", "p1")), None);
    ok.expect("dev1 logs in");
    c4.publish("sensors/dev1/temp", QoS::AtLeastOnce, false, "{\"v\": 1}")
        .unwrap();
    assert_eq!(next_answer(&mut conn4), "puback");
    admin(&s, "REVOKE WRITE ON DATABASE plant FROM dev1");
    c4.publish("sensors/dev1/temp", QoS::AtLeastOnce, false, "{\"v\": 2}")
        .unwrap();
    let answer = next_answer(&mut conn4);
    assert!(
        answer.starts_with("closed") || answer.starts_with("nothing"),
        "{answer}"
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM readings",
        3,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&s, "SELECT count(*) FROM readings"),
        3,
        "a refused publish was stored"
    );
}
