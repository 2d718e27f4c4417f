//! The one place that reads the system clock. Everything else takes times as values
//! (milliseconds since the Unix epoch), so decisions stay testable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub fn now_system() -> SystemTime {
    SystemTime::now()
}

pub fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// RFC 3339 with milliseconds, UTC: `2026-11-28T14:06:06.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let nanos = (ms as i128) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses RFC 3339 into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).ok()
}

/// Whether `s` is an RFC 3339 time at all, even one [`parse_rfc3339`] refuses (before 1970).
pub fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_338_766_123), "2025-11-28T14:06:06.123Z");
        assert_eq!(
            parse_rfc3339("2025-11-28T14:06:06.123Z"),
            Some(1_764_338_766_123)
        );
        assert_eq!(
            parse_rfc3339("2025-11-28T15:06:06+01:00"),
            Some(1_764_338_766_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
