//! Classification of one attempt's outcome, and the decision that follows from it.
//!
//! Pure functions from values to values, tested from tables. The sender (`sender.rs`) turns
//! transport errors into [`SendError`] variants; nothing here looks at error message strings.

use std::time::Duration;

use crate::model::Classification;
use crate::retry::RetryPolicy;

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Network(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("request could not be built: {0}")]
    InvalidRequest(String),
    #[error("egress guard: {0}")]
    EgressBlocked(String),
    /// hookrelay itself failed while making the attempt (see `Classification::InternalError`).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response {
        status: u16,
        /// The receiver's `Retry-After`, already parsed.
        retry_after: Option<Duration>,
    },
    Error(SendError),
}

pub fn classify(outcome: &Outcome) -> Classification {
    match outcome {
        Outcome::Response { status, .. } => match *status {
            200..=299 => Classification::Success,
            408 => Classification::Timeout,
            429 => Classification::RateLimited,
            300..=399 => Classification::Http3xxPermanent,
            400..=499 => Classification::Http4xxPermanent,
            // 5xx and anything outside the known ranges: the receiver is not healthy; try again.
            _ => Classification::Http5xxRetryable,
        },
        Outcome::Error(e) => match e {
            SendError::Timeout(_) => Classification::Timeout,
            SendError::Network(_) => Classification::NetworkError,
            SendError::Tls(_) => Classification::TlsError,
            SendError::Dns(_) => Classification::DnsError,
            SendError::InvalidRequest(_) => Classification::InvalidRequest,
            SendError::EgressBlocked(_) => Classification::EgressBlocked,
            SendError::Internal(_) => Classification::InternalError,
        },
    }
}

/// Whether a named endpoint's answer disables it: `410 Gone` says the receiver is gone for
/// good, so its deliveries are held (not failed) until an operator enables it again.
pub fn disables_endpoint(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Response { status: 410, .. })
}

/// What an attempt says about the health of its destination host, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSignal {
    /// The host answered sensibly (2xx, 3xx, 4xx other than 408 and 429).
    Healthy,
    /// The host failed: 5xx, timeout, network, TLS or DNS error.
    Failed,
    /// Says nothing about the host: 429 (handled by Retry-After), our own refusal, or our own
    /// failure.
    Neutral,
}

pub fn host_signal(class: Classification) -> HostSignal {
    use Classification::*;
    match class {
        Success | Http4xxPermanent | Http3xxPermanent => HostSignal::Healthy,
        Http5xxRetryable | Timeout | NetworkError | TlsError | DnsError => HostSignal::Failed,
        RateLimited | InvalidRequest | EgressBlocked | InternalError => HostSignal::Neutral,
    }
}

/// How long every delivery to the host waits after this outcome: a `Retry-After` on 429 or 503
/// applies to the whole host, not only to the delivery that got it, bounded by `max_delay`.
pub fn host_hold(outcome: &Outcome, max_delay: Duration) -> Option<Duration> {
    match outcome {
        Outcome::Response {
            status: 429 | 503,
            retry_after: Some(d),
        } => Some((*d).min(max_delay)),
        _ => None,
    }
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Delivered,
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: a permanent class, or the attempt budget is spent.
    Fail,
}

/// `attempt` is the 1-based number of the attempt that produced `outcome`; `unit` is the
/// random draw for jitter.
pub fn decide(outcome: &Outcome, attempt: u32, policy: &RetryPolicy, unit: f64) -> Decision {
    let class = classify(outcome);
    if class == Classification::Success {
        return Decision::Delivered;
    }
    if !class.is_retryable() || policy.exhausted(attempt) {
        return Decision::Fail;
    }
    let retry_after = match outcome {
        // Retry-After is honoured where HTTP gives it meaning: 429 and 503.
        Outcome::Response {
            status: 429 | 503,
            retry_after,
        } => *retry_after,
        _ => None,
    };
    Decision::Retry(policy.next_delay(attempt, retry_after, unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Classification::*;

    fn resp(status: u16) -> Outcome {
        Outcome::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn classification_table() {
        let e = |f: fn(String) -> SendError| Outcome::Error(f("x".into()));
        let cases = [
            (resp(200), Success),
            (resp(204), Success),
            (resp(299), Success),
            (resp(301), Http3xxPermanent),
            (resp(302), Http3xxPermanent),
            (resp(304), Http3xxPermanent),
            (resp(400), Http4xxPermanent),
            (resp(401), Http4xxPermanent),
            (resp(404), Http4xxPermanent),
            (resp(408), Timeout),
            (resp(410), Http4xxPermanent),
            (resp(422), Http4xxPermanent),
            (resp(429), RateLimited),
            (resp(500), Http5xxRetryable),
            (resp(502), Http5xxRetryable),
            (resp(503), Http5xxRetryable),
            (resp(599), Http5xxRetryable),
            (resp(100), Http5xxRetryable),
            (e(SendError::Timeout), Timeout),
            (e(SendError::Network), NetworkError),
            (e(SendError::Tls), TlsError),
            (e(SendError::Dns), DnsError),
            (e(SendError::InvalidRequest), InvalidRequest),
            (e(SendError::EgressBlocked), EgressBlocked),
            (e(SendError::Internal), InternalError),
        ];
        for (outcome, want) in cases {
            assert_eq!(classify(&outcome), want, "{outcome:?}");
        }
    }

    #[test]
    fn decision_table() {
        let p = RetryPolicy::try_new(
            Duration::from_secs(5),
            2.0,
            Duration::from_secs(100),
            3,
            0.0,
        )
        .unwrap();
        let after = |status, secs| Outcome::Response {
            status,
            retry_after: Some(Duration::from_secs(secs)),
        };
        let s = Duration::from_secs;
        let cases = [
            (resp(200), 1, Decision::Delivered),
            (resp(200), 3, Decision::Delivered),
            (resp(500), 1, Decision::Retry(s(5))),
            (resp(500), 2, Decision::Retry(s(10))),
            (resp(500), 3, Decision::Fail),
            (resp(400), 1, Decision::Fail),
            (resp(302), 1, Decision::Fail),
            (after(429, 42), 1, Decision::Retry(s(42))),
            (after(429, 4200), 1, Decision::Retry(s(100))),
            (after(503, 12), 2, Decision::Retry(s(12))),
            // Shorter than the backoff (or 0): the backoff applies.
            (after(503, 7), 2, Decision::Retry(s(10))),
            (after(429, 0), 1, Decision::Retry(s(5))),
            // Retry-After on a 500 means nothing; backoff applies.
            (after(500, 7), 1, Decision::Retry(s(5))),
            (resp(429), 2, Decision::Retry(s(10))),
            (after(429, 1), 3, Decision::Fail),
            (
                Outcome::Error(SendError::Network("refused".into())),
                1,
                Decision::Retry(s(5)),
            ),
            (
                Outcome::Error(SendError::InvalidRequest("bad".into())),
                1,
                Decision::Fail,
            ),
            (
                Outcome::Error(SendError::EgressBlocked("10.0.0.1".into())),
                1,
                Decision::Fail,
            ),
            (
                Outcome::Error(SendError::Internal("panicked".into())),
                2,
                Decision::Retry(s(10)),
            ),
            (
                Outcome::Error(SendError::Internal("panicked".into())),
                3,
                Decision::Fail,
            ),
        ];
        for (outcome, attempt, want) in cases {
            assert_eq!(
                decide(&outcome, attempt, &p, 0.5),
                want,
                "{outcome:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn host_table() {
        let after = |status, secs| Outcome::Response {
            status,
            retry_after: Some(Duration::from_secs(secs)),
        };
        let max = Duration::from_secs(60);
        let cases = [
            (resp(200), HostSignal::Healthy, None, false),
            (resp(404), HostSignal::Healthy, None, false),
            (resp(410), HostSignal::Healthy, None, true),
            (resp(301), HostSignal::Healthy, None, false),
            (resp(500), HostSignal::Failed, None, false),
            (resp(408), HostSignal::Failed, None, false),
            (resp(429), HostSignal::Neutral, None, false),
            (after(429, 5), HostSignal::Neutral, Some(5), false),
            (after(503, 500), HostSignal::Failed, Some(60), false),
            (after(500, 5), HostSignal::Failed, None, false),
            (
                Outcome::Error(SendError::Network("reset".into())),
                HostSignal::Failed,
                None,
                false,
            ),
            (
                Outcome::Error(SendError::EgressBlocked("x".into())),
                HostSignal::Neutral,
                None,
                false,
            ),
            (
                Outcome::Error(SendError::Internal("x".into())),
                HostSignal::Neutral,
                None,
                false,
            ),
        ];
        for (outcome, signal, hold, disables) in cases {
            assert_eq!(host_signal(classify(&outcome)), signal, "{outcome:?}");
            assert_eq!(
                host_hold(&outcome, max),
                hold.map(Duration::from_secs),
                "{outcome:?}"
            );
            assert_eq!(disables_endpoint(&outcome), disables, "{outcome:?}");
        }
    }
}
