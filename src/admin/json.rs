//! The admin API's JSON shapes, built from stored records. Serialization happens here, at the
//! edge; stored types never derive their API form.

use serde::Serialize;

use crate::clock;
use crate::health::{Circuit, EndpointGate, HostHealth, HostHealthView};
use crate::model::{
    Attempt, BatchId, BatchRecord, DeliveryId, DeliveryRecord, EventId, Id, PauseRecord,
    ReplayFilter, Status,
};
use crate::schedule::HostLoad;
use crate::store::{Store, StoreError};

#[derive(Serialize)]
pub struct DeliveryJson {
    pub id: String,
    pub status: &'static str,
    pub method: String,
    pub target: String,
    pub endpoint: Option<String>,
    pub event_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
    pub attempt_count: u32,
    pub last_classification: Option<&'static str>,
    pub last_status_code: Option<u16>,
    pub body_bytes: u32,
    pub replay_of: Option<String>,
    pub batch_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptJson>>,
}

/// `GET /v1/deliveries/{id}`: the delivery, its attempts, and its stored request (headers
/// redacted, body previewed).
#[derive(Serialize)]
pub struct DeliveryDetailJson {
    #[serde(flatten)]
    pub delivery: DeliveryJson,
    #[serde(flatten)]
    pub request: super::preview::RequestPreview,
}

#[derive(Serialize)]
pub struct AttemptJson {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub classification: &'static str,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
}

pub fn delivery(
    id: Id,
    r: &DeliveryRecord,
    in_flight: bool,
    attempts: Option<&[Attempt]>,
) -> DeliveryJson {
    let status = if in_flight && r.status == Status::Pending {
        Status::InProgress
    } else {
        r.status
    };
    DeliveryJson {
        id: DeliveryId(id).to_string(),
        status: status.as_str(),
        method: r.method.clone(),
        target: crate::redact::target(&r.target).into_owned(),
        endpoint: r.endpoint.clone(),
        event_id: r.event_id.map(|e| EventId(e).to_string()),
        idempotency_key: r.idempotency_key.clone(),
        created_at: clock::rfc3339(r.created_at),
        updated_at: clock::rfc3339(r.updated_at),
        next_attempt_at: r.next_attempt_at.map(clock::rfc3339),
        finished_at: r.finished_at.map(clock::rfc3339),
        attempt_count: r.attempt_count,
        last_classification: r.last_classification.map(|c| c.as_str()),
        last_status_code: r.last_status_code,
        body_bytes: r.body_len,
        replay_of: r.replay_of.map(|i| DeliveryId(i).to_string()),
        batch_id: r.batch_id.map(|i| BatchId(i).to_string()),
        attempts: attempts.map(|a| a.iter().map(attempt).collect()),
    }
}

pub fn attempt(a: &Attempt) -> AttemptJson {
    AttemptJson {
        number: a.number,
        started_at: clock::rfc3339(a.started_at),
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        classification: a.classification.as_str(),
        error: a.error.clone(),
        response_snippet: a.response_snippet.clone(),
    }
}

/// Seconds since the oldest pending delivery was created, if any is pending.
pub fn oldest_pending_age_secs(store: &Store) -> Result<Option<u64>, StoreError> {
    Ok(store
        .oldest_pending()?
        .map(|id| clock::now_ms().saturating_sub(id.ms()) / 1000))
}

/// `GET /v1/health/hosts`: hosts held by their breaker or a Retry-After, and disabled endpoints.
pub fn health(hosts: &HostHealth, gate: &EndpointGate) -> serde_json::Value {
    let now = clock::now_ms();
    let hosts: Vec<serde_json::Value> = hosts
        .snapshot()
        .into_iter()
        // A Retry-After hold that has passed is not news (nor shown beside an open circuit).
        .map(|(host, mut v)| {
            v.not_before = v.not_before.filter(|t| *t > now);
            (host, v)
        })
        .filter(|(_, v)| v.circuit.is_open() || v.not_before.is_some())
        .map(|(host, v)| host_json(&host, Some(&v)))
        .collect();
    serde_json::json!({
        "hosts": hosts,
        "disabled_endpoints": gate.disabled(),
    })
}

/// A configured endpoint as `GET /v1/endpoints` shows it: its target redacted like any other,
/// its headers by name only, and of each signing key only its scheme and (for ed25519) the
/// public key its receiver verifies with.
/// `notify`: whether it is `notify.endpoint`, the one that gets hookrelay's own events.
pub fn endpoint(ep: &crate::config::Endpoint, disabled: bool, notify: bool) -> serde_json::Value {
    let signing: Vec<serde_json::Value> = ep
        .signing_keys
        .iter()
        .map(|k| match k.public_key() {
            Some(public) => serde_json::json!({"scheme": "v1a", "public_key": public}),
            None => serde_json::json!({"scheme": "v1", "public_key": null}),
        })
        .collect();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    serde_json::json!({
        "name": ep.name,
        "url": crate::redact::target(ep.url.as_str()),
        "events": ep.events,
        "disabled": disabled,
        "notify": notify,
        "timeout_ms": ms(ep.timeout),
        "retry": {
            "max_attempts": ep.retry.max_attempts,
            "initial_delay_ms": ms(ep.retry.initial_delay),
            "max_delay_ms": ms(ep.retry.max_delay),
            "multiplier": ep.retry.multiplier,
            "jitter": ep.retry.jitter,
        },
        "headers": ep.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "signing": signing,
        "tls": {
            "own_ca": !ep.tls.roots.is_empty(),
            "client_certificate": ep.tls.identity.is_some(),
        },
    })
}

/// One host's health as the admin API shows it (`circuit` is closed when unknown).
pub fn host_json(host: &str, view: Option<&HostHealthView>) -> serde_json::Value {
    let circuit = view.map_or(Circuit::default(), |v| v.circuit);
    let probe_at = match circuit {
        Circuit::Open { probe_at, .. } => Some(clock::rfc3339(probe_at)),
        _ => None,
    };
    let failures = circuit.failures();
    serde_json::json!({
        "host": host,
        "circuit": circuit.as_str(),
        "consecutive_failures": failures,
        "next_probe_at": probe_at,
        "retry_after_until": view.and_then(|v| v.not_before).map(clock::rfc3339),
    })
}

/// A page of a listing: `{"data": [...], "next_cursor": "..." | null}`.
#[derive(Serialize)]
pub struct PageJson<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
pub struct BatchJson {
    pub id: String,
    pub dry_run: bool,
    /// `completed` (deliveries created) or `dry_run` (nothing created).
    pub status: &'static str,
    pub reason: Option<String>,
    pub created_at: String,
    pub requested: u32,
    pub filter: Option<FilterOut>,
    pub created: Vec<CreatedJson>,
    pub skipped: Vec<SkippedJson>,
}

/// A batch's filter as it was given: fields not given are left out (the request's `Filter`
/// schema, which has no nulls).
#[derive(Serialize)]
pub struct FilterOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedJson {
    pub source: String,
    pub delivery: Option<String>,
}

#[derive(Serialize)]
pub struct SkippedJson {
    pub id: String,
    pub reason: &'static str,
}

pub fn batch(id: Id, b: &BatchRecord) -> BatchJson {
    BatchJson {
        id: BatchId(id).to_string(),
        dry_run: b.dry_run,
        status: if b.dry_run { "dry_run" } else { "completed" },
        reason: b.reason.clone(),
        created_at: clock::rfc3339(b.created_at),
        requested: b.requested,
        filter: b.filter.as_ref().map(filter),
        created: b
            .created
            .iter()
            .map(|(source, new)| CreatedJson {
                source: DeliveryId(*source).to_string(),
                delivery: new.map(|n| DeliveryId(n).to_string()),
            })
            .collect(),
        skipped: b
            .skipped
            .iter()
            .map(|(id, reason)| SkippedJson {
                id: id.clone(),
                reason: reason.as_str(),
            })
            .collect(),
    }
}

fn filter(f: &ReplayFilter) -> FilterOut {
    FilterOut {
        status: f.status.map(Status::as_str),
        target_prefix: f.target_prefix.clone(),
        endpoint: f.endpoint.clone(),
        classification: f.classification.map(|c| c.as_str()),
        since: f.since.map(clock::rfc3339),
        until: f.until.map(clock::rfc3339),
    }
}

/// `{"paused": bool, "since": ..., "reason": ...}`, globally or for one host.
#[derive(Serialize)]
pub struct PauseJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub paused: bool,
    pub since: Option<String>,
    pub reason: Option<String>,
}

pub fn pause(host: Option<String>, p: Option<&PauseRecord>) -> PauseJson {
    PauseJson {
        host,
        paused: p.is_some(),
        since: p.map(|p| clock::rfc3339(p.since)),
        reason: p.and_then(|p| p.reason.clone()),
    }
}

/// One destination host: its load, pause, circuit breaker and Retry-After hold.
#[derive(Serialize)]
pub struct HostJson {
    pub host: String,
    /// Pending deliveries, those held for a disabled endpoint included.
    pub pending: usize,
    /// Of `pending`, the deliveries held because their endpoint was disabled by a 410.
    pub held_for_disabled_endpoint: usize,
    pub in_progress: usize,
    pub next_attempt_at: Option<String>,
    pub paused: bool,
    pub paused_since: Option<String>,
    pub pause_reason: Option<String>,
    /// `closed`, `open` (held; one probe at `next_probe_at`) or `half_open` (probe in flight).
    pub circuit: &'static str,
    pub consecutive_failures: u32,
    pub next_probe_at: Option<String>,
    /// A `Retry-After` from the host holds all of its deliveries until then.
    pub retry_after_until: Option<String>,
    /// Its rate limit (`delivery.per_host_rate`, `delivery.host_rates`), as `"20/s"`.
    pub rate_limit: Option<String>,
}

pub fn host(load: &HostLoad, pause: Option<&PauseRecord>) -> HostJson {
    HostJson {
        host: load.host.clone(),
        pending: load.pending,
        held_for_disabled_endpoint: load.held_for_disabled_endpoint,
        in_progress: load.in_flight,
        next_attempt_at: load.next_at.map(clock::rfc3339),
        paused: load.paused,
        paused_since: pause.map(|p| clock::rfc3339(p.since)),
        pause_reason: pause.and_then(|p| p.reason.clone()),
        circuit: load.circuit.as_str(),
        consecutive_failures: load.circuit.failures(),
        next_probe_at: match load.circuit {
            Circuit::Open { probe_at, .. } => Some(clock::rfc3339(probe_at)),
            _ => None,
        },
        retry_after_until: load.retry_after_until.map(clock::rfc3339),
        rate_limit: load.rate_limit.map(|r| r.to_string()),
    }
}

#[derive(Serialize)]
pub struct StatsJson {
    /// Deliveries per state; `pending` excludes the ones in flight (`in_progress`).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub oldest_pending_age_seconds: Option<u64>,
    pub paused: bool,
    pub paused_hosts: usize,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn host_health_shows_only_holds_still_in_force() {
        let hosts = HostHealth::default();
        let now = clock::now_ms();
        let view = |circuit, not_before| HostHealthView {
            circuit,
            not_before,
        };
        let open = Circuit::Open {
            probe_at: now + 60_000,
            failures: 10,
        };
        hosts.set("open-old-hold:443", Some(view(open, Some(now - 1_000))));
        hosts.set(
            "held:443",
            Some(view(Circuit::default(), Some(now + 60_000))),
        );
        hosts.set(
            "passed:443",
            Some(view(Circuit::default(), Some(now - 1_000))),
        );
        let json = health(&hosts, &EndpointGate::new(BTreeSet::new()));
        let shown: Vec<(&str, bool)> = json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap(),
                    h["retry_after_until"].is_string(),
                )
            })
            .collect();
        assert_eq!(shown, [("held:443", true), ("open-old-hold:443", false)]);
    }
}
