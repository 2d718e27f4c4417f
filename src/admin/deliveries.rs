//! `GET /v1/deliveries`, `GET /v1/deliveries/{id}`, `POST /v1/deliveries/{id}/cancel`.
//!
//! Listings read one snapshot through `store::query`; a cancel goes through the writer and then
//! tells the scheduler to forget the queue entry. An attempt in flight is never cancelled (409).

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::json::{self, PageJson};
use super::params::{self, LIST_MAX_SCAN, ListParams};
use super::{AdminState, ApiError};
use crate::clock;
use crate::model::{DeliveryId, Id, Status};
use crate::schedule::Control;
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

fn parse_id(id: &str) -> Result<Id, ApiError> {
    id.parse::<DeliveryId>()
        .map(|d| d.0)
        .map_err(|_| ApiError::not_found("delivery", id))
}

pub async fn show(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
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

pub async fn cancel(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = parse_id(&id)?;
    let conflict = |state: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!("delivery `{id}` is {state}; only a pending delivery can be cancelled"),
        )
    };
    // An attempt that starts between this check and the commit finds the delivery cancelled
    // when it records its result, and the record stays cancelled.
    if s.in_flight.contains(parsed) {
        return Err(conflict(Status::InProgress.as_str()));
    }
    match s.writer.cancel(parsed).await.map_err(ApiError::store)? {
        CancelResult::NotFound => Err(ApiError::not_found("delivery", &id)),
        CancelResult::NotPending(status) => Err(conflict(status.as_str())),
        CancelResult::Cancelled { host, next_at } => {
            let _ = s.control_tx.send(Control::Remove {
                host,
                next_at,
                id: parsed,
            });
            s.metrics
                .deliveries_finished
                .with_label_values(&[Status::Cancelled.as_str()])
                .inc();
            show(State(s), Path(id)).await
        }
    }
}
