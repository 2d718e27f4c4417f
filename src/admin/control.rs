//! Steering and overview: the global pause (kill switch), per-host pauses, `GET /v1/hosts`
//! and `GET /v1/stats`.
//!
//! A pause is stored through the writer first (so it survives a restart) and only then sent to
//! the scheduler; it stops new attempts, never ones in flight. Nothing here counts rows: state
//! counts come from the counters the writer keeps, host loads from the scheduler's queue.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::json::{self, StatsJson};
use super::params;
use super::{AdminState, ApiError, JsonBody, Segment, ask_scheduler};
use crate::clock;
use crate::model::{PauseRecord, Status};
use crate::schedule::{Control, RetryNow};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub reason: Option<String>,
}

pub async fn pause_state(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let p = s.store.pause().map_err(ApiError::store)?;
    Ok(axum::Json(json::pause(None, p.as_ref())).into_response())
}

/// Waits until the scheduler has taken every `Control` sent before, so a pause is answered
/// only once no new attempt can start (its messages are taken in order). A scheduler that has
/// stopped starts nothing either.
async fn applied(s: &AdminState) {
    let _ = ask_scheduler(s, Control::Applied).await;
}

/// The pause a pause request with `reason` leaves, and whether it must be stored. Pausing
/// again keeps the first pause's time; a new reason replaces the old one, and no reason (or an
/// empty one) keeps it.
fn paused_again(existing: Option<PauseRecord>, reason: Option<String>) -> (PauseRecord, bool) {
    match existing {
        None => (
            PauseRecord {
                since: clock::now_ms(),
                reason,
            },
            true,
        ),
        Some(p)
            if reason.as_deref().is_some_and(|r| !r.trim().is_empty()) && reason != p.reason =>
        {
            (
                PauseRecord {
                    since: p.since,
                    reason,
                },
                true,
            )
        }
        Some(p) => (p, false),
    }
}

/// Pausing again keeps the first pause's time; a new reason replaces the old one.
pub async fn pause(
    State(s): State<AdminState>,
    JsonBody(req): JsonBody<PauseRequest>,
) -> Result<Response, ApiError> {
    let reason = params::reason(req.reason)?;
    let _in_order = s.pauses.lock().await;
    let existing = s.store.pause().map_err(ApiError::store)?;
    let (record, store) = paused_again(existing, reason);
    if store {
        s.writer
            .set_pause(None, Some(record.clone()))
            .await
            .map_err(ApiError::store)?;
        tracing::warn!(reason = ?record.reason, "delivery paused by an operator");
    }
    let _ = s.control_tx.send(Control::Pause(true));
    applied(&s).await;
    Ok(axum::Json(json::pause(None, Some(&record))).into_response())
}

pub async fn resume(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let _in_order = s.pauses.lock().await;
    s.writer
        .set_pause(None, None)
        .await
        .map_err(ApiError::store)?;
    let _ = s.control_tx.send(Control::Pause(false));
    tracing::info!("delivery resumed by an operator");
    Ok(axum::Json(json::pause(None, None)).into_response())
}

pub async fn host_pause(
    State(s): State<AdminState>,
    Segment(host): Segment,
    JsonBody(req): JsonBody<PauseRequest>,
) -> Result<Response, ApiError> {
    let host = params::host(&host)?;
    let reason = params::reason(req.reason)?;
    let _in_order = s.pauses.lock().await;
    let existing = s
        .store
        .host_pauses()
        .map_err(ApiError::store)?
        .into_iter()
        .find(|(h, _)| *h == host)
        .map(|(_, p)| p);
    let (record, store) = paused_again(existing, reason);
    if store {
        s.writer
            .set_pause(Some(host.clone()), Some(record.clone()))
            .await
            .map_err(ApiError::store)?;
        tracing::warn!(%host, reason = ?record.reason, "host paused by an operator");
    }
    let _ = s.control_tx.send(Control::HostPause {
        host: host.clone(),
        paused: true,
    });
    applied(&s).await;
    Ok(axum::Json(json::pause(Some(host), Some(&record))).into_response())
}

pub async fn host_resume(
    State(s): State<AdminState>,
    Segment(host): Segment,
) -> Result<Response, ApiError> {
    let _in_order = s.pauses.lock().await;
    // Versions before host keys were normalised stored a pause as typed (lower-cased); such a
    // pause is still cleared by that spelling, even one `params::host` now rewrites or refuses.
    let typed = host.to_ascii_lowercase();
    let legacy = s
        .store
        .host_pauses()
        .map_err(ApiError::store)?
        .into_iter()
        .any(|(h, _)| h == typed);
    let host = match params::host(&host) {
        Ok(h) => h,
        Err(_) if legacy => typed.clone(),
        Err(e) => return Err(e),
    };
    let mut keys = vec![host.clone()];
    if legacy && typed != host {
        keys.push(typed);
    }
    for key in keys {
        s.writer
            .set_pause(Some(key.clone()), None)
            .await
            .map_err(ApiError::store)?;
        let _ = s.control_tx.send(Control::HostPause {
            host: key,
            paused: false,
        });
    }
    tracing::info!(%host, "host resumed by an operator");
    Ok(axum::Json(json::pause(Some(host), None)).into_response())
}

/// "Retry now" for a host whose receiver is back: its pending deliveries are due at once, and
/// its open circuit and `Retry-After` hold are cleared (a pause and a rate limit still hold).
pub async fn host_retry(
    State(s): State<AdminState>,
    Segment(host): Segment,
) -> Result<Response, ApiError> {
    let host = params::host(&host)?;
    let outcome = ask_scheduler(&s, |reply| Control::RetryNow {
        host: host.clone(),
        delivery: None,
        reply,
    })
    .await?;
    let (due_now, brought_forward) = match outcome {
        RetryNow::Done {
            due_now,
            brought_forward,
        } => (due_now, brought_forward),
        // (Only a single delivery's retry answers these.)
        RetryNow::InFlight | RetryNow::Parked | RetryNow::Withdrawn | RetryNow::NotQueued => (0, 0),
    };
    tracing::info!(%host, due_now, brought_forward, "host retried now by an operator");
    Ok(axum::Json(serde_json::json!({
        "host": host,
        "due_now": due_now,
        "brought_forward": brought_forward,
    }))
    .into_response())
}

pub async fn hosts(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let loads = ask_scheduler(&s, Control::Hosts).await?;
    let pauses: BTreeMap<String, PauseRecord> = s
        .store
        .host_pauses()
        .map_err(ApiError::store)?
        .into_iter()
        .collect();
    let data: Vec<_> = loads
        .iter()
        .map(|l| json::host(l, pauses.get(&l.host)))
        .collect();
    Ok(axum::Json(serde_json::json!({ "data": data })).into_response())
}

pub async fn stats(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let counts = s.store.counts().map_err(ApiError::store)?;
    let in_flight = s.in_flight.len() as u64;
    let mut by_state = BTreeMap::new();
    for status in Status::ALL {
        let n = match status {
            Status::Pending => counts.get(Status::Pending).saturating_sub(in_flight),
            Status::InProgress => in_flight,
            s => counts.get(s),
        };
        by_state.insert(status.as_str(), n);
    }
    let body = StatsJson {
        counts: by_state,
        oldest_pending_age_seconds: json::oldest_pending_age_secs(&s.store)
            .map_err(ApiError::store)?,
        paused: s.store.pause().map_err(ApiError::store)?.is_some(),
        paused_hosts: s.store.host_pauses().map_err(ApiError::store)?.len(),
    };
    Ok(axum::Json(body).into_response())
}
