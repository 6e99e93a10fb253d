//! The web console in a real browser: Debian's chromium, driven through
//! chromedriver, against a real server. Each test is what an operator does:
//! run a query and read the grid and the chart, download the result, watch
//! MQTT ingest move the rate and a dead letter appear, paste line protocol,
//! and log in when a token is set.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, MqttOptions, QoS};
use sluice_tests::webdriver::Browser;
use sluice_tests::TestServer;

const WAIT: Duration = Duration::from_secs(20);

/// A browser, or `None` where none is installed and this is not CI (the
/// test script installs one; CI must run these tests).
fn browser() -> Option<Browser> {
    match Browser::start() {
        Ok(mut b) => {
            b.shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
            Some(b)
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("the console tests need a browser: {e}"),
    }
}

/// Points of `cpu` for two hosts over the last `minutes`, one a minute.
fn cpu_points(minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut lines = String::new();
    for m in 0..minutes {
        for (h, host) in ["alpha", "beta"].iter().enumerate() {
            let t = now - m * 60_000_000_000;
            let v = m as f64 + h as f64 * 100.0;
            lines.push_str(&format!("cpu,host={host} usage={v},load={m}i {t}\n"));
        }
    }
    lines
}

fn open_view(b: &Browser, s: &TestServer, view: &str) {
    b.goto(&s.url("/ui/"));
    b.click_css(&format!("button[data-view=\"{view}\"]"));
    let v = b.wait(&format!("#view-{view}"), WAIT);
    b.wait_until(&format!("view {view} shown"), WAIT, |b| b.displayed(&v));
}

/// Types SQL into the editor (replacing what is there) and runs it with
/// Ctrl+Enter, as a person would.
fn run_sql(b: &Browser, sql: &str) {
    let editor = b.wait("#editor .cm-content", WAIT);
    b.click(&editor);
    b.chord(&["\u{E009}", "a"]);
    b.chord(&["\u{E003}"]);
    b.type_into(&editor, sql);
    b.chord(&["\u{E009}", "\u{E007}"]);
}

fn grid_rows(b: &Browser) -> Vec<Vec<String>> {
    let v = b.js(
        "return [...document.querySelectorAll('#grid .grid-row')] \
         .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top) \
         .map(r => [...r.querySelectorAll('.cell')].map(c => c.textContent.trim()));",
        vec![],
    );
    serde_json::from_value(v).unwrap_or_default()
}

fn wait_status(b: &Browser, contains: &str) -> String {
    let mut last = String::new();
    b.wait_until(&format!("status says {contains:?}"), WAIT, |b| {
        last = b
            .find_all("#result-status")
            .first()
            .map(|e| b.text(e))
            .unwrap_or_default();
        last.contains(contains)
    });
    last
}

#[test]
fn a_query_fills_the_grid_draws_a_chart_and_downloads_as_csv() {
    let Some(b) = browser() else { return };
    let s = TestServer::start();
    assert_eq!(s.write("plant", &cpu_points(30)).status(), 204);
    open_view(&b, &s, "sql");

    // A query without a time column: a grid, no chart.
    run_sql(
        &b,
        "SELECT host, count(*) AS n, max(usage) AS top FROM plant.cpu GROUP BY host ORDER BY host",
    );
    wait_status(&b, "2 rows");
    let rows = grid_rows(&b);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "alpha");
    assert_eq!(rows[0][1], "30");
    assert_eq!(rows[1][2], "129");
    let header = b.js(
        "return [...document.querySelectorAll('#grid .grid-header .cell')].map(c => c.textContent);",
        vec![],
    );
    let header = header.to_string();
    assert!(
        header.contains("host") && header.contains("Int64"),
        "{header}"
    );

    // A time series: one line per host.
    run_sql(
        &b,
        "SELECT time, host, usage FROM plant.cpu WHERE time > now() - INTERVAL '1 hour' ORDER BY time",
    );
    wait_status(&b, "60 rows");
    b.wait("#chart .uplot", WAIT);
    let legend = b.js(
        "return document.querySelector('#chart').textContent;",
        vec![],
    );
    let legend = legend.as_str().unwrap_or_default().to_string();
    assert!(
        legend.contains("alpha") && legend.contains("beta"),
        "{legend}"
    );

    // The result as a file, with the same rows the server answers.
    b.click_css("#download-csv");
    let file = wait_file(&b.downloads.path().to_path_buf(), "csv");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time,host,usage"));
    assert_eq!(lines.count(), 60, "{text}");

    // An error names its SQLSTATE and leaves the editor usable.
    run_sql(&b, "SELEC 1");
    let err = b.wait("#error:not([hidden])", WAIT);
    assert_eq!(b.attr(&err, "data-sqlstate").as_deref(), Some("42601"));
    assert!(b.text(&err).contains("SELEC"), "{}", b.text(&err));
    run_sql(&b, "SELECT 41 + 1 AS answer");
    wait_status(&b, "1 row");
    assert_eq!(grid_rows(&b), vec![vec!["42".to_string()]]);

    // Queries run are kept in the history.
    let history = b.js(
        "return [...document.querySelectorAll('#history li')].map(l => l.textContent).join('\\n');",
        vec![],
    );
    assert!(
        history.as_str().unwrap_or_default().contains("41 + 1"),
        "{history}"
    );
}

fn wait_file(dir: &PathBuf, ext: &str) -> PathBuf {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == ext));
        if let Some(p) = found {
            return p;
        }
        assert!(Instant::now() < deadline, "no .{ext} download in {dir:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_hundred_thousand_rows_stay_a_small_page() {
    let Some(b) = browser() else { return };
    let s = TestServer::start();
    open_view(&b, &s, "sql");
    run_sql(
        &b,
        "SELECT value, value * 2 AS twice FROM generate_series(1, 100000) ORDER BY value",
    );
    wait_status(&b, "100000 rows");
    // Only what is on screen is in the page.
    let rendered = grid_rows(&b).len();
    assert!((1..500).contains(&rendered), "{rendered} rows in the DOM");
    // Scrolled to the end, the last row is there.
    b.js(
        "const g = document.querySelector('#grid'); g.scrollTop = g.scrollHeight;",
        vec![],
    );
    b.wait_until("the last row shown", WAIT, |b| {
        grid_rows(b)
            .iter()
            .any(|r| r.first().is_some_and(|v| v == "100000"))
    });
}

#[test]
fn the_ingest_view_moves_with_mqtt_and_shows_dead_letters() {
    let Some(b) = browser() else { return };
    let s = TestServer::start();
    open_view(&b, &s, "ingest");
    let mut o = MqttOptions::new("console-test", s.mqtt.ip().to_string(), s.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(o, 100);
    thread::spawn(move || for _ in conn.iter() {});
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let client = client.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            // Until the page has seen the rate (or a minute at most).
            for i in 0..1200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let body: String = (0..50)
                    .map(|j| format!("meter,unit=u{j} kw={i}.5\n"))
                    .collect();
                if client
                    .publish("ingest/site", QoS::AtLeastOnce, false, body)
                    .is_err()
                {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    b.wait_until("the MQTT rate is above zero", WAIT, |b| {
        b.find_all("#rate-mqtt")
            .first()
            .and_then(|e| b.attr(e, "data-rate"))
            .and_then(|r| r.replace(',', "").parse::<f64>().ok())
            .is_some_and(|r| r > 0.0)
    });
    b.wait_until("the broker shows the client", WAIT, |b| {
        b.find_all("#mqtt-clients")
            .first()
            .and_then(|e| b.attr(e, "data-value"))
            .is_some_and(|v| v.trim() != "0" && !v.is_empty())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client
        .publish("ingest/site", QoS::AtLeastOnce, false, "not line protocol")
        .unwrap();
    b.wait_until("the dead letter is listed", Duration::from_secs(30), |b| {
        b.find_all("#dead-letters tbody tr")
            .iter()
            .any(|r| b.text(r).contains("not line protocol"))
    });
    publisher.join().unwrap();
    let _ = client.disconnect();
}

#[test]
fn pasted_line_protocol_is_written_and_bad_lines_are_named() {
    let Some(b) = browser() else { return };
    let s = TestServer::start();
    open_view(&b, &s, "write");
    let db = b.wait("#lp-db", WAIT);
    b.js("document.querySelector('#lp-db').value = '';", vec![]);
    b.type_into(&db, "paste");
    let input = b.wait("#lp-input", WAIT);
    b.type_into(
        &input,
        "temp,room=a c=21.5 1\ntemp,room=b c=oops 2\ntemp,room=c c=19 3",
    );
    b.click_css("#lp-submit");
    b.wait_until("a line error shown", WAIT, |b| {
        b.find_all("#write-result .line-error")
            .iter()
            .any(|e| b.text(e).contains('2'))
    });
    let result = b.text(&b.wait("#write-result", WAIT));
    assert!(result.contains("written"), "{result}");
    assert_eq!(s.count("paste", "temp"), 2);
}

#[test]
fn with_a_token_the_console_asks_for_it_and_nothing_is_readable_without() {
    let Some(b) = browser() else { return };
    let s = TestServer::start_with_env(&[("SLUICE_HTTP__AUTH_TOKEN", "s3cret-console")]);
    for path in ["/api/v1/status", "/api/v1/schema", "/metrics"] {
        let r = reqwest::blocking::get(s.url(path)).unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
    }
    b.goto(&s.url("/ui/"));
    let login = b.wait("#login", WAIT);
    b.wait_until("the login is shown", WAIT, |b| b.displayed(&login));
    let token = b.wait("#token-input", WAIT);
    b.type_into(&token, "wrong");
    b.click_css("#login-submit");
    b.wait_until("a wrong token is reported refused", WAIT, |b| {
        b.displayed(&login)
            && b.find_all("#login-message")
                .first()
                .is_some_and(|m| b.text(m).contains("refused"))
    });
    b.js("document.querySelector('#token-input').value = '';", vec![]);
    b.type_into(&token, "s3cret-console");
    b.click_css("#login-submit");
    b.wait_until("the login is gone", WAIT, |b| !b.displayed(&login));
    assert_eq!(s.write("secured", "x v=1 1").status(), 204);
    b.click_css("button[data-view=\"sql\"]");
    run_sql(&b, "SELECT v FROM secured.x");
    wait_status(&b, "1 row");
    assert_eq!(grid_rows(&b), vec![vec!["1".to_string()]]);
}

#[test]
fn users_sign_in_with_their_password_and_see_what_they_were_granted() {
    let Some(b) = browser() else { return };
    let s = TestServer::start_with(
        &[("SLUICE_INITIAL_ADMIN_PASSWORD", "console-admin-pw")],
        Some("[auth]\nenabled = true\n"),
    );
    s.sql("plant", "CREATE USER viewer WITH PASSWORD 'viewer-pw'");
    s.sql("plant", "GRANT READ ON DATABASE plant TO viewer");
    assert_eq!(s.write("plant", "x v=7 1").status(), 204);
    b.goto(&s.url("/ui/"));
    let login = b.wait("#login", WAIT);
    b.wait_until("the login is shown", WAIT, |b| b.displayed(&login));
    b.type_into(&b.wait("#user-input", WAIT), "viewer");
    let secret = b.wait("#token-input", WAIT);
    b.type_into(&secret, "not-it");
    b.click_css("#login-submit");
    b.wait_until("a wrong password is reported", WAIT, |b| {
        b.displayed(&login)
            && b.find_all("#login-message")
                .first()
                .is_some_and(|m| b.text(m).contains("wrong user name or password"))
    });
    b.type_into(&secret, "viewer-pw");
    b.click_css("#login-submit");
    b.wait_until("the login is gone", WAIT, |b| !b.displayed(&login));
    b.click_css("button[data-view=\"sql\"]");
    run_sql(&b, "SELECT v FROM plant.x");
    wait_status(&b, "1 row");
    assert_eq!(grid_rows(&b), vec![vec!["7".to_string()]]);
    // The password was traded for a token of the console's own.
    let tokens = || {
        s.rows(
            "plant",
            "SELECT owner, description FROM system.tokens WHERE NOT expired",
        )
    };
    assert_eq!(
        tokens(),
        vec![vec![
            serde_json::json!("viewer"),
            serde_json::json!("console sign-in")
        ]]
    );
    // What viewer may not read is refused with its SQLSTATE.
    run_sql(&b, "SELECT * FROM system.roles");
    let err = b.wait("#error:not([hidden])", WAIT);
    assert_eq!(b.attr(&err, "data-sqlstate").as_deref(), Some("42501"));
    // Signing out revokes that token.
    b.click_css("#logout");
    let deadline = std::time::Instant::now() + WAIT;
    while !tokens().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sign-in token outlived sign-out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.wait_until("the login is shown again", WAIT, |b| b.displayed(&login));
}

#[test]
fn every_view_renders_in_both_themes_without_script_errors() {
    let Some(b) = browser() else { return };
    let s = TestServer::start();
    assert_eq!(s.write("plant", &cpu_points(60)).status(), 204);
    s.sql(
        "plant",
        "CREATE TABLE devices (unit text PRIMARY KEY, site text NOT NULL)",
    );
    b.goto(&s.url("/ui/"));
    let _ = b.messages();
    run_sql(
        &b,
        "SELECT time, host, usage FROM plant.cpu WHERE time > now() - INTERVAL '1 hour' ORDER BY time",
    );
    b.wait("#chart .uplot", WAIT);
    for theme in ["first", "second"] {
        for view in ["sql", "schema", "ingest", "write"] {
            b.click_css(&format!("button[data-view=\"{view}\"]"));
            let v = b.wait(&format!("#view-{view}"), WAIT);
            b.wait_until(&format!("view {view} shown"), WAIT, |b| b.displayed(&v));
            if view == "schema" {
                b.wait(".schema-table[data-db=\"plant\"][data-table=\"cpu\"]", WAIT);
                b.wait(
                    ".schema-table[data-db=\"plant\"][data-table=\"devices\"]",
                    WAIT,
                );
            }
            thread::sleep(Duration::from_millis(1500));
            b.save_screenshot(&format!("{view}-{theme}-theme"));
        }
        b.click_css("#theme-toggle");
    }
    let errors: Vec<_> = b
        .messages()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "script errors: {errors:?}");
    // A click on a table puts a query for it in the editor.
    b.click_css("button[data-view=\"schema\"]");
    b.click_css(".schema-table[data-db=\"plant\"][data-table=\"cpu\"]");
    b.wait_until("the editor holds a query of cpu", WAIT, |b| {
        b.js(
            "return document.querySelector('#editor .cm-content').textContent;",
            vec![],
        )
        .as_str()
        .is_some_and(|t| t.contains("cpu") && t.contains("LIMIT"))
    });
}
