//! Headless Chromium driven over WebDriver: `chromedriver` as a child process on a port
//! it is given, one browser session with a fresh profile, and the handful of commands
//! the portal's browser tests use (navigate, find, type, click, read, screenshot).
//!
//! Chromium runs as root here, so it needs `--no-sandbox`; it accepts the test
//! certificate (`acceptInsecureCerts`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::require_binary;
use crate::error::{HarnessError, Result};
use crate::ports::start_on_free_port;
use crate::process::{ServerProcess, wait_until};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver with one Chromium session.
pub struct Browser {
    http: reqwest::blocking::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    _driver: ServerProcess,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Browser({})", self.session)
    }
}

fn wd_error(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Usage(format!("webdriver {what}: {e}"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with `lang` as its UI and
    /// Accept-Language.
    pub fn start(lang: &str) -> Result<Self> {
        let chromium = require_binary("chromium", &["chromium"])?;
        let driver = require_binary("chromedriver", &["chromium-driver"])?;
        let dir = tempfile::Builder::new()
            .prefix("otpgate-chromium-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| wd_error("client", e))?;
        let log = dir.path().join("chromedriver.log");
        let (process, port) = start_on_free_port(|port| {
            let mut command = Command::new(&driver);
            command.arg(format!("--port={port}"));
            let mut process = ServerProcess::spawn("chromedriver", command, &log)?;
            let url = format!("http://127.0.0.1:{port}/status");
            process.wait_ready(|| {
                http.get(&url)
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .is_some_and(|v| v["value"]["ready"] == json!(true))
            })?;
            Ok((process, port))
        })?;
        let profile = dir.path().join("profile");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": true,
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--disable-dev-shm-usage", "--ignore-certificate-errors",
                            "--window-size=1000,900",
                            format!("--lang={lang}"),
                            format!("--user-data-dir={}", profile.display()),
                        ],
                        "prefs": { "intl.accept_languages": lang },
                    }
                }
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| wd_error("new session", e))?;
        let id = answer["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| wd_error("new session", format!("no session id in {answer}")))?;
        Ok(Self {
            session: format!("{base}/session/{id}"),
            http,
            _driver: process,
            _dir: dir,
        })
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .and_then(|r| r.json())
            .map_err(|e| wd_error(path, e))?;
        if answer["value"]["error"].is_string() {
            return Err(wd_error(path, &answer["value"]));
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .map(|_| ())
    }

    /// The current URL.
    pub fn url(&self) -> Result<String> {
        let v = self.call(reqwest::Method::GET, "/url", None)?;
        Ok(v.as_str().unwrap_or("").to_owned())
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> Result<String> {
        let v = self.call(reqwest::Method::GET, "/source", None)?;
        Ok(v.as_str().unwrap_or("").to_owned())
    }

    /// The element matching a CSS selector, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> Result<String> {
        let mut found = None;
        let mut last = None;
        wait_until(Duration::from_secs(10), || {
            match self.call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            ) {
                Ok(v) => {
                    found = v[ELEMENT].as_str().map(str::to_owned);
                    found.is_some()
                }
                Err(e) => {
                    last = Some(e);
                    false
                }
            }
        });
        found.ok_or_else(|| {
            wd_error(
                "find",
                format!(
                    "no element {css} on {}: {last:?}",
                    self.url().unwrap_or_default()
                ),
            )
        })
    }

    /// Whether an element matching `css` is on the page now.
    pub fn has(&self, css: &str) -> Result<bool> {
        let v = self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(v.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Types into the element.
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css)?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .map(|_| ())
    }

    /// Clicks the element (a submit button waits for the next page).
    pub fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css)?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// The element's visible text.
    pub fn text(&self, css: &str) -> Result<String> {
        let id = self.find(css)?;
        let v = self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)?;
        Ok(v.as_str().unwrap_or("").to_owned())
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None)?;
        let png = data_encoding::BASE64
            .decode(v.as_str().unwrap_or("").as_bytes())
            .map_err(|e| wd_error("screenshot", e))?;
        std::fs::write(path, png)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// Saves a screenshot as `DIR/NAME.png` when `OTPGATE_PORTAL_SCREENSHOTS=DIR` is set.
    pub fn screenshot_if_asked(&self, name: &str) -> Result<Option<PathBuf>> {
        let Some(dir) = std::env::var_os("OTPGATE_PORTAL_SCREENSHOTS") else {
            return Ok(None);
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("{name}.png"));
        self.screenshot(&path)?;
        Ok(Some(path))
    }

    /// Forgets every cookie of the current site (a "new browser" on the same profile).
    pub fn delete_cookies(&self) -> Result<()> {
        self.call(reqwest::Method::DELETE, "/cookie", None)
            .map(|_| ())
    }

    /// The names of the current site's cookies.
    pub fn cookie_names(&self) -> Result<Vec<String>> {
        let v = self.call(reqwest::Method::GET, "/cookie", None)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Deletes one cookie by name.
    pub fn delete_cookie(&self, name: &str) -> Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/cookie/{name}"), None)
            .map(|_| ())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed when its process value drops.
        let _ = self.http.delete(&self.session).send();
    }
}
