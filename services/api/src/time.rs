//! Timestamps on the wire: RFC 3339 UTC with milliseconds, `2025-01-15T10:30:00.000Z`.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format_millis(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(format_millis(1_736_937_000_000), "2025-01-15T10:30:00.000Z");
        assert_eq!(parse_rfc3339_millis("2025-01-15T11:30:00.123+01:00"), Some(1_736_937_000_123));
        assert_eq!(parse_rfc3339_millis("2025-01-15"), None);
    }
}
