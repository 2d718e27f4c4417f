//! One delivery attempt: load the stored request, send it, classify the outcome, decide what
//! follows, and record attempt and new state in one write.
//!
//! Runs on the delivery runtime, one task per attempt (the scheduler bounds how many). It never
//! writes the store directly and never decides *when* to attempt; that is the scheduler's job.
//! It reports what the attempt says about the host (breaker signal, `Retry-After` hold) and
//! holds deliveries of endpoints disabled by a `410 Gone`. Signatures are added here, at send
//! time, and never stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::classify::{self, Decision, HostSignal, Outcome, SendError};
use crate::clock;
use crate::config::{Config, Endpoint};
use crate::health::EndpointGate;
use crate::metrics::Metrics;
use crate::model::{
    Attempt, Classification, DeliveryId, DeliveryRecord, Id, Payload, Status, url_host_key,
};
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::sender::{OutgoingRequest, Sender};
use crate::sign;
use crate::store::Store;
use crate::store::writer::{AttemptWrite, NextState, WriterHandle};

/// If recording an attempt fails (disk full, say), the delivery is tried again after this long;
/// its stored state is untouched, so nothing is lost.
const STORE_FAILURE_RETRY: Duration = Duration::from_secs(5);

pub struct Deliverer {
    pub store: Store,
    pub writer: WriterHandle,
    pub sender: Arc<dyn Sender>,
    pub endpoints: Arc<BTreeMap<String, Endpoint>>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub metrics: Metrics,
    /// Endpoints disabled by a 410: their deliveries are held, not attempted.
    pub gate: EndpointGate,
}

/// What the scheduler learns from one attempt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptResult {
    /// When the delivery is next due, if it stays pending.
    pub next_at: Option<u64>,
    /// What the attempt says about the host, for its circuit breaker.
    pub signal: Option<HostSignal>,
    /// A `Retry-After` that holds every delivery to the host until then.
    pub hold_host_until: Option<u64>,
    /// The delivery's endpoint is disabled: hold it (pending) until the endpoint is enabled.
    pub parked: Option<String>,
}

impl AttemptResult {
    fn later(next_at: u64) -> AttemptResult {
        AttemptResult {
            next_at: Some(next_at),
            ..AttemptResult::default()
        }
    }
}

impl Deliverer {
    pub fn new(
        config: &Config,
        store: Store,
        writer: WriterHandle,
        sender: Arc<dyn Sender>,
        metrics: Metrics,
        gate: EndpointGate,
    ) -> Deliverer {
        Deliverer {
            store,
            writer,
            sender,
            endpoints: Arc::new(config.endpoints.clone()),
            retry: config.retry.clone(),
            timeout: config.delivery.timeout,
            metrics,
            gate,
        }
    }

    /// Makes one attempt, unless the delivery's endpoint is disabled.
    pub async fn attempt(&self, id: Id) -> AttemptResult {
        let loaded = match self.store.delivery_with_payload(id) {
            Ok(Some(found)) => found,
            // Pruned, or removed by an operator: nothing to do.
            Ok(None) => return AttemptResult::default(),
            Err(e) => {
                tracing::error!(error = %e, id = id.0, "could not load a delivery; retrying later");
                return AttemptResult::later(
                    clock::now_ms() + clock::duration_ms(STORE_FAILURE_RETRY),
                );
            }
        };
        let (record, payload) = loaded;
        if record.status != Status::Pending {
            return AttemptResult::default();
        }
        if let Some(name) = record
            .endpoint
            .as_deref()
            .filter(|n| self.gate.is_disabled(n))
        {
            return AttemptResult {
                next_at: record.next_attempt_at,
                parked: Some(name.to_string()),
                ..AttemptResult::default()
            };
        }
        let number = record.attempt_count + 1;
        let endpoint = record
            .endpoint
            .as_deref()
            .and_then(|name| self.endpoints.get(name));
        let policy = endpoint.map_or(&self.retry, |e| &e.retry);

        // Parsed once: the request, the egress check and the host key all use it.
        let target = url::Url::parse(&record.target).ok();
        let host = target.as_ref().map(url_host_key).unwrap_or_default();
        let started_at = clock::now_ms();
        let t0 = Instant::now();
        let result = match self.build_request(id, &record, target, payload, endpoint) {
            Ok(req) => self.sender.send(req).await,
            Err(e) => Err(e),
        };
        let duration = t0.elapsed();

        let (outcome, status_code, snippet, error) = match result {
            Ok(r) => {
                let retry_after = r
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, clock::now_system()));
                let error = match r.status {
                    300..=399 => Some(format!("HTTP {}: redirects are not followed", r.status)),
                    200..=299 => None,
                    s => Some(format!("HTTP {s}")),
                };
                (
                    Outcome::Response {
                        status: r.status,
                        retry_after,
                    },
                    Some(r.status),
                    Some(r.snippet),
                    error,
                )
            }
            Err(e) => {
                let text = e.to_string();
                (Outcome::Error(e), None, None, Some(text))
            }
        };
        let classification = classify::classify(&outcome);
        let decision = classify::decide(&outcome, number, policy, fastrand::f64());
        let finished = started_at + clock::duration_ms(duration);
        let gone = endpoint.filter(|_| classify::disables_endpoint(&outcome));
        let next = match decision {
            // A 410 from a named endpoint: the delivery is held, not failed.
            _ if gone.is_some() => NextState::Retry { next_at: finished },
            Decision::Delivered => NextState::Delivered,
            Decision::Fail => NextState::Failed,
            Decision::Retry(delay) => NextState::Retry {
                next_at: finished.saturating_add(clock::duration_ms(delay)),
            },
        };
        let hold_host_until = classify::host_hold(&outcome, policy.max_delay)
            .map(|d| finished.saturating_add(clock::duration_ms(d)));
        let attempt = Attempt {
            number,
            started_at,
            duration_ms: clock::duration_ms(duration),
            status_code,
            classification,
            error,
            response_snippet: snippet.filter(|s| !s.is_empty()),
        };
        tracing::debug!(
            id = id.0,
            attempt = number,
            class = classification.as_str(),
            ?next,
            "attempt finished"
        );
        self.metrics
            .attempts
            .with_label_values(&[classification.as_str()])
            .inc();
        self.metrics
            .attempt_duration
            .observe(duration.as_secs_f64());
        self.metrics.attempt_series.record(
            finished,
            classification == Classification::Success,
            duration,
        );

        let mut result = AttemptResult {
            signal: Some(classify::host_signal(classification)),
            hold_host_until,
            ..AttemptResult::default()
        };
        if let Some(ep) = gone {
            // Persisted before the attempt is, so a crash in between cannot lose the disabling.
            match self.writer.set_endpoint_disabled(&ep.name, true).await {
                Ok(()) => {
                    if self.gate.set(&ep.name, true) {
                        self.metrics.endpoints_disabled.inc();
                        tracing::warn!(
                            endpoint = %ep.name,
                            "endpoint answered 410 Gone: disabled; its deliveries are held until it is enabled"
                        );
                    }
                    result.parked = Some(ep.name.clone());
                }
                Err(e) => {
                    tracing::error!(error = %e, endpoint = %ep.name, "could not disable the endpoint")
                }
            }
        }
        if let Err(e) = self
            .writer
            .attempt(AttemptWrite {
                id,
                host,
                attempt,
                next,
            })
            .await
        {
            tracing::error!(error = %e, id = id.0, "could not record an attempt; the delivery stays pending");
            result.next_at = Some(clock::now_ms() + clock::duration_ms(STORE_FAILURE_RETRY));
            return result;
        }
        match next {
            NextState::Retry { next_at } => result.next_at = Some(next_at),
            NextState::Delivered => self.finished(Status::Delivered),
            NextState::Failed => self.finished(Status::Failed),
        }
        result
    }

    fn finished(&self, status: Status) {
        self.metrics
            .deliveries_finished
            .with_label_values(&[status.as_str()])
            .inc();
    }

    fn build_request(
        &self,
        id: Id,
        record: &DeliveryRecord,
        target: Option<url::Url>,
        payload: Payload,
        endpoint: Option<&Endpoint>,
    ) -> Result<OutgoingRequest, SendError> {
        let invalid = |m: String| SendError::InvalidRequest(m);
        let method = Method::from_bytes(record.method.as_bytes())
            .map_err(|_| invalid(format!("bad method {}", record.method)))?;
        // Ingest validated every stored target; a record that fails here was not written by it.
        let url = target.ok_or_else(|| invalid(format!("bad target URL {}", record.target)))?;
        let mut headers = Vec::with_capacity(payload.headers.len() + 4);
        for (name, value) in &payload.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("bad header name {name}")))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| invalid(format!("bad value for header {name}")))?;
            headers.push((name, value));
        }
        if let Some(ep) = endpoint {
            // Configured headers win over what the app sent.
            headers.retain(|(n, _)| !ep.headers.iter().any(|(en, _)| en == n));
            headers.extend(ep.headers.iter().cloned());
            if !ep.signing_keys.is_empty() {
                // The delivery id is the message id: stable across retries, so receivers can
                // deduplicate; the timestamp is the attempt's.
                let msg_id = DeliveryId(id).to_string();
                let signed = sign::headers(
                    &ep.signing_keys,
                    &msg_id,
                    clock::now_ms() / 1000,
                    &payload.body,
                );
                headers.retain(|(n, _)| !signed.iter().any(|(sn, _)| n == sn));
                for (name, value) in signed {
                    let value = HeaderValue::from_str(&value)
                        .map_err(|_| invalid(format!("bad value for header {name}")))?;
                    headers.push((HeaderName::from_static(name), value));
                }
            }
        }
        Ok(OutgoingRequest {
            method,
            url,
            headers,
            body: Bytes::from(payload.body),
            timeout: endpoint.map_or(self.timeout, |e| e.timeout),
        })
    }
}
