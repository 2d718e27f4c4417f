//! Headless Chromium for the dashboard test, driven over WebDriver: Debian's `chromedriver`
//! on a free loopback port, and `fantoccini` as the client.
//!
//! The browser may reach 127.0.0.1 only: every other host name fails to resolve and every
//! other request goes to a dead proxy, and the flags turn off Chromium's own background
//! traffic. A missing browser is a test failure with the install command, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{free_port, wait_for};

pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags that keep Chromium headless, quiet and on loopback.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    // Loopback bypasses the proxy by default; everything else goes to a port nobody listens on.
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,900",
];

/// One browser at a time: two Chromiums beside the other tests would crowd a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
    /// Where screenshots go: `target/ui-screenshots/`.
    pub shots: PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let chromium = std::env::var("HOOKRELAY_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let chromedriver =
            std::env::var("HOOKRELAY_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        for path in [&chromium, &chromedriver] {
            assert!(
                Path::new(path).exists(),
                "the dashboard test needs headless Chromium: {path} is missing. Install it with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does), or point \
                 HOOKRELAY_CHROMIUM / HOOKRELAY_CHROMEDRIVER at the binaries"
            );
        }
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        wait_for("chromedriver to answer", || {
            let http = http.clone();
            let status = format!("{url}/status");
            async move {
                let ready: Value = http.get(status).send().await.ok()?.json().await.ok()?;
                (ready["value"]["ready"] == true).then_some(())
            }
        })
        .await;

        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("chromium").display()
        ));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!("chromedriver could not start Chromium: {e}\n{log}")
            });

        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            driver_port: port,
            _profile: profile,
            _turn: turn,
            shots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits until an element matching `css` exists and returns its visible text.
    pub async fn text(&self, css: &str) -> String {
        wait_for(&format!("element `{css}`"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.text().await.ok()
        })
        .await
    }

    /// Waits until the text of `css` contains `needle`; returns the whole text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        let found = tokio::time::timeout(crate::harness::DEADLINE, async {
            loop {
                if let Ok(el) = self.client.find(Locator::Css(css)).await
                    && let Ok(t) = el.text().await
                {
                    if t.contains(needle) {
                        return t;
                    }
                    last = t;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found
            .unwrap_or_else(|_| panic!("`{css}` never contained `{needle}`; its text was:\n{last}"))
    }

    /// Waits until `css` matches nothing.
    pub async fn wait_gone(&self, css: &str) {
        wait_for(&format!("`{css}` to go away"), || async {
            self.client
                .find(Locator::Css(css))
                .await
                .is_err()
                .then_some(())
        })
        .await
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Waits for `css` to exist and be enabled, then clicks it.
    pub async fn click(&self, css: &str) {
        let el = wait_for(&format!("`{css}` to be clickable"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            (el.is_displayed().await.ok()? && el.is_enabled().await.ok()?).then_some(el)
        })
        .await;
        el.click().await.unwrap();
    }

    /// Replaces the value of the input `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = wait_for(&format!("input `{css}`"), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.select_by_value(value).await.unwrap();
    }

    /// Answers the page's confirmation dialog, with a reason when it asks for one.
    pub async fn confirm(&self, reason: Option<&str>) {
        self.text("dialog[open] #confirm-title").await;
        if let Some(r) = reason {
            self.fill("#confirm-reason", r).await;
        }
        self.click("dialog[open] #confirm-yes").await;
        self.wait_gone("dialog[open]").await;
    }

    /// Types `text` as key presses into whatever has focus (WebDriver codes like `\u{E004}`
    /// for Tab and `\u{E007}` for Enter included), as a keyboard user would.
    pub async fn keys(&self, text: &str) {
        let mut keys = KeyActions::new("keyboard".into());
        for c in text.chars() {
            keys = keys
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Presses Tab until the element matching `css` has focus (at most 80 times).
    pub async fn tab_to(&self, css: &str) {
        for _ in 0..80 {
            let focused = self
                .client
                .execute(
                    "return document.activeElement.matches(arguments[0]);",
                    vec![json!(css)],
                )
                .await
                .unwrap();
            if focused == json!(true) {
                return;
            }
            self.keys(TAB).await;
        }
        panic!("Tab never reached `{css}`");
    }

    /// The page's console errors since the last call (script exceptions, CSP refusals), less
    /// the browser's own line for each HTTP error answer, which the pages handle on purpose.
    pub async fn console_errors(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/se/log",
            self.driver_port
        );
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let logs: Value = http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        logs["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .filter(|m| !m.contains("Failed to load resource"))
            .collect()
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Saves a PNG of the viewport as `target/ui-screenshots/{name}.png` and returns its path.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Normally `close` ran. On a panic, chromedriver's shutdown command quits the browser
        // it started before chromedriver itself is stopped.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.driver_port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = s.read(&mut [0u8; 256]);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
