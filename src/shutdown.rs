//! Shutdown, explicit and bounded. On SIGTERM or SIGINT: ingest answers `503 shutting_down`,
//! the scheduler starts no new attempt and waits for those in flight (at most
//! `shutdown.grace_period`), and only then is pingora told to stop its services. A second signal
//! during the drain stops at once; whatever was in flight stays pending and is retried on start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Shared by ingest, admin readiness and the scheduler.
pub struct Drain {
    /// Ingest and readiness read this on every request.
    pub draining: Arc<AtomicBool>,
    /// The scheduler watches this.
    pub drain_tx: watch::Sender<bool>,
    /// The delivery service sets this when its last attempt finished (or the grace ran out).
    pub done_rx: watch::Receiver<bool>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.drain_tx.send(true);
        let mut done = self.done_rx.clone();
        tokio::select! {
            _ = done.wait_for(|d| *d) => {
                tracing::info!("drained; stopping services");
                ShutdownSignal::GracefulTerminate
            }
            _ = term.recv() => ShutdownSignal::FastShutdown,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
