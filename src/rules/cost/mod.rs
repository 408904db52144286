//! What model use costs: the tokens the host proxy measured ([`Usage`]), the price table that
//! turns them into money (`pricing`), the budgets that cap them (`budget`), the store-backed
//! budget check with its once-per-period notices (`gate`), and the reports `claw usage` and
//! `claw status` print (`report`).
//!
//! Tokens are only ever what the upstream reported to the proxy on the host; nothing here takes
//! a count from the container. Money is computed when read, from the price table in force, so a
//! corrected price applies to past rows too, and a model without a price shows tokens only.

pub mod budget;
pub mod gate;
pub mod pricing;
pub mod report;

use chrono::{Datelike, Local, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};

/// Tokens of one or more model requests, split the way providers bill them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input billed at the full rate (neither read from nor written to a prompt cache).
    pub input: u64,
    pub output: u64,
    /// Input read from the provider's prompt cache (billed at a fraction of input).
    pub cache_read: u64,
    /// Input written to the provider's prompt cache (Anthropic bills it above input).
    pub cache_write: u64,
}

impl Usage {
    /// Every token the provider counted (cached ones included), as token budgets count them.
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Usage) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
    }
}

/// The local calendar day of `ms` as the `usage` table keys it: `YYYY-MM-DD`.
pub fn local_day(ms: i64) -> String {
    local_date(ms).format("%Y-%m-%d").to_string()
}

/// The local date of `ms` (today if `ms` cannot be shown in local time).
pub fn local_date(ms: i64) -> NaiveDate {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_else(|| Local::now().date_naive())
}

/// The first day of the month `date` is in.
pub fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

/// The first day of the month after `date`'s.
pub fn next_month_start(date: NaiveDate) -> NaiveDate {
    let (y, m) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date)
}

/// Epoch milliseconds of local midnight at the start of `date` (the earliest instant of that
/// date where a daylight-saving jump skips midnight).
pub fn local_midnight_ms(date: NaiveDate) -> i64 {
    let naive = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.timestamp_millis()
        }
        chrono::LocalResult::None => Local
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map_or(0, |t| t.timestamp_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_sums_saturate() {
        let mut a = Usage {
            input: 1,
            output: 2,
            cache_read: 3,
            cache_write: 4,
        };
        assert_eq!(a.total(), 10);
        a.add(&Usage {
            input: u64::MAX,
            ..Usage::default()
        });
        assert_eq!(a.input, u64::MAX);
        assert_eq!(a.total(), u64::MAX);
    }

    #[test]
    fn months_roll_over() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(month_start(d(2026, 12, 17)), d(2026, 12, 1));
        assert_eq!(next_month_start(d(2026, 12, 17)), d(2027, 1, 1));
        assert_eq!(next_month_start(d(2026, 2, 28)), d(2026, 3, 1));
        let m = local_midnight_ms(d(2026, 12, 17));
        assert_eq!(local_day(m), "2026-12-17");
        assert_eq!(local_day(m - 1), "2026-12-16");
    }
}
