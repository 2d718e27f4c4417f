//! Retry policy: exponential backoff with jitter, the attempt budget, and `Retry-After`.
//!
//! Pure functions only. The random draw for jitter is passed in, so every decision here can be
//! checked from a table of cases. This module never reads the clock.

use std::time::{Duration, SystemTime};

/// Built with [`RetryPolicy::try_new`], which rejects nonsense, so every policy in the program is
/// valid.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Each delay is spread uniformly over `delay * (1 +/- jitter)`.
    pub jitter: f64,
}

/// Which field is wrong and why; the config loader prefixes the section.
#[derive(Debug, PartialEq)]
pub struct PolicyError {
    pub key: &'static str,
    pub reason: String,
}

impl RetryPolicy {
    pub fn try_new(
        initial_delay: Duration,
        multiplier: f64,
        max_delay: Duration,
        max_attempts: u32,
        jitter: f64,
    ) -> Result<Self, PolicyError> {
        let err = |key, reason: &str| {
            Err(PolicyError {
                key,
                reason: reason.to_string(),
            })
        };
        if initial_delay.is_zero() {
            return err("initial_delay", "must be more than 0");
        }
        if !multiplier.is_finite() || multiplier < 1.0 {
            return err("multiplier", "must be a number >= 1.0");
        }
        if max_delay < initial_delay {
            return err("max_delay", "must be at least initial_delay");
        }
        if max_delay > MAX_DELAY_LIMIT {
            return err("max_delay", "must be at most 365d");
        }
        if max_attempts == 0 {
            return err("max_attempts", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&jitter) {
            return err("jitter", "must be between 0.0 and 1.0");
        }
        Ok(Self {
            initial_delay,
            multiplier,
            max_delay,
            max_attempts,
            jitter,
        })
    }

    /// The delay after failed attempt number `attempt` (1-based), before the next one.
    /// `unit` is a uniform random draw in [0, 1); 0.5 means no jitter.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exp);
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let secs = (base * spread).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }

    /// The delay before the next attempt: the backoff, or longer when the receiver asked for
    /// longer (`Retry-After`). Never shorter than the backoff, so a receiver answering
    /// `Retry-After: 0` (or a date in the past) cannot spend the retry budget in a moment, and
    /// never more than `max_delay`.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let backoff = self.backoff(attempt, unit);
        match retry_after {
            Some(asked) => asked.max(backoff).min(self.max_delay),
            None => backoff,
        }
    }

    /// Whether attempt number `attempt` used up the budget.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// Longest `max_delay` accepted: a year.
const MAX_DELAY_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (relative to `now`).
/// A date in the past means "now"; anything unparsable is ignored (None).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // More seconds than a u64 holds: as long as it gets (the policy caps it at max_delay).
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(u64::MAX));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::try_new(
            Duration::from_secs(5),
            2.0,
            Duration::from_secs(24 * 3600),
            12,
            0.2,
        )
        .unwrap()
    }

    #[test]
    fn backoff_table() {
        let p = policy();
        // (attempt, unit, expected seconds)
        let cases = [
            (1, 0.5, 5.0),
            (2, 0.5, 10.0),
            (3, 0.5, 20.0),
            (4, 0.5, 40.0),
            (1, 0.0, 4.0),
            (1, 1.0, 6.0),
            (3, 0.0, 16.0),
            (20, 0.5, 86400.0), // capped
            (20, 1.0, 86400.0), // jitter never exceeds the cap
            (1000, 0.5, 86400.0),
        ];
        for (attempt, unit, want) in cases {
            let got = p.backoff(attempt, unit).as_secs_f64();
            assert!(
                (got - want).abs() < 1e-6,
                "attempt {attempt} unit {unit}: {got} != {want}"
            );
        }
    }

    #[test]
    fn retry_after_lengthens_the_backoff_but_never_shortens_it_and_is_bounded() {
        let p = RetryPolicy::try_new(Duration::from_secs(1), 2.0, Duration::from_secs(60), 5, 0.0)
            .unwrap();
        let s = Duration::from_secs;
        assert_eq!(p.next_delay(1, Some(s(7)), 0.5), s(7));
        assert_eq!(p.next_delay(1, Some(s(7200)), 0.5), s(60));
        assert_eq!(p.next_delay(2, None, 0.5), s(2));
        // `Retry-After: 0` or a date in the past: the backoff still applies.
        assert_eq!(p.next_delay(1, Some(s(0)), 0.5), s(1));
        assert_eq!(p.next_delay(4, Some(s(3)), 0.5), s(8));
        assert_eq!(p.next_delay(4, Some(s(u64::MAX)), 0.5), s(60));
    }

    #[test]
    fn the_longest_accepted_max_delay_never_overflows() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let p = RetryPolicy::try_new(Duration::from_secs(1), 1e300, year, 5, 1.0).unwrap();
        assert_eq!(p.backoff(5, 1.0), year);
        assert_eq!(p.backoff(u32::MAX, 0.0), year);
    }

    #[test]
    fn attempt_budget() {
        let p = policy();
        assert!(!p.exhausted(11));
        assert!(p.exhausted(12));
        assert!(p.exhausted(13));
    }

    #[test]
    fn invalid_policies_are_rejected_with_their_key() {
        let s = Duration::from_secs;
        let cases = [
            (s(0), 2.0, s(10), 3, 0.1, "initial_delay"),
            (s(1), 0.9, s(10), 3, 0.1, "multiplier"),
            (s(1), f64::NAN, s(10), 3, 0.1, "multiplier"),
            (s(20), 2.0, s(10), 3, 0.1, "max_delay"),
            (s(1), 2.0, s(365 * 24 * 3600 + 1), 3, 0.1, "max_delay"),
            (s(1), 2.0, s(10), 0, 0.1, "max_attempts"),
            (s(1), 2.0, s(10), 3, -0.1, "jitter"),
            (s(1), 2.0, s(10), 3, 1.5, "jitter"),
        ];
        for (i, m, max, n, j, key) in cases {
            assert_eq!(RetryPolicy::try_new(i, m, max, n, j).unwrap_err().key, key);
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let cases = [
            ("120", Some(120)),
            (" 3 ", Some(3)),
            ("Sun, 06 Nov 1994 08:50:37 GMT", Some(60)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(0)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("soon", None),
            ("-5", None),
            ("3.5", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }
}
