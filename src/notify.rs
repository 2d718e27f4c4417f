//! hookrelay's own events (`notify.endpoint`): a delivery that ended `failed`, an endpoint a
//! 410 disabled. Each one is an ordinary delivery to the named endpoint, built here and stored
//! by the writer in the same transaction as the change it reports, so it is as durable as that
//! change and is retried, signed and listed like any other delivery. Deliveries to the notify
//! endpoint itself never produce one (no loops).

use serde_json::json;

use crate::admin::json;
use crate::clock;
use crate::config::Endpoint;
use crate::model::{Attempt, DeliveryRecord, Id, Payload, Status, url_host_key};
use crate::store::encode;
use crate::store::writer::NewDelivery;

/// The `type` of a delivery that ended failed.
pub const DELIVERY_FAILED: &str = "delivery.failed";
/// The `type` of an endpoint disabled by a 410.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Where hookrelay's own events go, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Option<Endpoint>);

impl Notifier {
    pub fn new(endpoint: Option<Endpoint>) -> Notifier {
        Notifier(endpoint)
    }

    /// The event for delivery `id` (stored as `record` before its last attempt) ending failed
    /// after `attempt`; None when nothing is notified, or when the delivery went to the notify
    /// endpoint itself.
    pub fn delivery_failed(
        &self,
        id: Id,
        record: &DeliveryRecord,
        attempt: &Attempt,
    ) -> Option<NewDelivery> {
        let ep = self.target_other_than(record.endpoint.as_deref())?;
        let finished = attempt.started_at.saturating_add(attempt.duration_ms);
        let mut done = record.clone();
        done.status = Status::Failed;
        done.attempt_count = done.attempt_count.max(attempt.number);
        done.last_classification = Some(attempt.classification);
        done.last_status_code = attempt.status_code;
        done.updated_at = finished;
        done.next_attempt_at = None;
        done.finished_at = Some(finished);
        let data = json!({
            "delivery": json::delivery(id, &done, false, None),
            "last_attempt": json::attempt(attempt),
        });
        Some(event(ep, DELIVERY_FAILED, data, finished))
    }

    /// The event for endpoint `name` disabled by a 410 at `now` (`attempt` is the one that got
    /// it); None when nothing is notified, or when `name` is the notify endpoint itself (its
    /// deliveries are held now).
    pub fn endpoint_disabled(
        &self,
        name: &str,
        delivery: Id,
        attempt: &Attempt,
        now: u64,
    ) -> Option<NewDelivery> {
        let ep = self.target_other_than(Some(name))?;
        let data = json!({
            "endpoint": name,
            "delivery_id": crate::model::DeliveryId(delivery).to_string(),
            "last_attempt": json::attempt(attempt),
        });
        Some(event(ep, ENDPOINT_DISABLED, data, now))
    }

    fn target_other_than(&self, endpoint: Option<&str>) -> Option<&Endpoint> {
        self.0
            .as_ref()
            .filter(|ep| endpoint != Some(ep.name.as_str()))
    }
}

/// One event as a pending delivery to `ep`: `{"type", "timestamp", "data"}` as JSON.
fn event(ep: &Endpoint, kind: &str, data: serde_json::Value, now: u64) -> NewDelivery {
    let body = json!({
        "type": kind,
        "timestamp": clock::rfc3339(now),
        "data": data,
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let record = DeliveryRecord::pending(
        "POST".into(),
        ep.url.to_string(),
        Some(ep.name.clone()),
        None,
        None,
        now,
        body.len(),
    );
    NewDelivery {
        record: encode(&record),
        payload: encode(&Payload {
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body,
        }),
        next_at: now,
        host: url_host_key(&ep.url),
    }
}
