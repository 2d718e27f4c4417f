//! Rate limits per destination host (`delivery.per_host_rate`, `delivery.host_rates`): at most
//! N attempts started per second, minute or hour, for receivers that limit their callers.
//! Pure: the queue (`schedule.rs`) keeps one number per paced host and asks this module when
//! that host may start its next attempt.
//!
//! Attempts are spaced evenly at the rate, with no burst: "600/min" is one every 100 ms, so no
//! window of a minute (or of a second: 10) ever holds more than the limit, whatever the
//! receiver's window is. Each host keeps one "theoretical arrival time" (GCRA with no burst
//! tolerance): the earliest time its next attempt may start.

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

    /// Microseconds between two attempts at this rate, rounded up (never faster than the
    /// rate), at least 10.
    fn interval_us(self) -> u64 {
        (self.per_ms * 1_000)
            .div_ceil(u64::from(self.count))
            .max(1_000_000 / MAX_PER_SECOND)
    }

    /// Given the host's theoretical arrival time (`tat_us`, 0 for a host not yet paced), the
    /// millisecond in which it may start its next attempt. (Rounded down: the clock the
    /// queue reads counts milliseconds, and a rate over 1000/s starts several in one.)
    pub fn eligible_at_ms(self, tat_us: u64) -> u64 {
        tat_us / 1_000
    }

    /// Gives back the place an attempt took (`after_start`) when it sent nothing (its
    /// endpoint was disabled, its delivery gone), so the host's next one is not held for it.
    pub fn refund(self, tat_us: u64) -> u64 {
        tat_us.saturating_sub(self.interval_us())
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
    fn attempts_are_evenly_spaced_without_a_burst() {
        let r = Rate::parse("4/s").unwrap();
        assert_eq!(starts(r, 1_000, 5), [1_000, 1_250, 1_500, 1_750, 2_000]);
        let r = Rate::parse("600/min").unwrap();
        assert_eq!(starts(r, 0, 4), [0, 100, 200, 300]);
        assert_eq!(
            starts(Rate::parse("1/min").unwrap(), 5, 3),
            [5, 60_005, 120_005]
        );
        // Over 1000/s, several start in one millisecond: 5000/s is 5 per ms.
        let s = starts(Rate::parse("5000/s").unwrap(), 0, 12);
        assert_eq!(s, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]);
        // A refund gives the place back.
        let tat = r.after_start(0, 0);
        assert_eq!(r.eligible_at_ms(r.refund(tat)), 0);
    }

    #[test]
    fn no_window_of_one_unit_ever_holds_more_than_the_rate() {
        for (text, unit_ms, count) in [
            ("10/s", 1_000u64, 10usize),
            ("120/min", 60_000, 120),
            ("3000/s", 1_000, 3000),
        ] {
            let r = Rate::parse(text).unwrap();
            let mut tat = 0;
            let mut started = Vec::new();
            // Work always waiting and the queue asked every millisecond (it wakes at the next
            // eligible one), then again after a quiet spell.
            for now in (0..3 * unit_ms).chain(5 * unit_ms..7 * unit_ms) {
                while r.eligible_at_ms(tat) <= now {
                    tat = r.after_start(tat, now);
                    started.push(now);
                }
            }
            for (i, &t) in started.iter().enumerate() {
                let in_window = started[i..]
                    .iter()
                    .take_while(|&&u| u < t + unit_ms)
                    .count();
                assert!(
                    in_window <= count,
                    "{text}: {in_window} in the unit from {t}"
                );
            }
            assert!(
                started.len() >= 4 * count * 9 / 10,
                "{text}: {}",
                started.len()
            );
        }
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
