//! Replay batches: `POST /v1/batches` (by ids or by filter, dry run or real), and the audit
//! trail `GET /v1/batches`, `GET /v1/batches/{id}`.
//!
//! A filter is resolved to ids on a snapshot here; the writer then checks every id again and
//! writes the batch record with its new deliveries in one transaction, so a batch is all or
//! nothing. This file never writes the store itself.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::json::{self, PageJson};
use super::params::{self, FilterJson, REPLAY_MAX_SCAN};
use super::{AdminState, ApiError, JsonBody, Segment};
use crate::clock;
use crate::model::{BatchId, DeliveryId, ReplayFilter};
use crate::store::query::ReplaySelection;
use crate::store::writer::ReplayWrite;

/// The longest text `delivery_ids` may hold per id (a delivery id is 30 characters).
const MAX_ID_TEXT: usize = 64;

const BATCHES_DEFAULT_LIMIT: usize = 20;
const BATCHES_MAX_LIMIT: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub delivery_ids: Option<Vec<String>>,
    pub filter: Option<FilterJson>,
    #[serde(default)]
    pub dry_run: bool,
    pub reason: Option<String>,
}

pub async fn create(
    State(s): State<AdminState>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    let max = s.config.max_batch;
    let too_large = |what: String| {
        ApiError::bad(
            "batch_too_large",
            format!("{what}; one batch takes at most {max} (admin.max_batch)"),
        )
    };
    let (requested, filter) = match (req.delivery_ids, req.filter) {
        (Some(ids), None) => {
            if ids.is_empty() {
                return Err(ApiError::bad("bad_batch", "`delivery_ids` is empty"));
            }
            if ids.len() > max {
                return Err(too_large(format!("`delivery_ids` names {}", ids.len())));
            }
            // An id that is not a delivery id is recorded as skipped (`not_found`), as it was
            // given: bounded, so the audit record stays small.
            if let Some(long) = ids.iter().find(|t| t.len() > MAX_ID_TEXT) {
                let start: String = long.chars().take(16).collect();
                return Err(ApiError::bad(
                    "bad_batch",
                    format!(
                        "`delivery_ids`: `{start}...` is {} bytes long; a delivery id is `dlv_` and 26 characters",
                        long.len()
                    ),
                ));
            }
            let parsed = ids
                .into_iter()
                .map(|t| {
                    let id = t.parse::<DeliveryId>().ok().map(|d| d.0);
                    (t, id)
                })
                .collect();
            (parsed, None)
        }
        (None, Some(f)) => {
            let filter = params::filter(f, clock::now_ms())?;
            if let Some(status) = filter.status.filter(|s| !s.is_replayable()) {
                return Err(ApiError::bad(
                    "bad_filter",
                    format!(
                        "`status`: {} deliveries cannot be replayed (only failed or cancelled)",
                        status.as_str()
                    ),
                ));
            }
            // The selection reads the failed and cancelled deliveries the filter's time range
            // holds, up to REPLAY_MAX_SCAN rows (0.6 s in the page cache, longer from disk): off the admin runtime's
            // workers, so probes and other admin requests are not held up behind it.
            let (store, f) = (s.store.clone(), filter.clone());
            let selection = tokio::task::spawn_blocking(move || {
                store.select_for_replay(&f, max, REPLAY_MAX_SCAN)
            })
            .await
            .map_err(|e| {
                // Only a panic in the selection or a runtime going away gets here.
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the replay selection stopped: {e}"),
                )
            })?
            .map_err(ApiError::store)?;
            let ids = match selection {
                ReplaySelection::Ids(ids) => ids,
                ReplaySelection::TooMany => {
                    return Err(too_large(format!(
                        "the filter matches more than {max} deliveries: narrow it (`since` and `until`, `target_prefix`, `classification`) and replay in several batches"
                    )));
                }
                ReplaySelection::TooBroad { examined } => {
                    return Err(too_broad(examined, filter.status.is_some()));
                }
            };
            let requested = ids
                .into_iter()
                .map(|id| (DeliveryId(id).to_string(), Some(id)))
                .collect();
            let stored = ReplayFilter {
                status: filter.status,
                target_prefix: filter.target_prefix,
                endpoint: filter.endpoint,
                classification: filter.classification,
                since: filter.since,
                until: filter.until,
            };
            (requested, Some(stored))
        }
        _ => {
            return Err(ApiError::bad(
                "bad_batch",
                "give exactly one of `delivery_ids` and `filter`",
            ));
        }
    };
    let write = ReplayWrite {
        requested,
        filter,
        dry_run: req.dry_run,
        reason: params::reason(req.reason)?,
    };
    let (id, batch) = s.writer.replay(write).await.map_err(ApiError::store)?;
    if !batch.dry_run {
        s.metrics.replayed.inc_by(batch.created.len() as u64);
    }
    tracing::info!(
        batch = %BatchId(id),
        dry_run = batch.dry_run,
        created = batch.created.len(),
        skipped = batch.skipped.len(),
        "replay batch"
    );
    Ok((StatusCode::CREATED, axum::Json(json::batch(id, &batch))).into_response())
}

/// A filter whose selection stopped at [`REPLAY_MAX_SCAN`] rows before reading its whole range.
/// Only the time range and the status shorten the scan (the other filters are checked row by
/// row), so the message names those.
fn too_broad(examined: usize, status_given: bool) -> ApiError {
    let narrow = if status_given {
        "narrow `since`/`until`"
    } else {
        "narrow `since`/`until` or give a `status` (failed or cancelled)"
    };
    ApiError::bad(
        "filter_too_broad",
        format!(
            "the selection examined {examined} deliveries (at most {REPLAY_MAX_SCAN}) without \
             reaching the end of the filter's range; {narrow}"
        ),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

pub async fn list(State(s): State<AdminState>, uri: Uri) -> Result<Response, ApiError> {
    let raw = axum::extract::Query::<BatchListParams>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad("bad_filter", e.body_text()))?
        .0;
    let limit = params::limit(
        raw.limit.as_deref(),
        BATCHES_DEFAULT_LIMIT,
        BATCHES_MAX_LIMIT,
    )?;
    let cursor = raw.cursor.as_deref().map(params::cursor).transpose()?;
    let rows = s.store.batches(cursor, limit).map_err(ApiError::store)?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|(id, _)| params::cursor_text(*id)))
        .flatten();
    let body = PageJson {
        data: rows.iter().map(|(id, b)| json::batch(*id, b)).collect(),
        next_cursor,
    };
    Ok(axum::Json(body).into_response())
}

pub async fn show(State(s): State<AdminState>, Segment(id): Segment) -> Result<Response, ApiError> {
    let parsed = id
        .parse::<BatchId>()
        .map_err(|_| ApiError::not_found("batch", &id))?;
    let batch = s
        .store
        .batch(parsed.0)
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found("batch", &id))?;
    Ok(axum::Json(json::batch(parsed.0, &batch)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_too_broad_says_what_was_examined_and_what_narrows_it() {
        let e = too_broad(1_000_000, false);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "filter_too_broad")
        );
        assert!(
            e.message.contains("examined 1000000 deliveries"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("`since`/`until` or give a `status`"),
            "{}",
            e.message
        );
        // With a status given, only the time range is left to narrow.
        let e = too_broad(5, true);
        assert!(
            e.message.ends_with("narrow `since`/`until`"),
            "{}",
            e.message
        );
    }
}
