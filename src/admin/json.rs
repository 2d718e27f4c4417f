//! The admin API's JSON shapes, built from stored records. Serialization happens here, at the
//! edge; stored types never derive their API form.

use serde::Serialize;

use crate::clock;
use crate::model::{Attempt, DeliveryId, DeliveryRecord, EventId, Id, Status};
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
        target: r.target.clone(),
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
        batch_id: r.batch_id.map(|i| format!("bat_{}", ulid::Ulid(i.0))),
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
