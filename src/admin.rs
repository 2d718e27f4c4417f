//! The admin listener: routes, and the JSON error shape every handler shares.
//!
//! Handlers read store snapshots and ask the writer for changes; they never open a write
//! transaction or touch the scheduler's queue directly. JSON body types live in `admin/json.rs`.

pub mod json;
pub mod preview;
pub mod series;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::model::DeliveryId;
use crate::schedule::InFlight;
use crate::store::Store;
use crate::store::writer::WriterHandle;

/// What every handler may use.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub writer: WriterHandle,
    pub in_flight: InFlight,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
}

/// An API error: status, code and message, rendered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id `{id}`"),
        )
    }

    pub fn store(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "admin request failed in the store");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/deliveries/{id}", get(delivery))
        .route("/v1/series", get(series::series))
        .merge(ui::router())
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "draining")
            .into_response();
    }
    if !s.writer.healthy() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the last store commit failed",
        )
        .into_response();
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    if let Ok(Some(age)) = json::oldest_pending_age_secs(&s.store) {
        s.metrics.oldest_pending_age.set(age as i64);
    } else {
        s.metrics.oldest_pending_age.set(0);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn delivery(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed: DeliveryId = id
        .parse()
        .map_err(|_| ApiError::not_found("delivery", &id))?;
    let (record, payload) = s
        .store
        .delivery_with_payload(parsed.0)
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found("delivery", &id))?;
    let attempts = s.store.attempts(parsed.0).map_err(ApiError::store)?;
    let body = json::DeliveryDetailJson {
        delivery: json::delivery(
            parsed.0,
            &record,
            s.in_flight.contains(parsed.0),
            Some(&attempts),
        ),
        request: preview::request_preview(&payload),
    };
    Ok(axum::Json(body).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
