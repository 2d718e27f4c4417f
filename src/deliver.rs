//! One delivery attempt: load the stored request, send it, classify the outcome, decide what
//! follows, and record attempt and new state in one write.
//!
//! Runs on the delivery runtime, one task per attempt (the scheduler bounds how many). It never
//! writes the store directly and never decides *when* to attempt; that is the scheduler's job.
//! As soon as the host has answered (or failed to), it hands back the attempt's slot with what
//! the exchange says about the host (breaker signal, `Retry-After` hold): the limits bound
//! requests the hosts are serving, not attempts waiting for their record to be committed. A
//! `410 Gone` from a named endpoint is the exception: its slot is kept until the endpoint is
//! disabled, and the endpoint's deliveries are then held. Signatures are added here, at send
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
use crate::notify::Notifier;
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::sender::{OutgoingRequest, Sender};
use crate::sign;
use crate::store::writer::{AttemptWrite, NextState, WriterHandle};
use crate::store::{Store, StoreError};

/// If a delivery cannot be read, or its attempt's record could not be written after
/// `RECORD_TRIES` tries, the delivery is tried again after this long; its stored state is
/// untouched, so nothing is lost.
const STORE_FAILURE_RETRY: Duration = Duration::from_secs(5);
/// How many times a failed write of an attempt's record is tried again, waiting
/// `RECORD_RETRY_FIRST`, doubling up to `RECORD_RETRY_MAX` (about 1.5 min in all), before the
/// delivery is left pending to be sent again: the request already reached the host, so the
/// record is what is retried, not the request.
const RECORD_TRIES: u32 = 8;
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(500);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// hookrelay's own events (`notify.endpoint`).
    pub notifier: Notifier,
}

/// What the scheduler learns from one attempt once it is recorded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptResult {
    /// When the delivery is next due, if it stays pending.
    pub next_at: Option<u64>,
    /// The delivery's endpoint is disabled: hold it (pending) until the endpoint is enabled.
    pub parked: Option<String>,
}

/// What an attempt's exchange says about its destination host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostReport {
    /// For the host's circuit breaker.
    pub signal: HostSignal,
    /// A `Retry-After` that holds every delivery to the host until then.
    pub hold_host_until: Option<u64>,
    /// Whether a request went out (false: nothing was sent, so the host's rate limit gives the
    /// attempt's place back).
    pub sent: bool,
}

impl HostReport {
    /// From an attempt that never reached the host (delivery gone, endpoint disabled).
    pub const NEUTRAL: HostReport = HostReport {
        signal: HostSignal::Neutral,
        hold_host_until: None,
        sent: false,
    };
    /// From an attempt whose slot was dropped without a report (a panic, shutdown): its request
    /// may have gone out, so it keeps its place in the host's rate.
    pub const DROPPED: HostReport = HostReport {
        sent: true,
        ..HostReport::NEUTRAL
    };
}

/// Hands an attempt's request slots (its host's and the global one) back to the scheduler,
/// with its [`HostReport`], exactly once: explicitly when the host has answered, or, for an attempt that never reached the host
/// (or whose task ends early), with a neutral report when dropped. A half-open circuit thus
/// always hears back from its probe.
pub struct SlotRelease(Option<Box<dyn FnOnce(HostReport) + Send>>);

impl SlotRelease {
    pub fn new(release: impl FnOnce(HostReport) + Send + 'static) -> SlotRelease {
        SlotRelease(Some(Box::new(release)))
    }

    pub fn release(mut self, report: HostReport) {
        if let Some(release) = self.0.take() {
            release(report);
        }
    }
}

impl Drop for SlotRelease {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release(HostReport::DROPPED);
        }
    }
}

impl AttemptResult {
    fn later(next_at: u64) -> AttemptResult {
        AttemptResult {
            next_at: Some(next_at),
            ..AttemptResult::default()
        }
    }
}

/// The delivery could not be read: tried again after `STORE_FAILURE_RETRY`, or, if its stored
/// bytes do not decode (which reading again will not change), after `CORRUPT_RETRY`, so a
/// damaged record is reported once an hour rather than every few seconds.
fn load_failed(id: Id, e: &StoreError) -> AttemptResult {
    let wait = match e {
        StoreError::Corrupt { .. } => CORRUPT_RETRY,
        _ => STORE_FAILURE_RETRY,
    };
    tracing::error!(error = %e, id = %DeliveryId(id), retry_in_ms = clock::duration_ms(wait), "could not load a delivery; trying again later");
    AttemptResult::later(clock::now_ms() + clock::duration_ms(wait))
}

/// How long a delivery whose stored record does not decode waits before it is read again.
const CORRUPT_RETRY: Duration = Duration::from_secs(3600);

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
            notifier: Notifier::new(
                config
                    .notify
                    .as_ref()
                    .and_then(|name| config.endpoints.get(name))
                    .cloned(),
            ),
        }
    }

    /// Makes one attempt, unless the delivery's endpoint is disabled. `slot` is released as
    /// soon as the exchange with the host is over, before the attempt is recorded.
    pub async fn attempt(&self, id: Id, slot: SlotRelease) -> AttemptResult {
        // Nothing is sent on these paths: the host's rate gets the attempt's place back.
        let unsent = |slot: SlotRelease| slot.release(HostReport::NEUTRAL);
        let loaded = match self.store.delivery_with_payload(id) {
            Ok(Some(found)) => found,
            // Pruned, or removed by an operator: nothing to do.
            Ok(None) => {
                unsent(slot);
                return AttemptResult::default();
            }
            Err(e) => {
                unsent(slot);
                return load_failed(id, &e);
            }
        };
        let (record, payload) = loaded;
        if record.status != Status::Pending {
            unsent(slot);
            return AttemptResult::default();
        }
        if let Some(held) = self.held(&record) {
            unsent(slot);
            return held;
        }
        let number = record.attempt_count + 1;
        let endpoint = self.endpoint_of(&record);
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
                    304 => Some("HTTP 304 Not Modified: not a success for a webhook".to_string()),
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
        // Read now, not added to the start: a retry waits its backoff on the clock the
        // scheduler uses, even if that stepped back while the request was out.
        let finished = clock::now_ms();
        let gone = endpoint.filter(|_| classify::disables_endpoint(&outcome));
        let next = match decision {
            // A 410 from a named endpoint: the delivery is held, not failed, while its retry
            // budget lasts (each enabling sends the held deliveries again).
            _ if gone.is_some() && !policy.exhausted(number) => {
                NextState::Retry { next_at: finished }
            }
            Decision::Delivered => NextState::Delivered,
            Decision::Fail => NextState::Failed,
            Decision::Retry(delay) => NextState::Retry {
                next_at: finished.saturating_add(clock::duration_ms(delay)),
            },
        };
        // From now, not from the attempt's start: the scheduler applies it at once, on the
        // same clock, even if that stepped while the request was out.
        let hold_host_until = classify::host_hold(&outcome, policy.max_delay)
            .map(|d| clock::now_ms().saturating_add(clock::duration_ms(d)));
        let report = HostReport {
            signal: classify::host_signal(classification),
            hold_host_until,
            // Refused before sending: by the egress guard, or a request that cannot be built.
            sent: !matches!(
                classification,
                Classification::EgressBlocked | Classification::InvalidRequest
            ),
        };
        // A 410 keeps the slot until the endpoint is disabled, so the freed slot cannot start
        // another request to the endpoint that has just said it is gone.
        let slot = if gone.is_some() {
            Some(slot)
        } else {
            slot.release(report);
            None
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
        self.metrics
            .attempt_duration
            .observe(duration.as_secs_f64());

        let mut parked = None;
        if let Some(ep) = gone {
            // Persisted before the attempt is, so a crash in between cannot lose the disabling.
            let notify = self
                .notifier
                .endpoint_disabled(&ep.name, id, &attempt, finished);
            let store = self.writer.set_endpoint_disabled(&ep.name, true, notify);
            match self.gate.store_and_set(&ep.name, true, store).await {
                Ok(changed) => {
                    if changed {
                        self.metrics.endpoints_disabled.inc();
                        tracing::warn!(
                            endpoint = %ep.name,
                            "endpoint answered 410 Gone: disabled; its deliveries are held until it is enabled"
                        );
                    }
                    parked = Some(ep.name.clone());
                }
                Err(e) => {
                    tracing::error!(error = %e, endpoint = %ep.name, "could not disable the endpoint")
                }
            }
        }
        if let Some(slot) = slot {
            slot.release(report);
        }
        // The endpoint could not be disabled (the store refused): nothing holds the delivery,
        // so it waits its backoff like any failed attempt instead of going again at once (and
        // spending its whole budget on 410s in a moment).
        let next = match next {
            NextState::Retry { .. } if gone.is_some() && parked.is_none() => NextState::Retry {
                next_at: finished
                    .saturating_add(clock::duration_ms(policy.backoff(number, fastrand::f64()))),
            },
            next => next,
        };
        let mut result = self
            .record(id, &record, host, attempt, duration, next)
            .await;
        result.parked = parked;
        result
    }

    /// Records an attempt whose task ended without a result (it panicked: a bug in hookrelay)
    /// as an `INTERNAL_ERROR` attempt, so the delivery's retry budget applies to it as to any
    /// other failure: tried again after its backoff, `failed` once the budget is spent. Nothing
    /// is sent. A delivery that is no longer pending (an operator cancelled it, or the attempt
    /// finished it before failing) is left as it is, and one whose endpoint is disabled stays
    /// held, as `attempt` would leave it. (An attempt that failed after recording a retry would
    /// be counted twice; nothing in `attempt` can fail after its record is written.)
    /// `panic` is the panic's message, kept in the attempt's `error`.
    pub async fn record_abandoned(&self, id: Id, panic: Option<&str>) -> AttemptResult {
        let record = match self.store.delivery(id) {
            Ok(Some(record)) if record.status == Status::Pending => record,
            Ok(_) => return AttemptResult::default(),
            Err(e) => return load_failed(id, &e),
        };
        if let Some(held) = self.held(&record) {
            return held;
        }
        let number = record.attempt_count + 1;
        let policy = self.endpoint_of(&record).map_or(&self.retry, |e| &e.retry);
        let error = SendError::Internal(match panic {
            Some(message) => {
                format!("the attempt panicked (a bug in hookrelay: please report it): {message}")
            }
            None => {
                "the attempt ended without a result (a bug in hookrelay: please report it)".into()
            }
        });
        let outcome = Outcome::Error(error.clone());
        let now = clock::now_ms();
        let next = match classify::decide(&outcome, number, policy, fastrand::f64()) {
            Decision::Retry(delay) => NextState::Retry {
                next_at: now.saturating_add(clock::duration_ms(delay)),
            },
            // (`Delivered` cannot come of an error.)
            Decision::Fail | Decision::Delivered => NextState::Failed,
        };
        let host = url::Url::parse(&record.target)
            .map(|u| url_host_key(&u))
            .unwrap_or_default();
        let attempt = Attempt {
            number,
            started_at: now,
            duration_ms: 0,
            status_code: None,
            classification: classify::classify(&outcome),
            error: Some(error.to_string()),
            response_snippet: None,
        };
        self.record(id, &record, host, attempt, Duration::ZERO, next)
            .await
    }

    /// Counts `attempt` (which took `elapsed`) and stores it with the delivery's next state
    /// (and, if that is `failed`, the notify endpoint's event); what the scheduler needs to
    /// know once it is stored. `record` is the delivery as it was before the attempt.
    async fn record(
        &self,
        id: Id,
        record: &DeliveryRecord,
        host: String,
        attempt: Attempt,
        elapsed: Duration,
        next: NextState,
    ) -> AttemptResult {
        let classification = attempt.classification;
        tracing::debug!(
            id = %DeliveryId(id),
            attempt = attempt.number,
            class = classification.as_str(),
            next = %next,
            "attempt finished"
        );
        self.metrics
            .attempts
            .with_label_values(&[classification.as_str()])
            .inc();
        self.metrics.attempt_series.record(
            attempt.started_at.saturating_add(attempt.duration_ms),
            classification == Classification::Success,
            elapsed,
        );
        let notify = match next {
            NextState::Failed => self.notifier.delivery_failed(id, record, &attempt),
            _ => None,
        };
        let write = AttemptWrite {
            id,
            host,
            attempt,
            next,
            notify,
        };
        let (mut tries, mut wait) = (0, RECORD_RETRY_FIRST);
        while let Err(e) = self.writer.attempt(write.clone()).await {
            tries += 1;
            if tries > RECORD_TRIES || matches!(e, StoreError::WriterGone) {
                tracing::error!(error = %e, id = %DeliveryId(id), "could not record an attempt; the delivery stays pending and will be sent again");
                return AttemptResult::later(
                    clock::now_ms() + clock::duration_ms(STORE_FAILURE_RETRY),
                );
            }
            tracing::error!(
                error = %e,
                id = %DeliveryId(id),
                retry_in_ms = clock::duration_ms(wait),
                "could not record an attempt; writing its record again (the request is not sent again)"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECORD_RETRY_MAX);
        }
        match next {
            NextState::Retry { next_at } => return AttemptResult::later(next_at),
            NextState::Delivered => self.finished(Status::Delivered),
            NextState::Failed => self.finished(Status::Failed),
        }
        AttemptResult::default()
    }

    /// The configured endpoint a delivery was sent to, if it named one that still exists.
    fn endpoint_of(&self, record: &DeliveryRecord) -> Option<&Endpoint> {
        record
            .endpoint
            .as_deref()
            .and_then(|name| self.endpoints.get(name))
    }

    /// Held instead of attempted: the delivery's endpoint is disabled (by a 410) until an
    /// operator enables it.
    fn held(&self, record: &DeliveryRecord) -> Option<AttemptResult> {
        let name = record
            .endpoint
            .as_deref()
            .filter(|n| self.gate.is_disabled(n))?;
        Some(AttemptResult {
            next_at: record.next_attempt_at,
            parked: Some(name.to_string()),
        })
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
        if let (Some(name), None) = (record.endpoint.as_deref(), endpoint) {
            // Its configured headers and signing secret are gone with it: sending anyway would
            // deliver without them (unauthenticated, unsigned).
            return Err(invalid(format!(
                "endpoint `{name}` is no longer configured, so its headers and signing secret are unknown; nothing was sent (configure it again and replay this delivery)"
            )));
        }
        if let Some(ep) = endpoint
            && !crate::ingest::request::built_from(&ep.url, &record.target)
        {
            // The endpoint was pointed elsewhere since: its current headers and signing secret
            // belong to the new URL and must not go to the old one.
            return Err(invalid(format!(
                "endpoint `{}` now points at {}, not at {}, which this delivery was stored for; nothing was sent (a replay of it fails the same way: send it to the endpoint again instead)",
                ep.name,
                crate::redact::target(ep.url.as_str()),
                crate::redact::target(&record.target),
            )));
        }
        let method = Method::from_bytes(record.method.as_bytes())
            .map_err(|_| invalid(format!("bad method {}", record.method)))?;
        // Ingest validated every stored target; a record that fails here was not written by it.
        let url = target.ok_or_else(|| {
            invalid(format!(
                "bad target URL {}",
                crate::redact::target(&record.target)
            ))
        })?;
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
                // The delivery id (a replay's original's) is the message id: stable across
                // retries and replays, so receivers can deduplicate; the timestamp is the
                // attempt's.
                let msg_id = DeliveryId(record.replay_of.unwrap_or(id)).to_string();
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
            tls_endpoint: endpoint.filter(|e| e.tls.is_set()).map(|e| e.name.clone()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::Config;
    use crate::sender::SentResponse;
    use crate::store::encode;
    use crate::store::writer::{IngestResult, IngestWrite, NewDelivery, spawn};

    /// Answers every request with `status`, and `Retry-After: 7`.
    struct Answers(u16);

    #[async_trait]
    impl Sender for Answers {
        async fn send(&self, _: OutgoingRequest) -> Result<crate::sender::SentResponse, SendError> {
            Ok(SentResponse {
                status: self.0,
                retry_after: Some("7".into()),
                snippet: String::new(),
            })
        }
    }

    /// A deliverer whose sender answers `status`, with an endpoint `orders`.
    fn deliverer(dir: &std::path::Path, store: &Store, status: u16) -> Deliverer {
        let file = dir.join("hookrelay.toml");
        std::fs::write(
            &file,
            "[egress]\nallow_cidrs = [\"127.0.0.0/8\"]\n[endpoints.orders]\nurl = \"http://127.0.0.1:9/\"\nevents = [\"*\"]\n",
        )
        .unwrap();
        let config = Config::load_with_env(Some(&file), Vec::new()).unwrap();
        let (tx, _) = mpsc::unbounded_channel();
        // The writer thread ends when the deliverer (its last handle) is dropped.
        let (writer, _) = spawn(store, Metrics::new(), tx).unwrap();
        let gate = EndpointGate::new(BTreeSet::new());
        Deliverer::new(
            &config,
            store.clone(),
            writer,
            Arc::new(Answers(status)),
            Metrics::new(),
            gate,
        )
    }

    async fn stored(d: &Deliverer, endpoint: Option<&str>) -> Id {
        ingest_one(&d.writer, endpoint).await
    }

    /// Stores one pending delivery of `{}` to `http://127.0.0.1:9/x` (for `endpoint`, if any),
    /// due now.
    pub(crate) async fn ingest_one(writer: &WriterHandle, endpoint: Option<&str>) -> Id {
        ingest_to(writer, endpoint, "http://127.0.0.1:9/x").await
    }

    /// As [`ingest_one`], to `target`.
    async fn ingest_to(writer: &WriterHandle, endpoint: Option<&str>, target: &str) -> Id {
        let write = IngestWrite {
            idem: None,
            event_id: None,
            deliveries: vec![NewDelivery {
                record: encode(&DeliveryRecord::pending(
                    "POST".into(),
                    target.into(),
                    endpoint.map(String::from),
                    None,
                    None,
                    0,
                    0,
                )),
                payload: encode(&Payload {
                    headers: Vec::new(),
                    body: b"{}".to_vec(),
                }),
                next_at: 0,
                host: "127.0.0.1:9".into(),
            }],
            received: Instant::now(),
        };
        match writer.ingest(write).await {
            Ok(IngestResult::Created { ids, .. }) => ids[0],
            other => panic!("{other:?}"),
        }
    }

    /// Each release, with how many attempts the store held for the delivery at that moment.
    type Releases = Arc<Mutex<Vec<(HostReport, usize)>>>;

    fn watched(store: &Store, id: Id) -> (SlotRelease, Releases) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (store, log) = (store.clone(), seen.clone());
        let slot = SlotRelease::new(move |report| {
            let recorded = store.attempts(id).unwrap().len();
            log.lock().unwrap().push((report, recorded));
        });
        (slot, seen)
    }

    #[tokio::test]
    async fn the_slot_is_released_with_the_hosts_answer_before_the_attempt_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 503);
        let id = stored(&d, None).await;
        let (slot, seen) = watched(&store, id);
        let before = clock::now_ms();
        let result = d.attempt(id, slot).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "released exactly once");
        let (report, recorded) = seen[0];
        assert_eq!(recorded, 0, "released before the attempt was recorded");
        assert_eq!(report.signal, HostSignal::Failed);
        let hold = report.hold_host_until.expect("Retry-After holds the host");
        assert!(hold >= before + 7_000, "{hold} vs {before}");
        // And the attempt is recorded by the time the result is back.
        assert_eq!(store.attempts(id).unwrap().len(), 1);
        assert!(result.next_at.is_some(), "a 503 is retried");
    }

    #[tokio::test]
    async fn an_abandoned_attempt_is_recorded_only_while_its_delivery_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 200);
        let id = stored(&d, None).await;
        let retry = d.record_abandoned(id, Some("index out of bounds")).await;
        assert!(retry.next_at.is_some(), "retried within its budget");
        let attempts = store.attempts(id).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].classification, Classification::InternalError);
        let error = attempts[0].error.as_deref().unwrap();
        assert!(
            error.contains("panicked") && error.ends_with(": index out of bounds"),
            "{error}"
        );
        assert_eq!(store.delivery(id).unwrap().unwrap().status, Status::Pending);
        // Delivered by the next attempt; an abandonment reported after that records nothing.
        let (slot, _) = watched(&store, id);
        assert_eq!(d.attempt(id, slot).await, AttemptResult::default());
        assert_eq!(d.record_abandoned(id, None).await, AttemptResult::default());
        let attempts = store.attempts(id).unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1].classification, Classification::Success);
        assert_eq!(
            store.delivery(id).unwrap().unwrap().status,
            Status::Delivered
        );
    }

    #[tokio::test]
    async fn an_abandoned_attempt_of_a_disabled_endpoint_leaves_its_delivery_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 200);
        let id = stored(&d, Some("orders")).await;
        d.gate.set("orders", true);
        let result = d.record_abandoned(id, None).await;
        assert_eq!(result.parked.as_deref(), Some("orders"));
        assert!(store.attempts(id).unwrap().is_empty(), "no attempt spent");
        assert_eq!(store.delivery(id).unwrap().unwrap().status, Status::Pending);
    }

    #[tokio::test]
    async fn an_attempt_that_never_reaches_the_host_releases_a_neutral_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 503);
        let missing = Id(42);
        let (slot, seen) = watched(&store, missing);
        assert_eq!(d.attempt(missing, slot).await, AttemptResult::default());
        assert_eq!(*seen.lock().unwrap(), vec![(HostReport::NEUTRAL, 0)]);
    }

    #[tokio::test]
    async fn a_410_keeps_the_slot_until_the_endpoint_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 410);
        let id = stored(&d, Some("orders")).await;
        let disabled_at_release = Arc::new(Mutex::new(None));
        let (gate, seen) = (d.gate.clone(), disabled_at_release.clone());
        let slot = SlotRelease::new(move |_| {
            *seen.lock().unwrap() = Some(gate.is_disabled("orders"));
        });
        let result = d.attempt(id, slot).await;
        assert_eq!(result.parked.as_deref(), Some("orders"));
        assert_eq!(
            *disabled_at_release.lock().unwrap(),
            Some(true),
            "the slot was released before the endpoint was disabled"
        );
    }

    #[tokio::test]
    async fn a_delivery_whose_endpoint_is_no_longer_configured_fails_unsent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 200);
        let id = stored(&d, Some("removed")).await;
        let (slot, _) = watched(&store, id);
        assert_eq!(d.attempt(id, slot).await, AttemptResult::default());
        assert_eq!(store.delivery(id).unwrap().unwrap().status, Status::Failed);
        let attempts = store.attempts(id).unwrap();
        assert_eq!(attempts[0].classification, Classification::InvalidRequest);
        let error = attempts[0].error.as_deref().unwrap();
        assert!(
            error.contains("`removed` is no longer configured"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_delivery_stored_for_an_endpoints_old_url_is_not_sent_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 200);
        // Stored while `orders` pointed at port 10; it points at port 9 now.
        let id = ingest_to(&d.writer, Some("orders"), "http://127.0.0.1:10/x").await;
        let (slot, _) = watched(&store, id);
        d.attempt(id, slot).await;
        let attempts = store.attempts(id).unwrap();
        assert_eq!(attempts[0].classification, Classification::InvalidRequest);
        let error = attempts[0].error.as_deref().unwrap();
        assert!(
            error.contains("now points at http://127.0.0.1:9/"),
            "{error}"
        );
        assert_eq!(store.delivery(id).unwrap().unwrap().status, Status::Failed);
    }

    /// Counts the requests it is asked to send, answering 200.
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Sender for Counting {
        async fn send(&self, _: OutgoingRequest) -> Result<SentResponse, SendError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(SentResponse {
                status: 200,
                retry_after: None,
                snippet: String::new(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_that_fails_to_be_written_is_written_again_without_sending_again() {
        use crate::store::writer::WriteOp;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, _) = mpsc::unbounded_channel();
        let (real, _) = spawn(&store, Metrics::new(), tx).unwrap();
        let id = ingest_one(&real, None).await;
        // The store refuses the attempt's record twice, then takes it.
        let (writer, mut ops) = WriterHandle::for_test();
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = refusals.clone();
        tokio::spawn(async move {
            while let Some(op) = ops.recv().await {
                match op {
                    WriteOp::Attempt(_, reply)
                        if seen.load(std::sync::atomic::Ordering::SeqCst) < 2 =>
                    {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = reply.send(Err(StoreError::CommitFailed("disk error".into())));
                    }
                    op => real.forward(op).await.unwrap(),
                }
            }
        });
        let config = Config::load_with_env(None, Vec::new()).unwrap();
        let sender = Arc::new(Counting(Default::default()));
        let d = Deliverer::new(
            &config,
            store.clone(),
            writer,
            sender.clone(),
            Metrics::new(),
            EndpointGate::new(BTreeSet::new()),
        );
        let (slot, _) = watched(&store, id);
        assert_eq!(d.attempt(id, slot).await, AttemptResult::default());
        assert_eq!(refusals.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(
            sender.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "sent once"
        );
        assert_eq!(
            store.delivery(id).unwrap().unwrap().status,
            Status::Delivered
        );
        assert_eq!(store.attempts(id).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_record_that_does_not_decode_is_read_again_an_hour_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 200);
        let id = stored(&d, None).await;
        let db = store.db();
        let txn = db.begin_write().unwrap();
        txn.open_table(crate::store::DELIVERIES)
            .unwrap()
            .insert(id.0, [0xffu8; 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let (slot, _) = watched(&store, id);
        let before = clock::now_ms();
        let next = d
            .attempt(id, slot)
            .await
            .next_at
            .expect("tried again later");
        assert!(next >= before + 3_600_000, "{next} vs {before}");
    }

    /// A 410 whose endpoint cannot be disabled (the store refuses) leaves the delivery pending
    /// with its backoff, not due again at once: a refusal that repeats must not spend the whole
    /// retry budget on 410s in a moment.
    #[tokio::test]
    async fn a_410_whose_disabling_is_refused_waits_its_backoff() {
        use crate::store::writer::WriteOp;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let base = deliverer(dir.path(), &store, 410);
        let id = stored(&base, Some("orders")).await;
        let (writer, mut ops) = WriterHandle::for_test();
        let real = base.writer.clone();
        tokio::spawn(async move {
            while let Some(op) = ops.recv().await {
                match op {
                    WriteOp::EndpointDisabled { reply, .. } => {
                        let _ = reply.send(Err(StoreError::CommitFailed("disk error".into())));
                    }
                    op => real.forward(op).await.unwrap(),
                }
            }
        });
        let d = Deliverer { writer, ..base };
        let (slot, _) = watched(&store, id);
        let before = clock::now_ms();
        let result = d.attempt(id, slot).await;
        assert_eq!(
            result.parked, None,
            "not held: the endpoint is not disabled"
        );
        assert!(!d.gate.is_disabled("orders"));
        let first_backoff = clock::duration_ms(d.retry.backoff(1, 0.0));
        let next = result.next_at.expect("tried again later");
        assert!(
            next >= before + first_backoff,
            "due {} ms after the attempt, before its backoff of {first_backoff} ms",
            next.saturating_sub(before)
        );
        let stored = store.delivery(id).unwrap().unwrap();
        assert_eq!(stored.status, Status::Pending);
        assert_eq!(stored.next_attempt_at, Some(next));
    }

    #[tokio::test]
    async fn a_410_holds_a_delivery_only_while_its_retry_budget_lasts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = deliverer(dir.path(), &store, 410);
        let id = stored(&d, Some("orders")).await;
        let budget = d.retry.max_attempts;
        for n in 1..=budget {
            // An operator enables the endpoint again; the receiver still answers 410.
            d.gate.set("orders", false);
            let (slot, _) = watched(&store, id);
            let result = d.attempt(id, slot).await;
            let status = store.delivery(id).unwrap().unwrap().status;
            if n < budget {
                assert_eq!(result.parked.as_deref(), Some("orders"), "attempt {n}");
                assert_eq!(status, Status::Pending, "attempt {n}");
            } else {
                assert_eq!(
                    status,
                    Status::Failed,
                    "the last attempt of the budget fails it"
                );
            }
        }
        assert_eq!(store.attempts(id).unwrap().len() as u32, budget);
        assert!(
            d.gate.is_disabled("orders"),
            "the endpoint is still disabled"
        );
    }
}
