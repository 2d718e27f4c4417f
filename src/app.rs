//! Composition: open the store, load the scheduler's queue, start the writer, build the pingora
//! server with its three services (ingest listener, delivery, admin), run it, and join the
//! writer once every service has stopped.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, GenBackgroundService};
use pingora::services::listening::Service;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, AdminState};
use crate::clock;
use crate::config::Config;
use crate::deliver::Deliverer;
use crate::health::{BreakerPolicy, EndpointGate, HostHealth};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::schedule::{Backlog, InFlight, Queue, Scheduler};
use crate::sender::{ClientSettings, ReqwestSender};
use crate::shutdown::Drain;
use crate::store::Store;
use crate::store::writer::{self, PRUNE_LIMIT, WriterHandle};

/// Longest wait between prune passes when nothing is known to expire sooner.
const PRUNE_IDLE: Duration = Duration::from_secs(3600);
/// Shortest wait between two prune passes that did not fill (`writer::PRUNE_LIMIT`).
const PRUNE_MIN_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the writer to finish its last batch after the services stopped.
const WRITER_JOIN: Duration = Duration::from_secs(10);

/// Runs the sidecar until a signal stops it.
pub fn serve(config: Config) -> anyhow::Result<()> {
    // Fail before anything starts if a port is taken; pingora would only log it.
    drop(
        TcpListener::bind(config.ingest.listen)
            .with_context(|| format!("ingest.listen {}: cannot bind", config.ingest.listen))?,
    );
    let admin_listener = TcpListener::bind(config.admin.listen)
        .with_context(|| format!("admin.listen {}: cannot bind", config.admin.listen))?;
    admin_listener.set_nonblocking(true)?;

    for ep in config.endpoints.values() {
        if let Err(denied) = config.egress.check_url(&ep.url) {
            tracing::warn!(endpoint = %ep.name, reason = %denied, "the egress guard denies this endpoint's URL; its webhooks will be refused");
        }
    }
    let store = Store::open_with_cache(&config.store.path, config.store.cache_bytes)?;
    let metrics = Metrics::new();
    let per_host_limit = config.delivery.per_host_concurrency;
    let mut queue = Queue::new(per_host_limit)
        .with_breaker(BreakerPolicy {
            threshold: config.health.failure_threshold,
            probe_interval_ms: clock::duration_ms(config.health.probe_interval),
        })
        .with_rates(config.rate_limits.clone());
    // Loaded before the writer starts, so no commit can be both in this snapshot and announced.
    // A retry scheduled further out than the longest `max_delay` configured now (it was
    // shortened since) is brought forward to it: "no delay exceeds max_delay" holds for the
    // retries already waiting too. Only the queue's time changes; the stored
    // `next_attempt_at` is rewritten by the attempt.
    let now = clock::now_ms();
    let latest = config
        .endpoints
        .values()
        .map(|e| e.retry.max_delay)
        .chain([config.retry.max_delay])
        .max()
        .map_or(u64::MAX, |d| now.saturating_add(clock::duration_ms(d)));
    let mut brought_forward = 0usize;
    let pending = store.for_each_due(|e| {
        let at = if e.next_at > latest {
            brought_forward += 1;
            latest
        } else {
            e.next_at
        };
        queue.push(e.host, at, e.id)
    })?;
    if brought_forward > 0 {
        tracing::info!(
            deliveries = brought_forward,
            "retries scheduled beyond the configured retry.max_delay are brought forward to it"
        );
    }
    // Pauses are stored, so a kill switch thrown before a restart still holds after it.
    let paused = store.pause()?.is_some();
    for (host, _) in store.host_pauses()? {
        queue.set_host_paused(&host, true);
    }
    tracing::info!(pending, paused, path = %config.store.path.display(), "store opened");
    let longest_timeout = config
        .endpoints
        .values()
        .map(|e| e.timeout)
        .chain([config.delivery.timeout])
        .max()
        .unwrap_or_default();
    if config.shutdown.grace_period <= longest_timeout {
        tracing::warn!(
            grace_period = ?config.shutdown.grace_period,
            timeout = ?longest_timeout,
            "shutdown.grace_period is not longer than the delivery timeout: at a stop, an attempt still waiting on a slow receiver is cut off, leaves no attempt record, and is sent again after the restart"
        );
    }
    metrics.paused.set(i64::from(paused));
    let (control_tx, control_rx) = mpsc::unbounded_channel();

    let (enqueued_tx, enqueued_rx) = mpsc::unbounded_channel();
    let gate = EndpointGate::new(store.disabled_endpoints()?);
    if !gate.disabled().is_empty() {
        let names: Vec<String> = gate.disabled().into_iter().collect();
        tracing::warn!(endpoints = %names.join(", "), "endpoints disabled by 410 Gone; enable them from the admin API");
    }
    let (writer, writer_join) =
        writer::spawn_with_limit(&store, metrics.clone(), enqueued_tx, config.store.max_bytes)?;
    let host_health = HostHealth::default();
    let backlog = Backlog::default();

    let draining = Arc::new(AtomicBool::new(false));
    let (drain_tx, drain_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let in_flight = InFlight::default();

    let sender = ReqwestSender::new(
        &ClientSettings {
            connect_timeout: config.delivery.connect_timeout,
            user_agent: &config.delivery.user_agent,
            max_idle_per_host: per_host_limit,
            ca_roots: &config.ca_roots,
        },
        &config.endpoints,
        config.delivery.response_snippet_bytes,
        Arc::new(config.egress.clone()),
        metrics.clone(),
    )
    .context("building the HTTP client")?;
    let deliverer = Deliverer::new(
        &config,
        store.clone(),
        writer.clone(),
        Arc::new(sender),
        metrics.clone(),
        gate.clone(),
    );
    let scheduler = Scheduler {
        queue,
        paused,
        control_rx,
        concurrency: config.delivery.concurrency,
        attempts: Default::default(),
        deliverer: Arc::new(deliverer),
        in_flight: in_flight.clone(),
        metrics: metrics.clone(),
        enqueued_rx,
        gate: gate.clone(),
        host_health: host_health.clone(),
        backlog: backlog.clone(),
        parked: Default::default(),
        withdrawn: Default::default(),
    };

    let conf = ServerConf {
        // Our own drain (shutdown.rs) already waited; pingora need not wait again.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(2),
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let ingest = Ingest::new(
        &config,
        writer.clone(),
        store.clone(),
        metrics.clone(),
        draining.clone(),
        backlog,
    );
    let mut ingest_service = Service::new("ingest".into(), ingest);
    ingest_service.add_tcp(&config.ingest.listen.to_string());
    ingest_service.threads = Some(config.ingest.threads);
    server.add_service(ingest_service);

    let delivery = DeliveryService {
        parts: Mutex::new(Some((scheduler, drain_rx))),
        done_tx,
        grace: config.shutdown.grace_period,
        writer: writer.clone(),
        retention_ms: clock::duration_ms(config.store.retention),
        // Nothing written from now on can expire sooner than this.
        horizon: config.store.retention.min(config.idempotency.window),
    };
    let mut delivery_service = GenBackgroundService::new("delivery".into(), Arc::new(delivery));
    delivery_service.threads = Some(config.delivery.threads);
    server.add_service(delivery_service);

    let admin = AdminService {
        listener: Mutex::new(Some(admin_listener)),
        state: AdminState {
            store: store.clone(),
            writer: writer.clone(),
            in_flight,
            metrics,
            draining: draining.clone(),
            gate,
            host_health,
            control_tx,
            config: Arc::new(config.admin.clone()),
            endpoints: Arc::new(config.endpoints.clone()),
            notify: config.notify.clone(),
            pauses: Arc::default(),
        },
    };
    server.add_service(GenBackgroundService::new("admin".into(), Arc::new(admin)));
    drop(writer);

    tracing::info!(
        ingest = %config.ingest.listen,
        admin = %config.admin.listen,
        "hookrelay serving"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            draining,
            drain_tx,
            done_rx,
        }),
    });

    // Every service is gone, so every writer handle is gone: the writer finishes its last batch.
    let started = Instant::now();
    while !writer_join.is_finished() {
        if started.elapsed() > WRITER_JOIN {
            tracing::warn!(
                "the store writer did not stop in time; exiting (acked data is committed)"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = writer_join.join();
    tracing::info!("stopped");
    Ok(())
}

/// The scheduler and its attempts, plus the pruner, on the delivery runtime.
struct DeliveryService {
    /// Taken once by `start`.
    parts: Mutex<Option<(Scheduler, watch::Receiver<bool>)>>,
    done_tx: watch::Sender<bool>,
    grace: Duration,
    writer: WriterHandle,
    retention_ms: u64,
    horizon: Duration,
}

#[async_trait]
impl BackgroundService for DeliveryService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some((scheduler, drain_rx)) = self.parts.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let pruner = tokio::spawn(prune_loop(
            self.writer.clone(),
            self.retention_ms,
            self.horizon,
            drain_rx.clone(),
        ));
        scheduler.run(drain_rx, self.grace).await;
        pruner.abort();
        let _ = self.done_tx.send(true);
    }
}

/// Removes expired idempotency keys, old finished deliveries and old replay batches, sleeping until the next one
/// is due, never on a fixed tick. When nothing is stored yet, the earliest anything written
/// later can expire is `horizon` from now (bounded by `PRUNE_IDLE`).
async fn prune_loop(
    writer: WriterHandle,
    retention_ms: u64,
    horizon: Duration,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        let now = clock::now_ms();
        let wait = match writer.prune(now, retention_ms).await {
            Ok(r) => {
                if r.deliveries + r.idempotency + r.batches > 0 {
                    tracing::debug!(
                        deliveries = r.deliveries,
                        keys = r.idempotency,
                        batches = r.batches,
                        "pruned"
                    );
                }
                let full = r.deliveries.max(r.idempotency).max(r.batches) >= PRUNE_LIMIT;
                let wait = r
                    .next_due
                    .map(|at| Duration::from_millis(at.saturating_sub(now)))
                    .unwrap_or(PRUNE_IDLE)
                    .min(horizon)
                    .min(PRUNE_IDLE);
                // A full pass goes on at once (a backlog to catch up); otherwise at most one
                // pass a second, so a short retention batches its rows instead of committing
                // for each one as it expires.
                if full {
                    Duration::ZERO
                } else {
                    wait.max(PRUNE_MIN_WAIT)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "prune failed; trying again later");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = drain.wait_for(|d| *d) => return,
        }
    }
}

/// The admin API on its own runtime, so a slow admin client cannot delay ingest.
struct AdminService {
    listener: Mutex<Option<TcpListener>>,
    state: AdminState,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let app = admin::router(self.state.clone());
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        admin::listen::serve(listener, app, stop, admin::listen::Limits::DEFAULT).await;
    }
}
