//! Time as the store keeps it: integer milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, Local, TimeZone, Utc};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339 (UTC, seconds) for JSON output.
pub fn rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => ms.to_string(),
    }
}

/// Local wall-clock time for people, e.g. `2026-11-21 10:00`.
pub fn local_short(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => ms.to_string(),
    }
}

/// "3m ago" / "in 5s" relative to now, for status listings.
pub fn ago(ms: i64) -> String {
    // Rounded, not truncated: a retry due in 4.98 s is "in 5s", as configured.
    let d = ((now_ms() - ms) as f64 / 1000.0).round() as i64;
    let (n, future) = if d < 0 { (-d, true) } else { (d, false) };
    let s = if n < 60 {
        format!("{n}s")
    } else if n < 3600 {
        format!("{}m", n / 60)
    } else if n < 86_400 {
        format!("{}h", n / 3600)
    } else {
        format!("{}d", n / 86_400)
    };
    if future {
        format!("in {s}")
    } else {
        format!("{s} ago")
    }
}

/// Parse an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The local calendar date of a time, `YYYY-MM-DD` (inbox folders are named by it).
pub fn local_date(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".into(),
    }
}
