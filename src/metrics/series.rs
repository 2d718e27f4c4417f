//! Per-minute attempt counts and latencies for the last day, kept in memory for the dashboard's
//! charts (`GET /v1/series`).
//!
//! A ring of one slot per minute: recording an attempt touches one slot under a short lock, and
//! a slot left over from an older day is reset when its minute comes round again. It starts empty
//! when the process starts, like the Prometheus counters, and never scans the store. Times come
//! in as values, so it never reads the clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::LATENCY_BUCKETS;

/// How many minutes are kept: one day.
pub const MINUTES: u64 = 1440;
/// Latency buckets per slot: one per bound in `LATENCY_BUCKETS`, then one for slower attempts.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// Shared by the deliverer (which records) and the admin API (which reads). Cheap to clone.
#[derive(Clone, Default)]
pub struct AttemptSeries {
    slots: Arc<Mutex<Vec<Slot>>>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Minutes since the epoch this slot holds; a slot with another minute counts as empty.
    minute: u64,
    attempts: u32,
    successes: u32,
    latency: [u32; BUCKETS],
}

/// One minute of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Start of the minute, in milliseconds since the epoch.
    pub at_ms: u64,
    pub attempts: u32,
    pub successes: u32,
}

/// The last `minutes` minutes up to now, oldest first, and the latency histogram over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub points: Vec<Point>,
    /// Attempts per latency bucket (not cumulative): `latency[i]` took at most
    /// `LATENCY_BUCKETS[i]` seconds and more than the bound before it; the last entry is slower
    /// than every bound.
    pub latency: Vec<u64>,
}

impl AttemptSeries {
    /// Counts one attempt that finished at `at_ms` after `duration`.
    pub fn record(&self, at_ms: u64, success: bool, duration: Duration) {
        let minute = at_ms / 60_000;
        let bucket = latency_bucket(duration);
        let mut slots = self.lock();
        if slots.is_empty() {
            slots.resize(MINUTES as usize, Slot::default());
        }
        let slot = &mut slots[(minute % MINUTES) as usize];
        if slot.minute != minute {
            *slot = Slot {
                minute,
                ..Slot::default()
            };
        }
        slot.attempts += 1;
        slot.successes += u32::from(success);
        slot.latency[bucket] += 1;
    }

    /// The `minutes` minutes ending with the one holding `now_ms` (1 to `MINUTES`).
    pub fn window(&self, now_ms: u64, minutes: u64) -> Window {
        let minutes = minutes.clamp(1, MINUTES);
        let last = now_ms / 60_000;
        let first = last.saturating_sub(minutes - 1);
        let slots = self.lock();
        let mut latency = vec![0u64; BUCKETS];
        let points = (first..=last)
            .map(|minute| {
                let slot = slots
                    .get((minute % MINUTES) as usize)
                    .filter(|s| s.minute == minute && s.attempts > 0);
                if let Some(s) = slot {
                    for (sum, n) in latency.iter_mut().zip(s.latency) {
                        *sum += u64::from(n);
                    }
                }
                Point {
                    at_ms: minute * 60_000,
                    attempts: slot.map_or(0, |s| s.attempts),
                    successes: slot.map_or(0, |s| s.successes),
                }
            })
            .collect();
        Window { points, latency }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panic while holding this lock leaves counts, never a broken invariant.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The index of the first bucket whose bound is at least `duration`.
fn latency_bucket(duration: Duration) -> usize {
    let secs = duration.as_secs_f64();
    LATENCY_BUCKETS
        .iter()
        .position(|&bound| secs <= bound)
        .unwrap_or(LATENCY_BUCKETS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn buckets_follow_the_bounds() {
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_micros(500), 0),
            (Duration::from_micros(501), 1),
            (Duration::from_millis(30), 6),
            (Duration::from_secs(30), LATENCY_BUCKETS.len() - 1),
            (Duration::from_secs(31), LATENCY_BUCKETS.len()),
        ];
        for (duration, bucket) in cases {
            assert_eq!(latency_bucket(duration), bucket, "{duration:?}");
        }
    }

    #[test]
    fn counts_per_minute_oldest_first() {
        let s = AttemptSeries::default();
        let t0 = 1_000 * MIN;
        s.record(t0 + 5, true, Duration::from_millis(3));
        s.record(t0 + 59_999, false, Duration::from_millis(3));
        s.record(t0 + 2 * MIN, true, Duration::from_secs(60));
        let w = s.window(t0 + 2 * MIN + 10, 3);
        let got: Vec<_> = w
            .points
            .iter()
            .map(|p| (p.at_ms, p.attempts, p.successes))
            .collect();
        assert_eq!(
            got,
            vec![(t0, 2, 1), (t0 + MIN, 0, 0), (t0 + 2 * MIN, 1, 1)]
        );
        assert_eq!(w.latency.iter().sum::<u64>(), 3);
        assert_eq!(w.latency[latency_bucket(Duration::from_millis(3))], 2);
        assert_eq!(w.latency[LATENCY_BUCKETS.len()], 1);
    }

    #[test]
    fn a_slot_from_yesterday_counts_as_empty_and_is_reset() {
        let s = AttemptSeries::default();
        let t0 = 5_000 * MIN;
        s.record(t0, true, Duration::ZERO);
        let a_day_later = t0 + MINUTES * MIN;
        // Same slot, a day on: the old count is not shown...
        assert_eq!(s.window(a_day_later, 1).points[0].attempts, 0);
        // ...and is replaced, not added to.
        s.record(a_day_later, false, Duration::ZERO);
        let p = s.window(a_day_later, 1).points[0];
        assert_eq!((p.attempts, p.successes), (1, 0));
    }

    #[test]
    fn window_length_is_clamped() {
        let s = AttemptSeries::default();
        assert_eq!(s.window(10 * MIN, 0).points.len(), 1);
        assert_eq!(
            s.window(MINUTES * MIN * 3, 10_000).points.len(),
            MINUTES as usize
        );
        // Near the epoch the window is shorter rather than wrapping.
        assert_eq!(s.window(30 * MIN, 60).points.len(), 31);
    }
}
