//! `GET /v1/series?minutes=60`: attempts and successes per minute, and the attempt latency
//! histogram, over the last `minutes` (1 to 1440, default 60). Read from the in-memory
//! `metrics::series` ring, so it covers the time since this process started.

use axum::extract::State;
use axum::http::Uri;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::clock;
use crate::metrics::LATENCY_BUCKETS;
use crate::metrics::series::{MINUTES, Window};

const DEFAULT_MINUTES: u64 = 60;

#[derive(Serialize)]
pub struct SeriesJson {
    pub bucket_seconds: u32,
    pub from: String,
    pub to: String,
    pub points: Vec<PointJson>,
    pub latency: LatencyJson,
}

#[derive(Serialize)]
pub struct PointJson {
    /// Start of the minute.
    pub at: String,
    pub attempts: u32,
    pub successes: u32,
}

#[derive(Serialize)]
pub struct LatencyJson {
    /// Upper bounds of the buckets, in seconds; `counts` has one more entry, for slower attempts.
    pub bounds_seconds: &'static [f64],
    pub counts: Vec<u64>,
}

/// `GET /v1/series` query parameters, as given: an unknown or repeated one is refused, as by
/// the other listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    pub minutes: Option<String>,
}

pub async fn series(
    State(s): State<AdminState>,
    uri: Uri,
) -> Result<axum::Json<SeriesJson>, ApiError> {
    let q = axum::extract::Query::<SeriesParams>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad("bad_filter", e.body_text()))?
        .0;
    let minutes = match q.minutes {
        None => DEFAULT_MINUTES,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|m| (1..=MINUTES).contains(m))
            .ok_or_else(|| {
                ApiError::bad(
                    "bad_filter",
                    format!("`minutes`: `{v}` is not a whole number from 1 to {MINUTES}"),
                )
            })?,
    };
    let now = clock::now_ms();
    Ok(axum::Json(shape(
        s.metrics.attempt_series.window(now, minutes),
        now,
    )))
}

fn shape(w: Window, now_ms: u64) -> SeriesJson {
    SeriesJson {
        bucket_seconds: 60,
        from: clock::rfc3339(w.points.first().map_or(now_ms, |p| p.at_ms)),
        to: clock::rfc3339(now_ms),
        points: w
            .points
            .iter()
            .map(|p| PointJson {
                at: clock::rfc3339(p.at_ms),
                attempts: p.attempts,
                successes: p.successes,
            })
            .collect(),
        latency: LatencyJson {
            bounds_seconds: LATENCY_BUCKETS,
            counts: w.latency,
        },
    }
}
