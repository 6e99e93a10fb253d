//! Requests shaped exactly like Telegraf's `outputs.influxdb` and
//! `outputs.influxdb_v2` send them: paths, parameters, gzip, auth.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use sluice_tests::TestServer;

const TOKEN: &str = "s3cr3t-token";

fn gzip(s: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(s.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn metrics(host: &str, n: usize, start_s: i64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "cpu,cpu=cpu-total,host={host} usage_idle=9{i}.5,usage_user=1.25 {}\n",
                (start_s + i as i64) * 1_000_000_000
            )
        })
        .collect()
}

#[test]
fn outputs_influxdb_v1() {
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__AUTH_TOKEN", TOKEN)]);
    let c = &s.client;
    // Telegraf 1.x: a ping-free start that creates its database first.
    let r = c
        .post(s.url("/query"))
        .basic_auth("telegraf", Some(TOKEN))
        .header("User-Agent", "Telegraf/1.34.0 Go/1.24")
        .form(&[("q", "CREATE DATABASE \"telegraf\"")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "{\"results\":[{\"statement_id\":0}]}");
    let write = |auth: bool, body: Vec<u8>| {
        let mut rb = c
            .post(s.url("/write?db=telegraf&rp=&precision=ns&consistency=any"))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("User-Agent", "Telegraf/1.34.0 Go/1.24")
            .body(body);
        if auth {
            rb = rb.basic_auth("telegraf", Some(TOKEN));
        }
        rb.send().unwrap()
    };
    assert_eq!(
        write(true, gzip(&metrics("web1", 50, 1_700_000_000)))
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        write(false, gzip(&metrics("web1", 5, 1_800_000_000)))
            .status()
            .as_u16(),
        401
    );
    // The v1 `u`/`p` parameters work too.
    let r = c
        .post(s.url(&format!(
            "/write?db=telegraf&u=telegraf&p={TOKEN}&precision=s"
        )))
        .body("cpu,cpu=cpu0,host=web2 usage_idle=50 1700000000\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(s.count("telegraf", "cpu"), 51);
    let rows = s.rows(
        "telegraf",
        "SELECT time, usage_idle FROM cpu WHERE host = 'web2'",
    );
    assert_eq!(rows[0][0], "2023-11-14T22:13:20Z", "precision=s honoured");
    let ping = c.get(s.url("/ping")).send().unwrap();
    assert_eq!(ping.status().as_u16(), 204);
    assert!(ping.headers().contains_key("x-influxdb-version"));
}

#[test]
fn outputs_influxdb_v2() {
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__AUTH_TOKEN", TOKEN)]);
    let c = &s.client;
    let send = |token: &str, body: Vec<u8>| {
        c.post(s.url("/api/v2/write?bucket=telegraf&org=acme"))
            .header("Authorization", format!("Token {token}"))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("User-Agent", "Telegraf/1.34.0 Go/1.24")
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        send(TOKEN, gzip(&metrics("db1", 100, 1_700_000_000)))
            .status()
            .as_u16(),
        204
    );
    let denied = send("wrong", gzip(&metrics("db1", 1, 1_900_000_000)));
    assert_eq!(denied.status().as_u16(), 401);
    assert!(denied.text().unwrap().contains("invalid token"));
    // Precision parameter of the v2 API.
    let r = c
        .post(s.url("/api/v2/write?bucket=telegraf/autogen&org=acme&precision=ms"))
        .header("Authorization", format!("Token {TOKEN}"))
        .body("disk,host=db1 free=1024i 1700000000123\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(s.count("telegraf", "cpu"), 100);
    let rows = s.rows("telegraf", "SELECT time, free FROM disk");
    assert_eq!(rows[0][0], "2023-11-14T22:13:20.123Z");
    assert_eq!(rows[0][1], 1024);
    let health = c.get(s.url("/health")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
