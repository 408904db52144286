//! Cron expressions: the standard 5-field crontab and the maths for its next firing time.
//!
//! Owns which cron syntax claw accepts (minute hour day-of-month month day-of-week, weekdays 0–7
//! with 0 and 7 Sunday, names like MON/JAN, `@daily`-style aliases) and how the next time is found
//! in a task's IANA zone. It never accepts a seconds or year field or croner's extensions (`L`,
//! `W`, `#`, `+`, `?`): a pattern that means something different elsewhere is refused, not guessed.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

const ALIASES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Parse a standard 5-field cron expression; the error says what is wrong and what is expected.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let expr = expr.trim();
    let lower = expr.to_ascii_lowercase();
    let expr = if lower == "@midnight" { "@daily" } else { expr };
    if expr.starts_with('@') {
        if !ALIASES.contains(&lower.as_str()) {
            return Err(format!(
                "cron alias `{expr}` is unknown: use @hourly, @daily, @weekly, @monthly or @yearly, or 5 fields"
            ));
        }
    } else {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() == 6 || fields.len() == 7 {
            return Err(format!(
                "cron `{expr}` has {} fields; claw uses standard 5-field cron (minute hour day month weekday) with no seconds or year field",
                fields.len()
            ));
        }
        if fields.len() != 5 {
            return Err(format!(
                "cron `{expr}` must have 5 fields: minute hour day-of-month month day-of-week"
            ));
        }
        if let Some(c) = expr.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/' | ' ' | '\t'))
        }) {
            return Err(format!(
                "cron `{expr}` uses `{c}`, which standard cron does not have: use numbers, names, `*`, `,`, `-` and `/`"
            ));
        }
        // Letters are only month and weekday names; croner's `L` and `W` are single letters.
        for f in &fields {
            for word in f.split(|c: char| !c.is_ascii_alphabetic()) {
                if !word.is_empty() && word.len() != 3 {
                    return Err(format!(
                        "cron `{expr}` has `{word}`: only three-letter month or weekday names are allowed"
                    ));
                }
            }
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron `{expr}` is not valid: {e}"))
}

/// The first firing strictly after `after_ms`, in zone `tz`, as epoch milliseconds (always a
/// whole second).
pub fn next_after(cron: &Cron, tz: Tz, after_ms: i64) -> Option<i64> {
    // croner keeps the start's sub-second part in every occurrence it finds; firings are on the
    // second, so search from the whole second (nothing fires strictly inside it).
    let start = Utc
        .timestamp_opt(after_ms.div_euclid(1000), 0)
        .single()?
        .with_timezone(&tz);
    cron.find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp() * 1000)
}

/// The shortest gap, in seconds, between consecutive firings among the next `count` firings after
/// `after_ms` (`None` if it fires fewer than twice). Every firing day has the same minutes and
/// hours, so a gap shorter than a day shows up within a few days' firings; a DST jump can make
/// one real gap shorter than any seen here, once a year.
pub fn shortest_gap_secs(cron: &Cron, tz: Tz, after_ms: i64, count: usize) -> Option<i64> {
    let mut prev = next_after(cron, tz, after_ms)?;
    let mut best: Option<i64> = None;
    for _ in 1..count {
        let Some(t) = next_after(cron, tz, prev) else {
            break;
        };
        let gap = (t - prev) / 1000;
        best = Some(best.map_or(gap, |b| b.min(gap)));
        prev = t;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firings_are_whole_seconds_whatever_the_start() {
        let cron = parse("0 9 * * *").unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-12-03 07:59:59.734 UTC is 08:59:59.734 in Berlin.
        let after = Utc
            .with_ymd_and_hms(2026, 12, 3, 7, 59, 59)
            .unwrap()
            .timestamp_millis()
            + 734;
        let nine = Utc
            .with_ymd_and_hms(2026, 12, 3, 8, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(next_after(&cron, tz, after), Some(nine));
        // From inside the firing second itself, the next one is a day later, still on the second.
        assert_eq!(next_after(&cron, tz, nine + 500), Some(nine + 86_400_000));
        assert_eq!(next_after(&cron, tz, nine - 1), Some(nine));
    }

    #[test]
    fn accepts_standard_and_refuses_the_rest() {
        for ok in [
            "* * * * *",
            "0 9 * * 1-5",
            "*/15 * * * *",
            "0 0 1 * 0",
            "0 0 * * 7",
            "5,10 1-3/2 * JAN-MAR mon",
            "@daily",
            "@Hourly",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
        for (bad, want) in [
            ("0 0 9 * * 1", "6 fields"),
            ("0 0 9 * * 1 2030", "7 fields"),
            ("* * * *", "5 fields"),
            ("60 * * * *", "not valid"),
            ("* 24 * * *", "not valid"),
            ("* * 32 * *", "not valid"),
            ("* * 0 * *", "not valid"),
            ("* * * 13 *", "not valid"),
            ("* * * * 8", "not valid"),
            ("0 0 L * *", "three-letter"),
            ("0 0 * * 5#2", "`#`"),
            ("0 0 1 * +MON", "`+`"),
            ("0 0 ? * *", "`?`"),
            ("@reboot", "unknown"),
            ("", "5 fields"),
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn shortest_gaps() {
        let tz: Tz = "UTC".parse().unwrap();
        // 2026-03-02 10:17:00 UTC, a Monday.
        let now = 1_772_446_620_000;
        for (expr, want) in [
            ("* * * * *", Some(60)),
            ("*/5 * * * *", Some(300)),
            ("*/15 * * * *", Some(900)),
            ("0 * * * *", Some(3600)),
            ("0,1 9 * * *", Some(60)),
            ("58 9,10 * * *", Some(3600)),
            // Crossing the hour: 9:59 then 10:00.
            ("0,59 9,10 * * *", Some(60)),
            // Crossing midnight on consecutive days: 23:58 then 00:01.
            ("1,58 0,23 * * *", Some(180)),
            ("0 9 * * 1-5", Some(86_400)),
            ("@daily", Some(86_400)),
            // Every minute, but only on the first of January: still every minute when it fires.
            ("* * 1 1 *", Some(60)),
            ("0 0 1 1 *", Some(365 * 86_400)),
        ] {
            let c = parse(expr).unwrap();
            assert_eq!(shortest_gap_secs(&c, tz, now, 100), want, "{expr}");
        }
    }
}
