//! Prometheus metrics: one Registry owned by the app (never the global one), typed handles that
//! every stage clones, and the text rendering served at `/metrics`.
//!
//! Gauges are right after a restart: queue depth and `paused` are set by the scheduler, whose
//! queue and pause are loaded from the store before it runs; the oldest pending age is read
//! from the store's index at each scrape. `series` keeps the per-minute attempt counts the
//! dashboard charts.

pub mod series;

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::model::{Classification, Status};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub ingest_requests: IntCounterVec,
    pub attempts: IntCounterVec,
    pub deliveries_finished: IntCounterVec,
    pub attempt_duration: Histogram,
    pub ack_duration: Histogram,
    pub queue_depth: IntGaugeVec,
    pub oldest_pending_age: IntGauge,
    pub paused: IntGauge,
    pub store_bytes: IntGauge,
    pub store_used_bytes: IntGauge,
    pub scheduler_busy: Counter,
    pub commit_duration: Histogram,
    pub commit_batch_size: Histogram,
    pub replayed: IntCounter,
    pub egress_denied: IntCounterVec,
    pub host_circuit_open: IntGaugeVec,
    pub endpoints_disabled: IntCounter,
    /// Attempts per minute over the last day, for the dashboard (not exported to Prometheus).
    pub attempt_series: series::AttemptSeries,
}

/// Upper bounds of the latency histograms, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let ingest_requests = IntCounterVec::new(
            Opts::new(
                "hookrelay_ingest_requests_total",
                "Ingest requests by outcome: accepted (stored), duplicate (idempotency hit), rejected.",
            ),
            &["outcome"],
        )
        .unwrap();
        let attempts = IntCounterVec::new(
            Opts::new(
                "hookrelay_attempts_total",
                "Delivery attempts by classification of their outcome.",
            ),
            &["classification"],
        )
        .unwrap();
        let deliveries_finished = IntCounterVec::new(
            Opts::new(
                "hookrelay_deliveries_finished_total",
                "Deliveries that reached a final state.",
            ),
            &["status"],
        )
        .unwrap();
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_attempt_duration_seconds",
                "Duration of delivery attempts, from send to the end of the response snippet.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap();
        let ack_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_ack_duration_seconds",
                "Time from receiving an ingest request to its durable commit (the ack).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap();
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "hookrelay_queue_depth",
                "Deliveries waiting (pending) or being attempted (in_progress).",
            ),
            &["status"],
        )
        .unwrap();
        let oldest_pending_age = IntGauge::new(
            "hookrelay_oldest_pending_age_seconds",
            "Age of the oldest pending delivery, in seconds (0 when none).",
        )
        .unwrap();
        let paused = IntGauge::new(
            "hookrelay_paused",
            "1 while delivery is paused by an operator, else 0.",
        )
        .unwrap();
        let store_bytes = IntGauge::new(
            "hookrelay_store_bytes",
            "Size of the store's data file in bytes (read at scrape time).",
        )
        .unwrap();
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_store_commit_duration_seconds",
                "Duration of one durable store commit (write plus fsync).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap();
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_store_commit_batch_size",
                "Operations folded into one store commit (group commit).",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ]),
        )
        .unwrap();
        let replayed = IntCounter::new(
            "hookrelay_replayed_total",
            "Deliveries created by replay batches.",
        )
        .unwrap();

        let egress_denied = IntCounterVec::new(
            Opts::new(
                "hookrelay_egress_denied_total",
                "Destinations the egress guard denied, by stage (ingest, delivery) and action (blocked, or reported in report mode).",
            ),
            &["stage", "action"],
        )
        .unwrap();
        let host_circuit_open = IntGaugeVec::new(
            Opts::new(
                "hookrelay_host_circuit_open",
                "1 while a destination host's circuit breaker holds its deliveries.",
            ),
            &["host"],
        )
        .unwrap();
        let endpoints_disabled = IntCounter::new(
            "hookrelay_endpoints_disabled_total",
            "Named endpoints disabled because they answered 410 Gone.",
        )
        .unwrap();
        registry.register(Box::new(egress_denied.clone())).unwrap();
        registry
            .register(Box::new(host_circuit_open.clone()))
            .unwrap();
        registry
            .register(Box::new(endpoints_disabled.clone()))
            .unwrap();
        registry
            .register(Box::new(ingest_requests.clone()))
            .unwrap();
        registry.register(Box::new(attempts.clone())).unwrap();
        registry
            .register(Box::new(deliveries_finished.clone()))
            .unwrap();
        registry
            .register(Box::new(attempt_duration.clone()))
            .unwrap();
        registry.register(Box::new(ack_duration.clone())).unwrap();
        registry.register(Box::new(queue_depth.clone())).unwrap();
        registry
            .register(Box::new(oldest_pending_age.clone()))
            .unwrap();
        registry.register(Box::new(paused.clone())).unwrap();
        registry.register(Box::new(store_bytes.clone())).unwrap();
        let scheduler_busy = Counter::new(
            "hookrelay_scheduler_busy_seconds_total",
            "Time the delivery scheduler's loop spent working rather than waiting for an event (its CPU time, plus any time its thread waited for a core).",
        )
        .unwrap();
        registry.register(Box::new(scheduler_busy.clone())).unwrap();
        let store_used_bytes = IntGauge::new(
            "hookrelay_store_used_bytes",
            "Bytes in use in the store as store.max_bytes counts them (0 when no limit is set); the file may be larger, redb reuses freed pages without shrinking it.",
        )
        .unwrap();
        registry
            .register(Box::new(store_used_bytes.clone()))
            .unwrap();
        registry
            .register(Box::new(commit_duration.clone()))
            .unwrap();
        registry
            .register(Box::new(commit_batch_size.clone()))
            .unwrap();
        registry.register(Box::new(replayed.clone())).unwrap();

        // Every label value exists from the start, so rates work from the first scrape.
        for outcome in ["accepted", "duplicate", "rejected"] {
            ingest_requests.with_label_values(&[outcome]);
        }
        for c in Classification::ALL {
            attempts.with_label_values(&[c.as_str()]);
        }
        for s in [Status::Delivered, Status::Failed, Status::Cancelled] {
            deliveries_finished.with_label_values(&[s.as_str()]);
        }
        for s in [Status::Pending, Status::InProgress] {
            queue_depth.with_label_values(&[s.as_str()]);
        }
        for stage in ["ingest", "delivery"] {
            for action in ["blocked", "reported"] {
                egress_denied.with_label_values(&[stage, action]);
            }
        }

        Metrics {
            registry,
            ingest_requests,
            attempts,
            deliveries_finished,
            attempt_duration,
            ack_duration,
            queue_depth,
            oldest_pending_age,
            paused,
            store_bytes,
            store_used_bytes,
            scheduler_busy,
            commit_duration,
            commit_batch_size,
            replayed,
            egress_denied,
            host_circuit_open,
            endpoints_disabled,
            attempt_series: series::AttemptSeries::default(),
        }
    }

    pub fn ingest(&self, outcome: &str) {
        self.ingest_requests.with_label_values(&[outcome]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help() {
        let m = Metrics::new();
        m.ingest("accepted");
        let text = m.render();
        for name in [
            "hookrelay_ingest_requests_total",
            "hookrelay_attempts_total",
            "hookrelay_deliveries_finished_total",
            "hookrelay_ack_duration_seconds",
            "hookrelay_attempt_duration_seconds",
            "hookrelay_queue_depth",
            "hookrelay_oldest_pending_age_seconds",
            "hookrelay_paused",
            "hookrelay_store_bytes",
            "hookrelay_store_used_bytes",
            "hookrelay_scheduler_busy_seconds_total",
            "hookrelay_store_commit_duration_seconds",
            "hookrelay_store_commit_batch_size",
            "hookrelay_replayed_total",
            "hookrelay_egress_denied_total",
            "hookrelay_endpoints_disabled_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} missing");
        }
        assert!(text.contains("hookrelay_ingest_requests_total{outcome=\"accepted\"} 1"));
    }
}
