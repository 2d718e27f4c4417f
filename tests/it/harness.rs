//! The test harness: the real `hookrelay` binary on free ports with a temporary data directory,
//! and a scripted HTTP receiver that records every request it gets.
//!
//! Waits poll a condition until a deadline; nothing sleeps for a fixed time to "let things
//! settle". Deadlines are generous because CI machines are shared and slow.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago.
/// Runs `cmd` with its stdout closed before it can write anything, as `| head` does at once:
/// its first write meets a broken pipe. Its output (stderr only).
pub fn run_with_stdout_closed(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; the binary installs ring, so do we.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running sidecar. Killed (SIGKILL) on drop.
pub struct Sidecar {
    pub dir: tempfile::TempDir,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    extra_config: String,
    /// Environment for the child, over the defaults set in `spawn`.
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub http: reqwest::Client,
    /// Sent as a bearer token on admin requests when set (admin.token).
    pub token: Option<String>,
    /// How many times this sidecar was started, for log file names.
    starts: usize,
}

impl Sidecar {
    /// Starts with `extra` TOML as its config file. The egress guard is on, with loopback
    /// opened (`HOOKRELAY_EGRESS__ALLOW_CIDRS`), because every test receiver is on 127.0.0.1.
    pub async fn start(extra: &str) -> Sidecar {
        Sidecar::start_with_env(extra, &[]).await
    }

    /// As [`Sidecar::start`], with environment variables over the defaults (for example
    /// `("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[]")` to close the loopback exception).
    pub async fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut sidecar = Sidecar {
            dir,
            ingest: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            extra_config: extra.to_string(),
            child: None,
            http: client(),
            token: None,
            starts: 0,
        };
        sidecar.spawn_on_free_ports().await;
        sidecar
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn spawn_on_free_ports(&mut self) {
        for _ in 0..5 {
            self.ingest = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            if self.spawn().await {
                return;
            }
        }
        panic!("sidecar did not start; see {}", self.log_path().display());
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("sidecar-{}.log", self.starts))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns the binary and waits until both listeners answer. False if it exited early.
    async fn spawn(&mut self) -> bool {
        self.starts += 1;
        let config_path = self.dir.path().join("hookrelay.toml");
        std::fs::write(&config_path, &self.extra_config).unwrap();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info,hookrelay=debug")
            .env(
                "HOOKRELAY_EGRESS__ALLOW_CIDRS",
                r#"["127.0.0.0/8", "::1/128"]"#,
            )
            // Listeners and data directory come from the environment, so `extra` may use
            // any section of the config file without clashing with ours.
            .env("HOOKRELAY_INGEST__LISTEN", self.ingest.to_string())
            .env("HOOKRELAY_ADMIN__LISTEN", self.admin.to_string())
            .env("HOOKRELAY_STORE__PATH", self.data_dir())
            .env_remove("HOOKRELAY_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("sidecar exited early ({status}):\n{}", self.log());
                self.child = None;
                return false;
            }
            let healthy = self
                .http
                .get(self.admin_url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy && TcpStream::connect(self.ingest).await.is_ok() {
                return true;
            }
            if start.elapsed() > DEADLINE {
                panic!("sidecar not ready in time:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts again on the same data directory and ports.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the sidecar before restarting it"
        );
        if !self.spawn().await {
            // The old ports were taken meanwhile; the data directory is what matters.
            self.spawn_on_free_ports().await;
        }
    }

    /// Replaces the extra config (takes effect at the next restart).
    pub fn set_extra_config(&mut self, extra: &str) {
        self.extra_config = extra.to_string();
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal_term();
        self.wait_exit().await
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let child = self.child.as_ref().expect("sidecar is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (after a signal) and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("sidecar is running");
        wait_for("sidecar to exit", || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        })
        .await
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ingest, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// POSTs `body` to the URL-prefix form for `target`, returning status and JSON.
    pub async fn send(&self, target: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.ingest_url(&format!("/{target}")))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.admin_url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self
            .admin_request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs `body` (sent as is, so tests can send broken JSON) to the admin API.
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .admin_request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string()).await
    }

    /// GET /v1/stats, asserting 200.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.get_json("/v1/stats").await;
        assert_eq!(status, 200, "GET /v1/stats: {body}");
        body
    }

    /// Waits until `GET /v1/stats` shows `n` deliveries in `state`.
    pub async fn wait_count(&self, state: &str, n: u64) -> Value {
        wait_for(&format!("{n} deliveries {state}"), || async {
            let s = self.stats().await;
            (s["counts"][state] == n).then_some(s)
        })
        .await
    }

    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "GET delivery {id}: {body}");
        body
    }

    /// Waits until the delivery reaches `status` and returns it.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        wait_for(&format!("delivery {id} to be {status}"), || async {
            let d = self.delivery(id).await;
            (d["status"] == status).then_some(d)
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        self.admin_request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Sidecar {
    /// Kills the sidecar, then fails the test if it panicked in any of its runs (the panic
    /// hook logs each panic at ERROR), so every test also checks that nothing panicked.
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            return;
        }
        for start in 1..=self.starts {
            let path = self.dir.path().join(format!("sidecar-{start}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("panicked (a bug in hookrelay"))
            {
                panic!("the sidecar panicked ({}):\n{line}", path.display());
            }
        }
    }
}

/// The value of one sample in Prometheus text, e.g. `metric(&text, "x_total{a=\"b\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, exactly as on the request line.
    pub target: String,
    /// Names lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Status with extra headers and a body.
    Full(u16, Vec<(String, String)>, String),
    /// Close the connection with a reset instead of answering.
    Reset,
    /// Wait this long, then answer 200 (a timeout test's slow receiver).
    Stall(Duration),
    /// Answer this status at once with a body promised but never finished: the first bytes,
    /// then nothing while the connection stays open.
    HeadThenStall(u16),
}

/// Decides the reply from the request and how many requests this path got before it.
pub type Script = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server on a free loopback port that records requests and answers as
/// scripted. Written over raw TCP so it can reset connections and stall on purpose.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_, _| Reply::Status(200))).await
    }

    pub async fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (log, counts, script) = (log.clone(), counts.clone(), script.clone());
                    tokio::spawn(async move {
                        let _ = serve_connection(stream, log, counts, script).await;
                    });
                }
            })
        };
        Receiver { addr, log, task }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived and returns them all.
    pub async fn wait_count(&self, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} requests at the receiver"), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    script: Script,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let target = request_line.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);
        let path = target.split('?').next().unwrap_or_default().to_string();
        let received = Received {
            method,
            target,
            headers,
            body,
            at: Instant::now(),
        };
        let nth = {
            let mut c = counts.lock().unwrap();
            let e = c.entry(path).or_default();
            *e += 1;
            *e - 1
        };
        let reply = script(&received, nth);
        log.lock().unwrap().push(received);
        let (status, extra, body) = match reply {
            Reply::Status(s) => (s, vec![], String::new()),
            Reply::Full(s, h, b) => (s, h, b),
            Reply::Reset => {
                // Zero linger sends RST on close and does not block.
                #[allow(deprecated)]
                stream.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Reply::Stall(d) => {
                tokio::time::sleep(d).await;
                (200, vec![], String::new())
            }
            Reply::HeadThenStall(status) => {
                let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 100000\r\n\r\npartial");
                stream.write_all(head.as_bytes()).await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
        };
        let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
        for (n, v) in extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        stream.write_all(out.as_bytes()).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The classification of each attempt of a delivery (as `GET /v1/deliveries/{id}` shows it),
/// oldest first.
pub fn classes(d: &Value) -> Vec<String> {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["classification"].as_str().unwrap().to_string())
        .collect()
}

/// Fast retries so tests finish in seconds.
pub const FAST_RETRY: &str = "[retry]\ninitial_delay = \"50ms\"\nmultiplier = 2.0\nmax_delay = \"1s\"\nmax_attempts = 5\njitter = 0.0\n";
