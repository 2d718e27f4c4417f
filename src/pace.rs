//! Rate limits per destination host (`delivery.per_host_rate`, `delivery.host_rates`): at most
//! N attempts started per second, minute or hour, for receivers that limit their callers.
//! Pure: the queue (`schedule.rs`) keeps one number per paced host and asks this module when
//! that host may start its next attempt.
//!
//! The algorithm is GCRA (a token bucket kept as one "theoretical arrival time"): attempts are
//! spaced evenly at the rate, and after a quiet spell up to one second's worth (at least one)
//! may start at once, so "600/min" allows 10 at once and then one every 100 ms, never 600 in a
//! burst.

use std::collections::HashMap;
use std::fmt;

/// Most requests per unit of time to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per_ms: u64,
}

const UNITS: [(&str, u64); 6] = [
    ("s", 1_000),
    ("sec", 1_000),
    ("m", 60_000),
    ("min", 60_000),
    ("h", 3_600_000),
    ("hour", 3_600_000),
];

/// Fastest rate accepted: one attempt every 10 us.
const MAX_PER_SECOND: u64 = 100_000;

impl Rate {
    /// Parses `"20/s"`, `"600/min"`, `"3600/h"` (also `sec`, `m`, `hour`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let shape =
            || format!("`{text}` is not a rate: write it as \"20/s\", \"600/min\" or \"3600/h\"");
        let (count, unit) = text.trim().split_once('/').ok_or_else(shape)?;
        let count: u32 = count.trim().parse().map_err(|_| shape())?;
        let unit = unit.trim().to_ascii_lowercase();
        let per_ms = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(shape)?;
        if count == 0 {
            return Err(format!("`{text}`: the count must be at least 1"));
        }
        if u64::from(count) * 1_000 > MAX_PER_SECOND * per_ms {
            return Err(format!("`{text}`: at most {MAX_PER_SECOND} per second"));
        }
        Ok(Rate { count, per_ms })
    }

    /// Microseconds between two attempts at this rate (at least 10).
    fn interval_us(self) -> u64 {
        (self.per_ms * 1_000 / u64::from(self.count)).max(1_000_000 / MAX_PER_SECOND)
    }

    /// How many may start at once after a quiet spell: one second's worth, at least one.
    fn burst(self) -> u64 {
        (u64::from(self.count) * 1_000 / self.per_ms).max(1)
    }

    /// How far ahead of the current time the theoretical arrival time may run.
    fn tolerance_us(self) -> u64 {
        (self.burst() - 1) * self.interval_us()
    }

    /// Given the host's theoretical arrival time (`tat_us`, 0 for a host not yet paced), the
    /// first millisecond at which it may start an attempt.
    pub fn eligible_at_ms(self, tat_us: u64) -> u64 {
        tat_us.saturating_sub(self.tolerance_us()).div_ceil(1_000)
    }

    /// The host's theoretical arrival time after it starts an attempt at `now_ms`.
    pub fn after_start(self, tat_us: u64, now_ms: u64) -> u64 {
        tat_us
            .max(now_ms.saturating_mul(1_000))
            .saturating_add(self.interval_us())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per_ms {
            1_000 => "s",
            60_000 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// The configured limits: one for every host, and overrides by host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// `delivery.per_host_rate`.
    pub default: Option<Rate>,
    /// `delivery.host_rates`, keyed by lower-case `host` (any port) or `host:port`.
    pub hosts: HashMap<String, Rate>,
}

impl RateLimits {
    /// The limit for a queue key (`host:port`, as `model::url_host_key` writes it): its own
    /// entry, else its host's, else the default.
    pub fn for_host(&self, key: &str) -> Option<Rate> {
        if self.hosts.is_empty() {
            return self.default;
        }
        self.hosts
            .get(key)
            .or_else(|| {
                key.rsplit_once(':')
                    .and_then(|(host, _)| self.hosts.get(host))
            })
            .copied()
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_in_their_unit() {
        for (text, shown) in [
            ("20/s", "20/s"),
            (" 600 / min ", "600/min"),
            ("1/m", "1/min"),
            ("3600/h", "3600/h"),
            ("5/HOUR", "5/h"),
            ("100000/s", "100000/s"),
        ] {
            assert_eq!(Rate::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for bad in [
            "", "20", "20/day", "x/s", "-1/s", "0/s", "100001/s", "20/s/s", "1.5/s",
        ] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.contains(bad.trim()) || bad.is_empty(), "{bad}: {e}");
        }
    }

    /// Starts attempts as soon as the rate allows, from `from_ms`, `n` times: when each started.
    fn starts(rate: Rate, from_ms: u64, n: usize) -> Vec<u64> {
        let (mut tat, mut out) = (0, Vec::new());
        for _ in 0..n {
            let at = rate.eligible_at_ms(tat).max(from_ms);
            tat = rate.after_start(tat, at);
            out.push(at);
        }
        out
    }

    #[test]
    fn a_second_s_worth_at_once_then_evenly_spaced() {
        let r = Rate::parse("4/s").unwrap();
        assert_eq!(
            starts(r, 1_000, 7),
            [1_000, 1_000, 1_000, 1_000, 1_250, 1_500, 1_750]
        );
        // Per minute: one second's worth is 10 at once, then one every 100 ms.
        let r = Rate::parse("600/min").unwrap();
        let s = starts(r, 0, 12);
        assert_eq!(&s[..10], &[0; 10]);
        assert_eq!(&s[10..], &[100, 200]);
        // Slower than one a second: one at once, then one a minute.
        assert_eq!(
            starts(Rate::parse("1/min").unwrap(), 5, 3),
            [5, 60_005, 120_005]
        );
        // Fast rates pace within a millisecond: 5000/s is 5 per ms after the burst.
        let r = Rate::parse("5000/s").unwrap();
        let s = starts(r, 0, 5_010);
        assert!(s[..5_000].iter().all(|&t| t == 0));
        assert_eq!(&s[5_000..], &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_the_rate_plus_its_burst() {
        // Whatever the arrival pattern, in any 1 s window at most burst + count-per-second start.
        let r = Rate::parse("10/s").unwrap();
        let mut tat = 0;
        let mut started = Vec::new();
        for now in (0..5_000u64).step_by(7) {
            while r.eligible_at_ms(tat) <= now {
                tat = r.after_start(tat, now);
                started.push(now);
            }
        }
        for (i, &t) in started.iter().enumerate() {
            let in_window = started[i..].iter().take_while(|&&u| u < t + 1_000).count();
            assert!(in_window <= 20, "{in_window} in the second from {t}");
        }
        // And over the 5 s it kept to the rate: 10 at once, then 10 a second.
        assert!((55..=60).contains(&started.len()), "{}", started.len());
    }

    #[test]
    fn a_host_s_own_entry_wins_over_its_name_then_the_default() {
        let mut hosts = HashMap::new();
        hosts.insert("api.example.com".to_string(), Rate::parse("1/s").unwrap());
        hosts.insert(
            "api.example.com:8443".to_string(),
            Rate::parse("2/s").unwrap(),
        );
        hosts.insert("[::1]:9000".to_string(), Rate::parse("3/s").unwrap());
        let limits = RateLimits {
            default: Some(Rate::parse("50/s").unwrap()),
            hosts,
        };
        let shown = |k: &str| limits.for_host(k).map(|r| r.to_string());
        assert_eq!(shown("api.example.com:443").as_deref(), Some("1/s"));
        assert_eq!(shown("api.example.com:8443").as_deref(), Some("2/s"));
        assert_eq!(shown("[::1]:9000").as_deref(), Some("3/s"));
        assert_eq!(shown("other.example.com:443").as_deref(), Some("50/s"));
        assert_eq!(RateLimits::default().for_host("a:1"), None);
    }
}
