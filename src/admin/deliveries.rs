//! `GET /v1/deliveries`, `GET /v1/deliveries/{id}`, `POST /v1/deliveries/{id}/cancel`.
//!
//! Listings read one snapshot through `store::query`. A cancel first withdraws the delivery from
//! the scheduler's queue (refused with 409 if an attempt is in flight), then stores the cancel
//! through the writer, so no attempt can start in between.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::json::{self, PageJson};
use super::params::{self, LIST_MAX_SCAN, ListParams};
use super::{AdminState, ApiError, Segment, ask_scheduler};
use crate::clock;
use crate::model::{DeliveryId, DeliveryRecord, Id, Status};
use crate::schedule::{Control, RetryNow};
use crate::store::writer::CancelResult;

pub async fn list(State(s): State<AdminState>, uri: Uri) -> Result<Response, ApiError> {
    let raw = axum::extract::Query::<ListParams>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad("bad_filter", e.body_text()))?
        .0;
    let q = params::list_query(raw, clock::now_ms())?;
    let in_flight = s.in_flight.clone();
    let keep = |id: Id| {
        q.in_flight
            .is_none_or(|want| in_flight.contains(id) == want)
    };
    let page = s
        .store
        .list_deliveries(&q.filter, q.cursor, q.limit, LIST_MAX_SCAN, keep)
        .map_err(ApiError::store)?;
    let body = PageJson {
        data: page
            .rows
            .iter()
            .map(|(id, r)| json::delivery(*id, r, s.in_flight.contains(*id), None))
            .collect(),
        next_cursor: page.next_cursor.map(params::cursor_text),
    };
    Ok(axum::Json(body).into_response())
}

/// The stored record of delivery `parsed` (`id` as the client wrote it), or a 404.
fn stored(s: &AdminState, parsed: Id, id: &str) -> Result<DeliveryRecord, ApiError> {
    s.store
        .delivery(parsed)
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found("delivery", id))
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    id.parse::<DeliveryId>()
        .map(|d| d.0)
        .map_err(|_| ApiError::not_found("delivery", id))
}

pub async fn show(State(s): State<AdminState>, Segment(id): Segment) -> Result<Response, ApiError> {
    let parsed = parse_id(&id)?;
    let (record, payload) = s
        .store
        .delivery_with_payload(parsed)
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found("delivery", &id))?;
    let attempts = s.store.attempts(parsed).map_err(ApiError::store)?;
    let body = json::DeliveryDetailJson {
        delivery: json::delivery(
            parsed,
            &record,
            s.in_flight.contains(parsed),
            Some(&attempts),
        ),
        request: super::preview::request_preview(&payload),
    };
    Ok(axum::Json(body).into_response())
}

/// Brings a pending delivery's next attempt forward to now (its receiver is back, and its
/// backoff would otherwise wait). Its host's holds (pause, open circuit, `Retry-After`, rate
/// limit) still apply: `POST /v1/hosts/{host}/retry` clears the circuit and the hold.
pub async fn retry(
    State(s): State<AdminState>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let parsed = parse_id(&id)?;
    let conflict = |code: &'static str, why: String| {
        ApiError::new(StatusCode::CONFLICT, code, format!("delivery `{id}` {why}"))
    };
    let record = stored(&s, parsed, &id)?;
    if record.status != Status::Pending {
        return Err(conflict(
            "not_pending",
            format!(
                "is {}; only a pending delivery can be retried now (a failed or cancelled one is replayed: POST /v1/batches)",
                record.status.as_str()
            ),
        ));
    }
    let outcome = ask_scheduler(&s, |reply| Control::RetryNow {
        host: record.host(),
        delivery: Some((record.next_attempt_at.unwrap_or(0), parsed)),
        reply,
    })
    .await?;
    match outcome {
        RetryNow::Done {
            brought_forward, ..
        } => {
            tracing::info!(id = %id, brought_forward = brought_forward == 1, "delivery retried now by an operator");
            show(State(s), Segment(id)).await
        }
        RetryNow::InFlight => Err(conflict(
            "in_progress",
            "has an attempt in flight".to_string(),
        )),
        RetryNow::Parked => Err(conflict(
            "held",
            format!(
                "is held for its disabled endpoint (enable it: POST /v1/endpoints/{}/enable)",
                record.endpoint.as_deref().unwrap_or("{name}")
            ),
        )),
        RetryNow::Withdrawn => Err(conflict("not_pending", "is being cancelled".to_string())),
        // Not in the queue: finished since it was read, or so new that the scheduler has
        // not been told yet (and then it is due at once anyway).
        RetryNow::NotQueued => match stored(&s, parsed, &id)?.status {
            Status::Pending => show(State(s), Segment(id)).await,
            status => Err(conflict("not_pending", format!("is {}", status.as_str()))),
        },
    }
}

pub async fn cancel(
    State(s): State<AdminState>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let parsed = parse_id(&id)?;
    let conflict = |state: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!("delivery `{id}` is {state}; only a pending delivery can be cancelled"),
        )
    };
    let record = stored(&s, parsed, &id)?;
    if record.status != Status::Pending {
        return Err(conflict(record.status.as_str()));
    }
    let (host, next_at) = (record.host(), record.next_attempt_at.unwrap_or(0));
    // First out of the queue (refused if an attempt is in flight), so no attempt can start
    // between the check and the commit; then the stored cancel.
    let withdrawn = ask_scheduler(&s, |reply| Control::Withdraw {
        host: host.clone(),
        next_at,
        id: parsed,
        reply,
    })
    .await?;
    if !withdrawn {
        return Err(conflict(Status::InProgress.as_str()));
    }
    let cancelled = s.writer.cancel(parsed).await;
    if cancelled.is_ok() {
        // Stored, or nothing left to cancel: the scheduler may forget the withdrawal.
        let _ = s.control_tx.send(Control::Cancelled(parsed));
    }
    match cancelled {
        Ok(CancelResult::Cancelled { .. }) => {
            s.metrics
                .deliveries_finished
                .with_label_values(&[Status::Cancelled.as_str()])
                .inc();
            show(State(s), Segment(id)).await
        }
        // Finished between the snapshot and the withdrawal: nothing left to attempt.
        Ok(CancelResult::NotPending(status)) => Err(conflict(status.as_str())),
        Ok(CancelResult::NotFound) => Err(ApiError::not_found("delivery", &id)),
        Err(e) => {
            let _ = s.control_tx.send(Control::Requeue {
                host,
                next_at,
                id: parsed,
            });
            Err(ApiError::store(e))
        }
    }
}
