//! The vocabulary shared by every stage: ids, states, classifications and the stored records.
//!
//! Stored records carry a version byte in front of their encoding (see `store::codec`), so the
//! on-disk format can evolve. API bodies are separate types in `admin`; nothing here is shaped
//! for JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A time-ordered 128-bit id (ULID layout: 48 bits of milliseconds, then 80 bits that the writer
/// keeps increasing). Time order keeps redb inserts at the end of the B-tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Id(pub u128);

impl Id {
    pub fn from_parts(ms: u64, low: u128) -> Id {
        Id(((ms as u128) << 80) | (low & ((1u128 << 80) - 1)))
    }

    /// The creation time in milliseconds since the epoch.
    pub fn ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    pub fn random(ms: u64) -> Id {
        Id::from_parts(ms, fastrand::u128(..))
    }

    fn encode(self, prefix: &str) -> String {
        format!("{prefix}{}", ulid::Ulid(self.0))
    }

    fn decode(s: &str, prefix: &str) -> Option<Id> {
        let rest = s.strip_prefix(prefix)?;
        ulid::Ulid::from_string(rest).ok().map(|u| Id(u.0))
    }
}

/// Generates strictly increasing ids, even when the clock stands still or steps back.
#[derive(Debug, Default)]
pub struct IdGen {
    last: u128,
}

impl IdGen {
    /// Continues after `last` (the largest id already stored), so ids keep increasing on disk
    /// even if the clock stepped back across a restart.
    pub fn after(last: Id) -> IdGen {
        IdGen { last: last.0 }
    }

    pub fn next(&mut self, now_ms: u64) -> Id {
        let candidate = Id::random(now_ms).0;
        // Random low bits inside one millisecond would not be ordered; step from the last instead.
        let id = if candidate > self.last && (candidate >> 80) > (self.last >> 80) {
            candidate
        } else {
            self.last + 1 + fastrand::u128(..1 << 16)
        };
        self.last = id;
        Id(id)
    }
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Id);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0.encode($prefix))
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                Id::decode(s, $prefix).map($name).ok_or(())
            }
        }
    };
}

prefixed_id!(DeliveryId, "dlv_");
prefixed_id!(EventId, "evt_");
prefixed_id!(BatchId, "bat_");

/// Where a delivery stands. `InProgress` is never stored: an attempt in flight is known only to
/// the scheduler, and a crash leaves the delivery `Pending`, so it is attempted again on start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Pending,
    InProgress,
    Delivered,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::InProgress,
        Status::Delivered,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The byte used in store index keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Failed | Status::Cancelled)
    }

    /// Whether a replay batch may copy a delivery in this state.
    pub fn is_replayable(self) -> bool {
        matches!(self, Status::Failed | Status::Cancelled)
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Status::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// What one attempt's outcome was, as operators and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Classification {
    Success,
    Http5xxRetryable,
    Http4xxPermanent,
    Http3xxPermanent,
    RateLimited,
    Timeout,
    NetworkError,
    TlsError,
    DnsError,
    /// The stored request could not be turned into an HTTP request (for example a header that
    /// the HTTP client refuses). Retrying cannot help.
    InvalidRequest,
    /// The egress guard refused the destination (every address it resolved to is denied).
    EgressBlocked,
    /// The attempt ended without a result: hookrelay failed while making it (a bug). Retried
    /// within the delivery's retry budget like a network error, so a delivery whose attempts
    /// always fail this way ends `failed`, with these attempts on record. (Appended last: the
    /// stored encoding of the earlier variants is unchanged.)
    InternalError,
}

impl Classification {
    pub const ALL: [Classification; 12] = [
        Classification::Success,
        Classification::Http5xxRetryable,
        Classification::Http4xxPermanent,
        Classification::Http3xxPermanent,
        Classification::RateLimited,
        Classification::Timeout,
        Classification::NetworkError,
        Classification::TlsError,
        Classification::DnsError,
        Classification::InvalidRequest,
        Classification::EgressBlocked,
        Classification::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Success => "SUCCESS",
            Classification::Http5xxRetryable => "HTTP_5XX_RETRYABLE",
            Classification::Http4xxPermanent => "HTTP_4XX_PERMANENT",
            Classification::Http3xxPermanent => "HTTP_3XX_PERMANENT",
            Classification::RateLimited => "RATE_LIMITED",
            Classification::Timeout => "TIMEOUT",
            Classification::NetworkError => "NETWORK_ERROR",
            Classification::TlsError => "TLS_ERROR",
            Classification::DnsError => "DNS_ERROR",
            Classification::InvalidRequest => "INVALID_REQUEST",
            Classification::EgressBlocked => "EGRESS_BLOCKED",
            Classification::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Whether another attempt could succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Classification::Http5xxRetryable
                | Classification::RateLimited
                | Classification::Timeout
                | Classification::NetworkError
                | Classification::TlsError
                | Classification::DnsError
                | Classification::InternalError
        )
    }
}

impl FromStr for Classification {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Classification::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// The part of a delivery that changes: small, rewritten on every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub status: Status,
    pub method: String,
    /// The absolute URL the attempt goes to (for named endpoints, already joined).
    pub target: String,
    pub endpoint: Option<String>,
    pub event_id: Option<Id>,
    pub idempotency_key: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Set while pending.
    pub next_attempt_at: Option<u64>,
    pub attempt_count: u32,
    pub last_classification: Option<Classification>,
    pub last_status_code: Option<u16>,
    pub finished_at: Option<u64>,
    pub body_len: u32,
    pub replay_of: Option<Id>,
    pub batch_id: Option<Id>,
}

impl DeliveryRecord {
    /// A new delivery, due at once.
    pub fn pending(
        method: String,
        target: String,
        endpoint: Option<String>,
        event_id: Option<Id>,
        idempotency_key: Option<String>,
        now: u64,
        body_len: usize,
    ) -> DeliveryRecord {
        DeliveryRecord {
            status: Status::Pending,
            method,
            target,
            endpoint,
            event_id,
            idempotency_key,
            created_at: now,
            updated_at: now,
            next_attempt_at: Some(now),
            attempt_count: 0,
            last_classification: None,
            last_status_code: None,
            finished_at: None,
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
            replay_of: None,
            batch_id: None,
        }
    }

    /// The scheduler's per-host key: `host:port`, lower case.
    pub fn host(&self) -> String {
        host_key(&self.target)
    }
}

/// `host:port` of an absolute URL; the empty string if it has none (never the case for stored
/// targets, which ingest validated).
pub fn host_key(target: &str) -> String {
    match url::Url::parse(target) {
        Ok(u) => url_host_key(&u),
        Err(_) => String::new(),
    }
}

/// Whether a URL's host could be looked up: an IP address, or a name of at most 253
/// characters with labels of at most 63 (DNS). A longer one can never be delivered to.
pub fn host_fits_dns(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(name)) => {
            name.len() <= 253 && name.split('.').all(|label| label.len() <= 63)
        }
        _ => true,
    }
}

/// [`host_key`] of a URL already parsed.
pub fn url_host_key(u: &url::Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or_default().to_ascii_lowercase(),
        u.port_or_known_default().unwrap_or(0)
    )
}

/// The request as it will be sent: written once at ingest, never rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// End-to-end headers in arrival order, names lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Encoded as one byte string rather than a sequence of bytes; postcard writes both the
    /// same way on disk, so this is only faster, not a format change.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: u64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub classification: Classification,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
}

/// Why a replay batch left a requested delivery out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// No delivery has that id (or the id is not a delivery id at all).
    NotFound,
    /// Only `failed` and `cancelled` deliveries can be replayed.
    NotReplayable,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotFound => "not_found",
            SkipReason::NotReplayable => "not_replayable",
        }
    }
}

/// The selection a replay batch was asked for by filter, kept in its audit record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayFilter {
    pub status: Option<Status>,
    pub target_prefix: Option<String>,
    pub endpoint: Option<String>,
    pub classification: Option<Classification>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

/// The audit record of one replay batch (dry runs included): written once, never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub dry_run: bool,
    pub reason: Option<String>,
    pub created_at: u64,
    /// Set when the batch was asked for by filter rather than by ids.
    pub filter: Option<ReplayFilter>,
    /// How many deliveries were asked for (ids given, or matched by the filter).
    pub requested: u32,
    /// (source, new delivery); the new delivery is `None` in a dry run.
    pub created: Vec<(Id, Option<Id>)>,
    /// The requested id as given, and why it was left out.
    pub skipped: Vec<(String, SkipReason)>,
}

/// An operator's pause, globally or for one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub since: u64,
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_stay_ordered() {
        let mut g = IdGen::default();
        let mut prev = Id(0);
        for ms in [1000, 1000, 1000, 999, 1001, 1001] {
            let id = g.next(ms);
            assert!(id > prev, "{id:?} after {prev:?}");
            prev = id;
            let s = DeliveryId(id).to_string();
            assert!(s.starts_with("dlv_") && s.len() == 30, "{s}");
            assert_eq!(s.parse::<DeliveryId>(), Ok(DeliveryId(id)));
        }
        assert!(
            "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"
                .parse::<DeliveryId>()
                .is_err()
        );
        assert!("dlv_nope".parse::<DeliveryId>().is_err());
    }

    #[test]
    fn ids_continue_after_the_stored_maximum_when_the_clock_steps_back() {
        let stored = Id::from_parts(2_000, 5);
        let mut g = IdGen::after(stored);
        let next = g.next(1_000);
        assert!(next > stored);
        assert!(g.next(1_000) > next);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse(), Ok(s));
        }
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse(), Ok(c));
        }
    }

    #[test]
    fn host_keys() {
        assert_eq!(host_key("https://A.example.com/x"), "a.example.com:443");
        assert_eq!(host_key("http://127.0.0.1:8080/x?y"), "127.0.0.1:8080");
        assert_eq!(host_key("http://[::1]/"), "[::1]:80");
    }
}
