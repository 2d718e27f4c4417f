//! hookrelay's benchmark: the real sidecar against two baselines, in one run, on loopback.
//!
//! ```sh
//! cargo run --release --example bench                 # full run (several minutes; 1,000,000-backlog included)
//! cargo run --release --example bench -- --quick      # small version, under a minute (CI runs this)
//! cargo run --release --example bench -- --json out.json
//! cargo run --release --example bench -- --only ingest --concurrency 64   # one ingest level
//! cargo run --release --example bench -- --only backlog --backlog 200000 --per-host 8
//! HOOKRELAY_BENCH_BIN=/path/to/other/hookrelay cargo run --release --example bench   # another build
//! ```
//!
//! It builds and starts the release `hookrelay` binary (or the one `HOOKRELAY_BENCH_BIN` names,
//! printed in the header line) with a fresh temporary data directory
//! and default durability, a minimal receiver answering 200, baseline A (a pingora server that
//! reads the same body and answers 202 without storing) and baseline B (reqwest posting the
//! same bodies straight to the receiver). Its own load generator sends 1 KiB JSON bodies with
//! unique idempotency keys. Each throughput figure is the median of several runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use serde_json::{Value, json};

struct Opts {
    quick: bool,
    json: Option<PathBuf>,
    /// Run only these sections (ingest, e2e, backlog, storm); all when empty.
    only: Vec<String>,
    /// The ingest section's concurrency levels.
    concurrency: Vec<usize>,
    /// The sidecar's `delivery.per_host_concurrency` (every delivery goes to one receiver).
    per_host: usize,
    /// Pending deliveries in the backlog section (default 1,000,000; 10,000 with --quick).
    backlog: Option<usize>,
}

impl Opts {
    fn parse() -> Opts {
        let mut opts = Opts {
            quick: false,
            json: None,
            only: Vec::new(),
            concurrency: vec![1, 16, 64, 256],
            per_host: 64,
            backlog: None,
        };
        fn positive(flag: &str, v: Option<String>) -> usize {
            match v.as_deref().map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => n,
                _ => {
                    eprintln!("bench: {flag} wants a positive number, got {v:?}");
                    std::process::exit(2);
                }
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => opts.quick = true,
                "--json" => match args.next() {
                    Some(path) => opts.json = Some(PathBuf::from(path)),
                    None => {
                        eprintln!("bench: --json wants a file name");
                        std::process::exit(2);
                    }
                },
                "--only" => {
                    for name in args.next().unwrap_or_default().split(',') {
                        if !["ingest", "e2e", "backlog", "storm"].contains(&name) {
                            eprintln!(
                                "bench: --only takes ingest, e2e, backlog and storm, got {name:?}"
                            );
                            std::process::exit(2);
                        }
                        opts.only.push(name.to_string());
                    }
                }
                "--concurrency" => {
                    let list = args.next().unwrap_or_default();
                    let parsed: Result<Vec<usize>, _> =
                        list.split(',').map(|c| c.trim().parse::<usize>()).collect();
                    match parsed {
                        Ok(levels) if !levels.is_empty() && !levels.contains(&0) => {
                            opts.concurrency = levels
                        }
                        _ => {
                            eprintln!(
                                "bench: --concurrency wants positive numbers like 16,64, got {list:?}"
                            );
                            std::process::exit(2);
                        }
                    }
                }
                "--per-host" => opts.per_host = positive("--per-host", args.next()),
                "--backlog" => opts.backlog = Some(positive("--backlog", args.next())),
                "-h" | "--help" => {
                    println!(
                        "usage: bench [--quick] [--json FILE] [--only ingest,e2e,backlog,storm] \
                         [--concurrency 1,16,64,256] [--per-host 64] [--backlog 1000000]\n\
                         --quick: 500 ms windows, 3 runs, a backlog of 10,000, a storm of 2,000\n\
                         --per-host: the sidecar's delivery.per_host_concurrency (its \
                         delivery.concurrency stays at 64, which caps it)"
                    );
                    std::process::exit(0);
                }
                other => {
                    eprintln!("bench: unknown argument {other}");
                    std::process::exit(2);
                }
            }
        }
        opts
    }

    /// How long each throughput sample runs.
    fn window(&self) -> Duration {
        if self.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(8)
        }
    }

    /// Samples per figure; the median is reported.
    fn runs(&self) -> usize {
        if self.quick { 3 } else { 5 }
    }

    fn runs_section(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    fn backlog(&self) -> usize {
        self.backlog
            .unwrap_or(if self.quick { 10_000 } else { 1_000_000 })
    }

    fn storm(&self) -> usize {
        if self.quick { 2_000 } else { 100_000 }
    }
}

/// One printed row (and one JSON object).
struct Row {
    section: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    note: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        note: impl Into<String>,
    ) {
        let row = Row {
            section,
            name: name.into(),
            value,
            unit,
            note: note.into(),
        };
        println!(
            "| {:<10} | {:<44} | {:>12} | {:<8} | {} |",
            row.section,
            row.name,
            fmt_value(row.value),
            row.unit,
            row.note
        );
        self.rows.push(row);
    }

    fn json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    json!({"section": r.section, "name": r.name, "value": r.value, "unit": r.unit, "note": r.note})
                })
                .collect(),
        )
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn body_1k(seq: u64) -> String {
    let pad = "x".repeat(1024 - 60);
    format!("{{\"seq\":{seq:>12},\"event\":\"order.created\",\"pad\":\"{pad}\"}}")
}

// ---------------------------------------------------------------- the receiver

/// Answers 200 (or 503 with probability `fail_ratio`), counting requests and noting when each
/// idempotency key first arrived.
#[derive(Clone, Default)]
struct ReceiverState {
    count: Arc<AtomicU64>,
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    fail_per_mille: Arc<AtomicU64>,
    record: Arc<AtomicBool>,
}

async fn start_receiver() -> (u16, ReceiverState) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    let state = ReceiverState::default();
    async fn handle(
        State(s): State<ReceiverState>,
        headers: HeaderMap,
        _body: axum::body::Bytes,
    ) -> StatusCode {
        s.count.fetch_add(1, Ordering::Relaxed);
        if fastrand::u64(0..1000) < s.fail_per_mille.load(Ordering::Relaxed) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if s.record.load(Ordering::Relaxed)
            && let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok())
        {
            s.first_seen
                .lock()
                .unwrap()
                .entry(k.to_string())
                .or_insert_with(Instant::now);
        }
        StatusCode::OK
    }
    let app = axum::Router::new()
        .fallback(axum::routing::any(handle))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, state)
}

// ---------------------------------------------------------------- baseline A

/// Reads the whole body like ingest does and answers 202 without storing anything.
struct Baseline202;

#[async_trait]
impl ServeHttp for Baseline202 {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let mut n = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            n += chunk.len();
        }
        let body =
            format!("{{\"id\":\"baseline\",\"bytes\":{n},\"duplicate\":false}}").into_bytes();
        http::Response::builder()
            .status(202)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap()
    }
}

fn start_baseline_a(threads: usize) -> u16 {
    let port = free_port();
    std::thread::spawn(move || {
        let conf = ServerConf {
            threads,
            grace_period_seconds: Some(0),
            graceful_shutdown_timeout_seconds: Some(0),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut service = Service::new("baseline-a".into(), HttpServer::new_app(Baseline202));
        service.add_tcp(&format!("127.0.0.1:{port}"));
        service.threads = Some(threads);
        server.add_service(service);
        server.run(RunArgs::default());
    });
    port
}

// ---------------------------------------------------------------- the sidecar

struct Sidecar {
    child: Child,
    ingest: u16,
    admin: u16,
    data: PathBuf,
    http: reqwest::Client,
}

/// The sidecar to measure: `HOOKRELAY_BENCH_BIN` when set (to compare two builds in one
/// session), otherwise this checkout's release build, built first.
fn sidecar_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOOKRELAY_BENCH_BIN") {
        // Absolute, so the file checked is the file started (a bare name would go through PATH).
        return match std::fs::canonicalize(&bin) {
            Ok(bin) if bin.is_file() => bin,
            _ => {
                let bin = PathBuf::from(bin);
                eprintln!(
                    "bench: HOOKRELAY_BENCH_BIN is not a file: {}",
                    bin.display()
                );
                std::process::exit(2);
            }
        };
    }
    // The example lives in target/release/examples/; the binary one level up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("hookrelay");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "hookrelay"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the sidecar failed");
    bin
}

impl Sidecar {
    async fn start(opts: &Opts, bin: &Path, data: &Path, extra_env: &[(&str, String)]) -> Sidecar {
        let (ingest, admin) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("HOOKRELAY_INGEST__LISTEN", format!("127.0.0.1:{ingest}"))
            .env("HOOKRELAY_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("HOOKRELAY_STORE__PATH", data)
            .env("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[\"127.0.0.0/8\"]")
            // Every delivery goes to the one local receiver. 64 (`--per-host`) matches
            // delivery.concurrency and baseline B's 64 senders, so both send with the same
            // concurrency. The README's Performance section compares it with the default of 8.
            .env(
                "HOOKRELAY_DELIVERY__PER_HOST_CONCURRENCY",
                opts.per_host.to_string(),
            )
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start hookrelay");
        let s = Sidecar {
            child,
            ingest,
            admin,
            data: data.to_path_buf(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        s.wait_ready().await;
        s
    }

    async fn wait_ready(&self) -> Duration {
        let t0 = Instant::now();
        loop {
            let ok = self
                .http
                .get(format!("http://127.0.0.1:{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok && std::net::TcpStream::connect(("127.0.0.1", self.ingest)).is_ok() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "sidecar never became ready"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn admin_post(&self, path: &str) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.admin))
            .json(&json!({"reason": "bench"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// Waits until nothing is pending or in flight; false if `limit` passed first.
    async fn wait_drained(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            let m = self.metrics().await;
            let left = metric(&m, "hookrelay_queue_depth{status=\"pending\"}")
                + metric(&m, "hookrelay_queue_depth{status=\"in_progress\"}");
            if left == 0.0 {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User plus system CPU seconds of the sidecar process so far.
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn data_file_mb(&self) -> f64 {
        std::fs::metadata(self.data.join("hookrelay.redb"))
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    }

    /// SIGKILL, as a crash would.
    fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- load generation

struct LoadResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// (sent, acked) instants by idempotency key (end-to-end runs only).
    acks: HashMap<String, (Instant, Instant)>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `concurrency` senders POST 1 KiB bodies to `url` for `window` (or until `total` requests).
async fn load(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    window: Option<Duration>,
    total: Option<u64>,
    keep_acks: bool,
) -> LoadResult {
    let stop_at = window.map(|w| Instant::now() + w);
    let remaining = Arc::new(AtomicU64::new(total.unwrap_or(u64::MAX)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, remaining) = (client.clone(), url.to_string(), remaining.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut lat = Vec::new();
            let mut acks = HashMap::new();
            loop {
                if stop_at.is_some_and(|s| Instant::now() >= s) {
                    break;
                }
                if remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let seq = SEQ.fetch_add(1, Ordering::Relaxed);
                let key = format!("bench-{seq}");
                let start = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", &key)
                    .body(body_1k(seq))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        let now = Instant::now();
                        lat.push(now - start);
                        ok += 1;
                        if keep_acks {
                            acks.insert(key, (start, now));
                        }
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, lat, acks)
        }));
    }
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        acks: HashMap::new(),
    };
    for t in tasks {
        let (ok, errors, lat, acks) = t.await.unwrap();
        result.ok += ok;
        result.errors += errors;
        result.latencies.extend(lat);
        result.acks.extend(acks);
    }
    result.elapsed = t0.elapsed();
    result.latencies.sort();
    result
}

/// A baseline's req/s: warm `concurrency` connections, then load for `window`.
async fn baseline_rate(url: &str, concurrency: usize, window: Duration) -> f64 {
    let http = client(concurrency);
    load(
        &http,
        url,
        concurrency,
        None,
        Some(concurrency as u64 * 2),
        false,
    )
    .await;
    load(&http, url, concurrency, Some(window), None, false)
        .await
        .rate()
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- measurements

async fn ingest_section(
    opts: &Opts,
    bin: &Path,
    report: &mut Report,
    baseline_a: u16,
    receiver: u16,
) {
    for &c in &opts.concurrency {
        let (mut hr, mut base, mut p50, mut p99, mut max, mut per_fsync, mut batch) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..opts.runs() {
            let dir = tempfile::tempdir().unwrap();
            let sidecar = Sidecar::start(opts, bin, dir.path(), &[]).await;
            sidecar.admin_post("/v1/pause").await;
            let http = client(c);
            let url = format!(
                "http://127.0.0.1:{}/http://127.0.0.1:{receiver}/hook",
                sidecar.ingest
            );
            // Warm the connections, then measure.
            load(&http, &url, c, None, Some(c as u64 * 2), false).await;
            let before = sidecar.metrics().await;
            let r = load(&http, &url, c, Some(opts.window()), None, false).await;
            let after = sidecar.metrics().await;
            let commits = metric(&after, "hookrelay_store_commit_batch_size_count")
                - metric(&before, "hookrelay_store_commit_batch_size_count");
            let ops = metric(&after, "hookrelay_store_commit_batch_size_sum")
                - metric(&before, "hookrelay_store_commit_batch_size_sum");
            hr.push(r.rate());
            p50.push(percentile(&r.latencies, 0.5));
            p99.push(percentile(&r.latencies, 0.99));
            max.push(percentile(&r.latencies, 1.0));
            per_fsync.push(r.ok as f64 / commits.max(1.0));
            batch.push(ops / commits.max(1.0));
            if r.errors > 0 {
                eprintln!("ingest c={c}: {} errors", r.errors);
            }
            sidecar.stop();

            let url = format!("http://127.0.0.1:{baseline_a}/http://127.0.0.1:{receiver}/hook");
            base.push(baseline_rate(&url, c, opts.window()).await);
        }
        let (hr, base) = (median(hr), median(base));
        report.add(
            "ingest",
            format!("durable acks/s, concurrency {c}"),
            hr,
            "req/s",
            "delivery paused",
        );
        report.add(
            "ingest",
            format!("baseline A req/s, concurrency {c}"),
            base,
            "req/s",
            "pingora 202, no store",
        );
        report.add(
            "ingest",
            format!("ratio to baseline A, concurrency {c}"),
            hr / base,
            "x",
            "target >= 0.5 at c=64",
        );
        report.add(
            "ingest",
            format!("ack latency p50, concurrency {c}"),
            median(p50),
            "ms",
            "",
        );
        report.add(
            "ingest",
            format!("ack latency p99, concurrency {c}"),
            median(p99),
            "ms",
            "target < 10 ms at c=64",
        );
        report.add(
            "ingest",
            format!("ack latency max, concurrency {c}"),
            median(max),
            "ms",
            "",
        );
        report.add(
            "ingest",
            format!("acked webhooks per fsync, concurrency {c}"),
            median(per_fsync),
            "acks",
            "target >= 20 at c=64",
        );
        report.add(
            "ingest",
            format!("mean commit batch size, concurrency {c}"),
            median(batch),
            "ops",
            "",
        );
    }
}

async fn end_to_end_section(
    opts: &Opts,
    bin: &Path,
    report: &mut Report,
    receiver: u16,
    rstate: &ReceiverState,
) {
    let c = 64;
    let (mut rates, mut base, mut p50, mut p99) = (vec![], vec![], vec![], vec![]);
    let (mut sent_p50, mut sent_p99, mut early) = (vec![], vec![], vec![]);
    for _ in 0..opts.runs() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start(opts, bin, dir.path(), &[]).await;
        rstate.first_seen.lock().unwrap().clear();
        rstate.record.store(true, Ordering::Relaxed);
        let received_before = rstate.count.load(Ordering::Relaxed);
        let http = client(c);
        let url = format!(
            "http://127.0.0.1:{}/http://127.0.0.1:{receiver}/e2e",
            sidecar.ingest
        );
        let t0 = Instant::now();
        let r = load(&http, &url, c, Some(opts.window()), None, true).await;
        // Deliveries/s: everything acked, counted until the last one arrived.
        let deadline = Instant::now() + Duration::from_secs(120);
        while rstate.first_seen.lock().unwrap().len() < r.acks.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = t0.elapsed();
        let delivered = rstate.count.load(Ordering::Relaxed) - received_before;
        rates.push(delivered as f64 / done.as_secs_f64());
        let seen = rstate.first_seen.lock().unwrap().clone();
        // A delivery can reach the receiver before its sender has read the ack (the scheduler
        // hears of it at the commit, as ingest does): that counts as 0 here.
        let mut before_ack = 0usize;
        let (mut lat, mut from_send): (Vec<Duration>, Vec<Duration>) = r
            .acks
            .iter()
            .filter_map(|(k, (sent, acked))| {
                seen.get(k).map(|got| {
                    before_ack += usize::from(got < acked);
                    (
                        got.saturating_duration_since(*acked),
                        got.saturating_duration_since(*sent),
                    )
                })
            })
            .unzip();
        early.push(100.0 * before_ack as f64 / lat.len().max(1) as f64);
        lat.sort();
        from_send.sort();
        p50.push(percentile(&lat, 0.5));
        p99.push(percentile(&lat, 0.99));
        sent_p50.push(percentile(&from_send, 0.5));
        sent_p99.push(percentile(&from_send, 0.99));
        rstate.record.store(false, Ordering::Relaxed);
        sidecar.stop();

        let url = format!("http://127.0.0.1:{receiver}/direct");
        base.push(baseline_rate(&url, c, opts.window()).await);
    }
    let (rate, base) = (median(rates), median(base));
    report.add(
        "e2e",
        "deliveries/s reaching the receiver, c=64",
        rate,
        "req/s",
        "ingest and delivery at once",
    );
    report.add(
        "e2e",
        "baseline B req/s (reqwest straight to receiver), c=64",
        base,
        "req/s",
        "",
    );
    report.add(
        "e2e",
        "ratio to baseline B",
        rate / base,
        "x",
        "target >= 0.6",
    );
    let before_ack = "0: received before its sender read the ack";
    report.add("e2e", "ack to receipt p50", median(p50), "ms", before_ack);
    report.add("e2e", "ack to receipt p99", median(p99), "ms", before_ack);
    report.add(
        "e2e",
        "received before the sender read its ack",
        median(early),
        "%",
        "counted as 0 ms above",
    );
    report.add(
        "e2e",
        "send to receipt p50",
        median(sent_p50),
        "ms",
        "ack latency included",
    );
    report.add(
        "e2e",
        "send to receipt p99",
        median(sent_p99),
        "ms",
        "ack latency included",
    );
}

async fn backlog_section(opts: &Opts, bin: &Path, report: &mut Report, receiver: u16) {
    let n = opts.backlog();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(opts, bin, dir.path(), &[]).await;
    sidecar.admin_post("/v1/pause").await;
    let http = client(256);
    let url = format!(
        "http://127.0.0.1:{}/http://127.0.0.1:{receiver}/backlog",
        sidecar.ingest
    );
    let t0 = Instant::now();
    let r = load(&http, &url, 256, None, Some(n as u64), false).await;
    let ingest_secs = t0.elapsed().as_secs_f64();
    assert_eq!(r.ok as usize, n, "backlog ingest had {} errors", r.errors);
    let rss = sidecar.rss_mb();
    let file = sidecar.data_file_mb();
    report.add(
        "backlog",
        "pending deliveries ingested while paused",
        n as f64,
        "count",
        format!("at {:.0}/s, c=256", n as f64 / ingest_secs),
    );
    report.add(
        "backlog",
        "RSS with the backlog pending",
        rss,
        "MB",
        "target < 200 MB at 1,000,000",
    );
    report.add("backlog", "data file size", file, "MB", "");
    sidecar.stop();

    let t0 = Instant::now();
    let sidecar = Sidecar::start(opts, bin, dir.path(), &[]).await;
    let ready = t0.elapsed();
    report.add(
        "backlog",
        "ready after restart (process start to /readyz)",
        ready.as_secs_f64(),
        "s",
        "target < 5 s at 1,000,000",
    );
    report.add("backlog", "RSS after restart", sidecar.rss_mb(), "MB", "");
    // The same after a crash: redb checks the file before it opens (no quick-repair mode).
    sidecar.crash();
    let t0 = Instant::now();
    let sidecar = Sidecar::start(opts, bin, dir.path(), &[]).await;
    report.add(
        "backlog",
        "ready after kill -9 and restart",
        t0.elapsed().as_secs_f64(),
        "s",
        "includes redb's repair of the file",
    );
    let t0 = Instant::now();
    sidecar.admin_post("/v1/resume").await;
    assert!(
        sidecar.wait_drained(Duration::from_secs(3600)).await,
        "backlog never drained"
    );
    let drain = t0.elapsed().as_secs_f64();
    report.add(
        "backlog",
        "time to drain once resumed",
        drain,
        "s",
        format!("{:.0} deliveries/s", n as f64 / drain),
    );
    sidecar.stop();
}

async fn storm_section(
    opts: &Opts,
    bin: &Path,
    report: &mut Report,
    receiver: u16,
    rstate: &ReceiverState,
) {
    let n = opts.storm();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HOOKRELAY_RETRY__INITIAL_DELAY", "20ms".to_string()),
        ("HOOKRELAY_RETRY__MAX_DELAY", "200ms".to_string()),
        ("HOOKRELAY_RETRY__MAX_ATTEMPTS", "30".to_string()),
        // Half of all attempts fail at random, so runs of 10 consecutive failures (the default
        // breaker threshold) happen every few thousand attempts; the open circuit then holds
        // the one host for `health.probe_interval`, and the figure would measure that wait
        // (it varied from 2k to 14k attempts/s between runs). This measures the scheduler.
        ("HOOKRELAY_HEALTH__FAILURE_THRESHOLD", "1000000".to_string()),
    ];
    let sidecar = Sidecar::start(opts, bin, dir.path(), &env).await;
    sidecar.admin_post("/v1/pause").await;
    let http = client(64);
    let url = format!(
        "http://127.0.0.1:{}/http://127.0.0.1:{receiver}/storm",
        sidecar.ingest
    );
    load(&http, &url, 64, None, Some(n as u64), false).await;
    rstate.fail_per_mille.store(500, Ordering::Relaxed);
    let cpu0 = sidecar.cpu_secs();
    let m0 = sidecar.metrics().await;
    let t0 = Instant::now();
    sidecar.admin_post("/v1/resume").await;
    sidecar.wait_drained(Duration::from_secs(1800)).await;
    let secs = t0.elapsed().as_secs_f64();
    let m1 = sidecar.metrics().await;
    let cpu = sidecar.cpu_secs() - cpu0;
    let attempts: f64 = ["SUCCESS", "HTTP_5XX_RETRYABLE"]
        .iter()
        .map(|c| {
            let s = format!("hookrelay_attempts_total{{classification=\"{c}\"}}");
            metric(&m1, &s) - metric(&m0, &s)
        })
        .sum();
    let busy = "hookrelay_scheduler_busy_seconds_total";
    let scheduler = metric(&m1, busy) - metric(&m0, busy);
    rstate.fail_per_mille.store(0, Ordering::Relaxed);
    report.add(
        "storm",
        "deliveries through a 50%-503 receiver",
        n as f64,
        "count",
        "",
    );
    report.add(
        "storm",
        "attempts/s sustained",
        attempts / secs,
        "att/s",
        format!("{attempts:.0} attempts in {secs:.1} s; breaker off"),
    );
    report.add(
        "storm",
        "sidecar CPU during the storm",
        100.0 * cpu / secs,
        "% core",
        "whole process: scheduler, HTTP client, writer",
    );
    report.add(
        "storm",
        "sidecar CPU per 1000 attempts",
        1000.0 * cpu / attempts.max(1.0),
        "s",
        "",
    );
    report.add(
        "storm",
        "scheduler busy during the storm",
        100.0 * scheduler / secs,
        "% core",
        "its loop's own work (hookrelay_scheduler_busy_seconds_total)",
    );
    report.add(
        "storm",
        "scheduler busy per 1000 attempts",
        1000.0 * scheduler / attempts.max(1.0),
        "s",
        "",
    );
    sidecar.stop();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = Opts::parse();
    let bin = sidecar_binary();
    let (receiver, rstate) = start_receiver().await;
    let baseline_a = start_baseline_a(2);
    let mut report = Report::default();
    println!(
        "hookrelay bench ({}): {} runs per figure, median reported, {:?} windows; sidecar {}, \
         per-host limit {}",
        if opts.quick { "quick" } else { "full" },
        opts.runs(),
        opts.window(),
        bin.display(),
        opts.per_host
    );
    println!(
        "| section    | figure                                       |        value | unit     | note |"
    );
    println!(
        "|------------|----------------------------------------------|-------------:|----------|------|"
    );
    let started = Instant::now();
    if opts.runs_section("ingest") {
        ingest_section(&opts, &bin, &mut report, baseline_a, receiver).await;
        eprintln!("(ingest section done at {:.1?})", started.elapsed());
    }
    if opts.runs_section("e2e") {
        end_to_end_section(&opts, &bin, &mut report, receiver, &rstate).await;
        eprintln!("(end-to-end section done at {:.1?})", started.elapsed());
    }
    if opts.runs_section("backlog") {
        backlog_section(&opts, &bin, &mut report, receiver).await;
        eprintln!("(backlog section done at {:.1?})", started.elapsed());
    }
    if opts.runs_section("storm") {
        storm_section(&opts, &bin, &mut report, receiver, &rstate).await;
        eprintln!("(retry storm section done at {:.1?})", started.elapsed());
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json()).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
    std::process::exit(0);
}
