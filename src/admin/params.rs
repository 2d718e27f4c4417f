//! Parsing admin request parameters into typed values: filters, times, limits, cursors, hosts.
//!
//! Pure functions of their inputs (the current time is passed in), each refusal an [`ApiError`]
//! naming the parameter. Nothing here reads the store.

use serde::Deserialize;

use super::ApiError;
use crate::config::parse_duration;
use crate::model::{Classification, Id, Status, url_host_key};
use crate::store::query::DeliveryFilter;

/// Rows examined at most for one page of `GET /v1/deliveries`; past it the page ends early
/// with a cursor, so a selective filter can never make one request scan the whole store.
pub const LIST_MAX_SCAN: usize = 10_000;
pub const LIST_DEFAULT_LIMIT: usize = 50;
pub const LIST_MAX_LIMIT: usize = 500;
/// Rows examined at most by one replay-by-filter selection (`POST /v1/batches`), across the
/// states it reads. A selection has no cursor to return, so past this the batch is refused
/// (`filter_too_broad`) rather than scanning on. A million rows took 0.6 s in a release build
/// with the store in the page cache (longer from disk), well inside the CLI's 30 s timeout.
/// It is a constant rather than a multiple of `admin.max_batch` because what it bounds is time;
/// at ten times the largest `admin.max_batch` (100,000), a filter that matches more than one
/// row in ten of those it reads is answered with a batch or `batch_too_large`, never this.
pub const REPLAY_MAX_SCAN: usize = 1_000_000;

/// `GET /v1/deliveries` query parameters, as given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    pub target: Option<String>,
    pub endpoint: Option<String>,
    pub classification: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A filter as a JSON body gives it (`POST /v1/batches`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterJson {
    pub status: Option<String>,
    pub target_prefix: Option<String>,
    pub endpoint: Option<String>,
    pub classification: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// A parsed listing request. `in_progress` is the stored `pending` state narrowed to the
/// deliveries in flight, and `pending` excludes them.
#[derive(Debug, PartialEq)]
pub struct ListQuery {
    pub filter: DeliveryFilter,
    /// `Some(true)`: only in flight; `Some(false)`: none in flight.
    pub in_flight: Option<bool>,
    pub limit: usize,
    pub cursor: Option<Id>,
}

pub fn list_query(p: ListParams, now_ms: u64) -> Result<ListQuery, ApiError> {
    let (status, in_flight) = match p.status.as_deref().map(status) {
        None => (None, None),
        Some(Ok(Status::InProgress)) => (Some(Status::Pending), Some(true)),
        Some(Ok(Status::Pending)) => (Some(Status::Pending), Some(false)),
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => return Err(e),
    };
    let filter = DeliveryFilter {
        status,
        ..filter(
            FilterJson {
                status: None,
                target_prefix: p.target,
                endpoint: p.endpoint,
                classification: p.classification,
                since: p.since,
                until: p.until,
            },
            now_ms,
        )?
    };
    Ok(ListQuery {
        filter,
        in_flight,
        limit: limit(p.limit.as_deref(), LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)?,
        cursor: p.cursor.as_deref().map(cursor).transpose()?,
    })
}

/// A body filter to a store filter (`status` may be any stored state).
pub fn filter(f: FilterJson, now_ms: u64) -> Result<DeliveryFilter, ApiError> {
    let since = f
        .since
        .as_deref()
        .map(|v| time("since", v, now_ms))
        .transpose()?;
    let until = f
        .until
        .as_deref()
        .map(|v| time("until", v, now_ms))
        .transpose()?;
    if matches!((since, until), (Some(s), Some(u)) if s >= u) {
        return Err(ApiError::bad(
            "bad_filter",
            "`since` must be before `until`",
        ));
    }
    let non_empty = |name: &str, v: Option<String>| match v {
        Some(v) if v.is_empty() => Err(ApiError::bad(
            "bad_filter",
            format!("`{name}` must not be empty"),
        )),
        v => Ok(v),
    };
    Ok(DeliveryFilter {
        status: f.status.as_deref().map(status).transpose()?,
        target_prefix: non_empty(
            "target` (`target_prefix` in a batch filter)",
            f.target_prefix,
        )?,
        endpoint: non_empty("endpoint", f.endpoint)?,
        classification: f
            .classification
            .as_deref()
            .map(|c| {
                c.parse::<Classification>().map_err(|_| {
                    ApiError::bad(
                        "bad_filter",
                        format!("`classification`: unknown value `{c}`"),
                    )
                })
            })
            .transpose()?,
        since,
        until,
    })
}

fn status(s: &str) -> Result<Status, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad(
            "bad_filter",
            format!(
                "`status`: unknown value `{s}` (pending, in_progress, delivered, failed, cancelled)"
            ),
        )
    })
}

/// RFC 3339, or a duration meaning "that long before now" (`90s`, `1h`, `7d`).
pub fn time(name: &str, v: &str, now_ms: u64) -> Result<u64, ApiError> {
    if let Some(ms) = crate::clock::parse_rfc3339(v) {
        return Ok(ms);
    }
    match parse_duration(v) {
        Ok(d) => Ok(now_ms.saturating_sub(crate::clock::duration_ms(d))),
        Err(_) if crate::clock::is_rfc3339(v) => Err(ApiError::bad(
            "bad_filter",
            format!("`{name}`: `{v}` is before 1970, which no delivery is"),
        )),
        Err(_) => Err(ApiError::bad(
            "bad_filter",
            format!("`{name}`: `{v}` is neither RFC 3339 nor a duration like `1h`"),
        )),
    }
}

pub fn limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(v) = v else {
        return Ok(default);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            "bad_filter",
            format!("`limit`: `{v}` is not a number from 1 to {max}"),
        )),
    }
}

/// Cursors are opaque to clients; they are the id the previous page stopped at.
pub fn cursor(v: &str) -> Result<Id, ApiError> {
    ulid::Ulid::from_string(v)
        .map(|u| Id(u.0))
        .map_err(|_| ApiError::bad("bad_cursor", format!("`{v}` is not a cursor from this API")))
}

pub fn cursor_text(id: Id) -> String {
    ulid::Ulid(id.0).to_string()
}

/// The longest `reason` an operator may give a pause or a replay batch, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// An operator's `reason`, as given, refused past [`MAX_REASON_CHARS`]: it is stored and
/// shown with the pause or the batch.
pub fn reason(v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(ApiError::bad(
            "bad_reason",
            format!("`reason` is at most {MAX_REASON_CHARS} characters"),
        )),
        v => Ok(v),
    }
}

/// A host key as the scheduler knows it: `host:port`, lower case.
pub fn host(v: &str) -> Result<String, ApiError> {
    let bad = || {
        let shown: String = v.chars().take(80).collect();
        let cut = if shown.len() < v.len() { "..." } else { "" };
        ApiError::bad(
            "bad_host",
            format!("`{shown}{cut}` is not `host:port` (for example `api.example.com:443`)"),
        )
    };
    let has_port = v.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !has_port {
        return Err(bad());
    }
    // Spelled the way the scheduler keys hosts (the key of a target URL): a pause written any
    // other way (upper case, Unicode, `0443`, an unbracketed IPv6) would be stored and never
    // match a delivery.
    let url = url::Url::parse(&format!("http://{v}/")).map_err(|_| bad())?;
    let only_a_host = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !only_a_host || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    // Ingest refuses targets with longer names (DNS allows 253 characters, 63 per label).
    if !crate::model::host_fits_dns(&url) {
        return Err(bad());
    }
    Ok(url_host_key(&url))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn list(pairs: &[(&str, &str)]) -> Result<ListQuery, &'static str> {
        let mut p = ListParams::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "status" => p.status = v,
                "target" => p.target = v,
                "classification" => p.classification = v,
                "since" => p.since = v,
                "until" => p.until = v,
                "limit" => p.limit = v,
                "cursor" => p.cursor = v,
                _ => unreachable!(),
            }
        }
        list_query(p, NOW).map_err(|e| e.code)
    }

    #[test]
    fn list_parameters_parse_or_name_the_problem() {
        let q = list(&[]).unwrap();
        assert_eq!((q.limit, q.cursor, q.in_flight), (50, None, None));
        let q = list(&[("status", "in_progress")]).unwrap();
        assert_eq!(
            (q.filter.status, q.in_flight),
            (Some(Status::Pending), Some(true))
        );
        let q = list(&[("status", "pending")]).unwrap();
        assert_eq!(q.in_flight, Some(false));
        let q = list(&[("since", "1h"), ("classification", "timeout")]).unwrap();
        assert_eq!(q.filter.since, Some(NOW - 3_600_000));
        assert_eq!(q.filter.classification, Some(Classification::Timeout));
        let q = list(&[("until", "2027-01-15T08:00:00Z")]).unwrap();
        assert_eq!(q.filter.until, Some(NOW));
        let id = Id::from_parts(NOW, 42);
        let q = list(&[("cursor", &cursor_text(id))]).unwrap();
        assert_eq!(q.cursor, Some(id));

        let bad: &[(&[(&str, &str)], &str)] = &[
            (&[("status", "done")], "bad_filter"),
            (&[("classification", "SLOW")], "bad_filter"),
            (&[("since", "yesterday")], "bad_filter"),
            (&[("since", "1h"), ("until", "2h")], "bad_filter"),
            (&[("limit", "0")], "bad_filter"),
            (&[("limit", "501")], "bad_filter"),
            (&[("limit", "ten")], "bad_filter"),
            (&[("target", "")], "bad_filter"),
            (&[("cursor", "nope")], "bad_cursor"),
        ];
        for (pairs, code) in bad {
            assert_eq!(list(pairs).unwrap_err(), *code, "{pairs:?}");
        }
    }

    #[test]
    fn hosts_need_a_port() {
        assert_eq!(host("API.example.com:443").unwrap(), "api.example.com:443");
        assert_eq!(host("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(host("[::1]:80").unwrap(), "[::1]:80");
        // Spelled as the scheduler keys hosts, or refused.
        assert_eq!(host("[0::1]:80").unwrap(), "[::1]:80");
        assert_eq!(host("api.example.com:0443").unwrap(), "api.example.com:443");
        assert_eq!(
            host("bücher.example:443").unwrap(),
            "xn--bcher-kva.example:443"
        );
        for bad in ["::1:80", "user@h:80", "h?q:80", "h#f:80"] {
            assert!(host(bad).is_err(), "{bad}");
        }
        for bad in ["example.com", ":80", "a:0", "a:port", "a/b:80"] {
            assert!(host(bad).is_err(), "{bad}");
        }
        // Longer than any DNS name: refused, and not echoed whole.
        let long = format!("{}:80", "a".repeat(3000));
        let e = host(&long).unwrap_err();
        assert!(format!("{e:?}").len() < 1000, "{e:?}");
        assert!(host(&format!("{}.example:80", "a".repeat(64))).is_err());
        assert!(host(&format!("{}.example:80", "a".repeat(63))).is_ok());
    }
}
