//! A small W3C WebDriver client for the console's browser tests: Debian's
//! `chromedriver` drives Debian's `chromium`, headless, with nothing fetched
//! from the internet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

/// W3C's key for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are, or why the tests cannot run.
pub fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |env: &str, names: &[&str]| -> Option<PathBuf> {
        if let Ok(p) = std::env::var(env) {
            return Some(PathBuf::from(p));
        }
        names
            .iter()
            .map(|n| Path::new("/usr/bin").join(n))
            .find(|p| p.exists())
    };
    let chromium = find("CHROMIUM", &["chromium", "chromium-browser"])
        .ok_or("no chromium (apt-get install chromium chromium-driver)")?;
    let driver = find("CHROMEDRIVER", &["chromedriver"])
        .ok_or("no chromedriver (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// A browser session; the driver process ends with it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client,
    pub downloads: tempfile::TempDir,
    /// Where screenshots go.
    pub shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// A reference to an element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless chromium session, or returns why
    /// it cannot (no browser installed).
    pub fn start() -> Result<Browser, String> {
        let (chromium, driver_bin) = browser()?;
        let port = crate::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let downloads = tempfile::tempdir().map_err(|e| e.to_string())?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            client,
            downloads,
            shots: std::env::temp_dir().join("sluice-console-shots"),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_string();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{}", self.session, path)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .expect("navigate");
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
        .collect()
    }

    /// Waits for an element matching `css`, displayed or not.
    pub fn wait(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            if Instant::now() > deadline {
                self.save_screenshot("timeout");
                panic!(
                    "no element {css} after {timeout:?}; page log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `check` holds, re-evaluated every 100 ms.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            if Instant::now() > deadline {
                self.save_screenshot("timeout");
                panic!("{what}: not within {timeout:?}; page log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, e: &Element) {
        self.call("POST", &self.s(&format!("/element/{}/click", e.0)), None)
            .expect("click");
    }

    pub fn click_css(&self, css: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.click(&e);
    }

    /// Types into an element; `\u{E009}` is Control, `\u{E007}` Enter.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{}/value", e.0)),
            Some(json!({ "text": text })),
        )
        .expect("send keys");
    }

    /// Presses keys together (a chord such as Control+Enter) and lets go.
    pub fn chord(&self, keys: &[&str]) {
        let mut actions: Vec<Value> = keys
            .iter()
            .map(|k| json!({"type": "keyDown", "value": k}))
            .collect();
        actions.extend(
            keys.iter()
                .rev()
                .map(|k| json!({"type": "keyUp", "value": k})),
        );
        self.call(
            "POST",
            &self.s("/actions"),
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .expect("key actions");
    }

    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &self.s(&format!("/element/{}/text", e.0)), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.s(&format!("/element/{}/attribute/{name}", e.0)),
            None,
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
    }

    pub fn displayed(&self, e: &Element) -> bool {
        self.call("GET", &self.s(&format!("/element/{}/displayed", e.0)), None)
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// The page's console messages since the last call, as (level, text).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("level"), s("message"))
            })
            .collect()
    }

    fn log(&self) -> String {
        self.messages()
            .iter()
            .map(|(l, m)| format!("{l} {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Saves a PNG of the page in [`Browser::shots`], for a person to look
    /// at.
    pub fn save_screenshot(&self, name: &str) -> Option<PathBuf> {
        use base64::Engine as _;
        let v = self.call("GET", &self.s("/screenshot"), None).ok()?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?)
            .ok()?;
        std::fs::create_dir_all(&self.shots).ok()?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).ok()?;
        eprintln!("screenshot: {}", path.display());
        Some(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
