//! Cron maths: weekdays in a zone across both DST changes, steps, and the day-of-month OR
//! day-of-week rule. Expected times are computed independently from the calendar.

use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use claw::steps::schedule::cron;

fn ms(s: &str) -> i64 {
    claw::infra::time::parse_rfc3339(s).unwrap()
}

fn firings(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<i64> {
    let c = cron::parse(expr).unwrap();
    let mut t = ms(from);
    (0..n)
        .map(|_| {
            t = cron::next_after(&c, tz, t).unwrap();
            t
        })
        .collect()
}

/// 09:00 local on every weekday between two dates, as epoch ms, via chrono-tz.
fn weekdays_at_nine(tz: Tz, from: NaiveDate, to: NaiveDate) -> Vec<i64> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .map(|d| {
            tz.from_local_datetime(&d.and_hms_opt(9, 0, 0).unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect()
}

#[test]
fn weekdays_at_nine_in_berlin_across_both_dst_changes() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    // Spring: clocks go forward on Sunday 29 March 2026.
    let got = firings("0 9 * * 1-5", berlin, "2026-03-25T12:00:00Z", 6);
    let want = weekdays_at_nine(
        berlin,
        NaiveDate::from_ymd_opt(2026, 3, 26).unwrap(),
        NaiveDate::from_ymd_opt(2026, 4, 2).unwrap(),
    );
    assert_eq!(got, want);
    // Before the change 09:00 is 08:00 UTC, after it 07:00 UTC.
    assert_eq!(got[0], ms("2026-03-26T08:00:00Z"));
    assert_eq!(got[2], ms("2026-03-30T07:00:00Z"));
    // Autumn: clocks go back on Sunday 25 October 2026.
    let got = firings("0 9 * * 1-5", berlin, "2026-10-21T12:00:00Z", 6);
    let want = weekdays_at_nine(
        berlin,
        NaiveDate::from_ymd_opt(2026, 10, 22).unwrap(),
        NaiveDate::from_ymd_opt(2026, 10, 29).unwrap(),
    );
    assert_eq!(got, want);
    assert_eq!(got[1], ms("2026-10-23T07:00:00Z"));
    assert_eq!(got[2], ms("2026-10-26T08:00:00Z"));
}

#[test]
fn every_fifteen_minutes() {
    let got = firings("*/15 * * * *", Tz::UTC, "2026-05-05T10:07:30Z", 5);
    let want: Vec<i64> = [
        "2026-05-05T10:15:00Z",
        "2026-05-05T10:30:00Z",
        "2026-05-05T10:45:00Z",
        "2026-05-05T11:00:00Z",
        "2026-05-05T11:15:00Z",
    ]
    .iter()
    .map(|s| ms(s))
    .collect();
    assert_eq!(got, want);
    // Exactly on a slot, the next one is the following slot.
    assert_eq!(
        firings("*/15 * * * *", Tz::UTC, "2026-05-05T10:15:00Z", 1),
        vec![ms("2026-05-05T10:30:00Z")]
    );
}

#[test]
fn first_of_month_or_sunday() {
    // Every midnight that is the 1st or a Sunday during 2026, from the calendar.
    let want: Vec<i64> = NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .iter_days()
        .take_while(|d| d.year() == 2026)
        .filter(|d| d.day() == 1 || d.weekday() == Weekday::Sun)
        .map(|d| {
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
                .timestamp_millis()
        })
        .collect();
    let got = firings("0 0 1 * 0", Tz::UTC, "2025-12-31T23:00:00Z", want.len());
    assert_eq!(got, want);
    // Both kinds are present: a 1st that is not a Sunday and a Sunday that is not the 1st.
    assert!(want.contains(&ms("2026-04-01T00:00:00Z")));
    assert!(want.contains(&ms("2026-01-04T00:00:00Z")));
    // 7 is Sunday too.
    assert_eq!(
        firings("0 0 * * 7", Tz::UTC, "2026-01-01T00:00:00Z", 3),
        firings("0 0 * * 0", Tz::UTC, "2026-01-01T00:00:00Z", 3)
    );
}

#[test]
fn schedules_are_checked_at_creation() {
    let now = ms("2026-06-01T12:00:00Z");
    let c = claw::steps::schedule::check("once", "2026-06-01 15:30", Some("Europe/Berlin"), now)
        .unwrap();
    assert_eq!(c.first_run, ms("2026-06-01T13:30:00Z"));
    assert_eq!(c.value, "2026-06-01T13:30:00Z");
    let c = claw::steps::schedule::check("once", "2026-06-02T00:00:00+02:00", None, now).unwrap();
    assert_eq!(c.first_run, ms("2026-06-01T22:00:00Z"));
    assert!(
        claw::steps::schedule::check("once", "2026-06-01 11:59", Some("UTC"), now)
            .unwrap_err()
            .contains("in the past")
    );
    // 02:30 on 29 March 2026 does not exist in Berlin.
    assert!(
        claw::steps::schedule::check(
            "once",
            "2026-03-29 02:30",
            Some("Europe/Berlin"),
            ms("2026-01-01T00:00:00Z")
        )
        .unwrap_err()
        .contains("does not exist")
    );
    let c = claw::steps::schedule::check("interval", "90", Some("UTC"), now).unwrap();
    assert_eq!(c.first_run, now + 90_000);
    for bad in ["0", "-5", "1.5", "ten"] {
        assert!(
            claw::steps::schedule::check("interval", bad, Some("UTC"), now).is_err(),
            "{bad}"
        );
    }
}
