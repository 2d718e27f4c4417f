//! One delivery attempt: load the stored request, send it, classify the outcome, decide what
//! follows, and record attempt and new state in one write.
//!
//! Runs on the delivery runtime, one task per attempt (the scheduler bounds how many). It never
//! writes the store directly and never decides *when* to attempt; that is the scheduler's job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::classify::{self, Decision, Outcome, SendError};
use crate::clock;
use crate::config::{Config, Endpoint};
use crate::metrics::Metrics;
use crate::model::{Attempt, Classification, DeliveryRecord, Id, Payload, Status};
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::sender::{OutgoingRequest, Sender};
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
}

impl Deliverer {
    pub fn new(
        config: &Config,
        store: Store,
        writer: WriterHandle,
        sender: Arc<dyn Sender>,
        metrics: Metrics,
    ) -> Deliverer {
        Deliverer {
            store,
            writer,
            sender,
            endpoints: Arc::new(config.endpoints.clone()),
            retry: config.retry.clone(),
            timeout: config.delivery.timeout,
            metrics,
        }
    }

    /// Makes one attempt. Returns when the delivery is next due, if it stays pending.
    pub async fn attempt(&self, id: Id) -> Option<u64> {
        let loaded = match self.store.delivery_with_payload(id) {
            Ok(Some(found)) => found,
            // Pruned, or removed by an operator: nothing to do.
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, id = id.0, "could not load a delivery; retrying later");
                return Some(clock::now_ms() + clock::duration_ms(STORE_FAILURE_RETRY));
            }
        };
        let (record, payload) = loaded;
        if record.status != Status::Pending {
            return None;
        }
        let number = record.attempt_count + 1;
        let endpoint = record
            .endpoint
            .as_deref()
            .and_then(|name| self.endpoints.get(name));
        let policy = endpoint.map_or(&self.retry, |e| &e.retry);

        let started_at = clock::now_ms();
        let t0 = Instant::now();
        let result = match self.build_request(&record, payload, endpoint) {
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
        let next = match decision {
            Decision::Delivered => NextState::Delivered,
            Decision::Fail => NextState::Failed,
            Decision::Retry(delay) => NextState::Retry {
                next_at: finished + clock::duration_ms(delay),
            },
        };
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

        if let Err(e) = self
            .writer
            .attempt(AttemptWrite { id, attempt, next })
            .await
        {
            tracing::error!(error = %e, id = id.0, "could not record an attempt; the delivery stays pending");
            return Some(clock::now_ms() + clock::duration_ms(STORE_FAILURE_RETRY));
        }
        match next {
            NextState::Retry { next_at } => Some(next_at),
            NextState::Delivered => {
                self.finished(Status::Delivered);
                None
            }
            NextState::Failed => {
                self.finished(Status::Failed);
                None
            }
        }
    }

    fn finished(&self, status: Status) {
        self.metrics
            .deliveries_finished
            .with_label_values(&[status.as_str()])
            .inc();
    }

    fn build_request(
        &self,
        record: &DeliveryRecord,
        payload: Payload,
        endpoint: Option<&Endpoint>,
    ) -> Result<OutgoingRequest, SendError> {
        let invalid = |m: String| SendError::InvalidRequest(m);
        let method = Method::from_bytes(record.method.as_bytes())
            .map_err(|_| invalid(format!("bad method {}", record.method)))?;
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
        }
        Ok(OutgoingRequest {
            method,
            url: record.target.clone(),
            headers,
            body: Bytes::from(payload.body),
            timeout: endpoint.map_or(self.timeout, |e| e.timeout),
        })
    }
}
