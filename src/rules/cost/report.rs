//! Usage reports: `claw usage` (tokens and cost per day, group or model over a range of days) and
//! the per-group spend of today that `claw status` shows. Read-only.

use anyhow::Result;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

use super::pricing::Prices;
use super::{Usage, local_date};
use crate::infra::store::usage::{self, Filter};

/// How `claw usage` groups its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Day,
    Group,
    Model,
}

/// One line of a report: a day, group or model (or the total).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Line {
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Cost of the priced part; `None` when no part has a price.
    pub cost: Option<f64>,
    /// False when some tokens of this line belong to models without a price.
    pub cost_complete: bool,
}

impl Line {
    /// A line with nothing used.
    pub fn zero(key: &str) -> Line {
        Line::new(key.to_string())
    }

    fn new(key: String) -> Line {
        Line {
            key,
            cost_complete: true,
            ..Line::default()
        }
    }

    fn add(&mut self, model: &str, requests: u64, u: &Usage, prices: &Prices) {
        self.requests += requests;
        self.input_tokens = self.input_tokens.saturating_add(u.input);
        self.output_tokens = self.output_tokens.saturating_add(u.output);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(u.cache_read);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(u.cache_write);
        match prices.cost(model, u) {
            Some(c) => *self.cost.get_or_insert(0.0) += c,
            None if u.total() > 0 => self.cost_complete = false,
            None => {}
        }
    }

    /// Every token of the line.
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    /// The cost for people: `$1.23`, `—` when nothing has a price, `$1.23 + —` when part has none.
    pub fn cost_text(&self, prices: &Prices) -> String {
        match (self.cost, self.cost_complete) {
            (None, _) if self.tokens() == 0 => prices.money(0.0),
            (None, _) => "—".into(),
            (Some(c), true) => prices.money(c),
            (Some(c), false) => format!("{} + —", prices.money(c)),
        }
    }
}

/// What `claw usage` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub group: Option<String>,
    /// First local day included (`YYYY-MM-DD`).
    pub from: String,
    pub by: By,
}

/// The report `claw usage` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub by: By,
    pub group: Option<String>,
    pub currency: String,
    pub lines: Vec<Line>,
    pub total: Line,
    /// Models that were used but have no price (their lines show tokens only).
    pub unpriced_models: Vec<String>,
}

/// Sums the `usage` table from `opts.from` to today.
pub fn usage(conn: &Connection, prices: &Prices, opts: &Options, now: i64) -> Result<Report> {
    let to = super::local_day(now);
    let rows = usage::sum(
        conn,
        &Filter {
            from: &opts.from,
            to: &to,
            folder: opts.group.as_deref(),
            exclude_run: None,
        },
        opts.by == By::Day,
        opts.by == By::Group,
    )?;
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut total = Line::new("total".into());
    let mut unpriced = Vec::new();
    for r in &rows {
        let key = match opts.by {
            By::Day => r.day.clone().unwrap_or_default(),
            By::Group => r.folder.clone().unwrap_or_default(),
            By::Model => r.model.clone(),
        };
        lines
            .entry(key.clone())
            .or_insert_with(|| Line::new(key))
            .add(&r.model, r.requests, &r.usage, prices);
        total.add(&r.model, r.requests, &r.usage, prices);
        if prices.lookup(&r.model).is_none() && !unpriced.contains(&r.model) {
            unpriced.push(r.model.clone());
        }
    }
    unpriced.sort();
    Ok(Report {
        from: opts.from.clone(),
        to,
        by: opts.by,
        group: opts.group.clone(),
        currency: prices.currency().to_string(),
        lines: lines.into_values().collect(),
        total,
        unpriced_models: unpriced,
    })
}

/// Today's usage per group folder.
pub fn today_by_group(
    conn: &Connection,
    prices: &Prices,
    now: i64,
) -> Result<BTreeMap<String, Line>> {
    let today = super::local_day(now);
    let rows = usage::sum(
        conn,
        &Filter {
            from: &today,
            to: &today,
            ..Filter::default()
        },
        false,
        true,
    )?;
    let mut out: BTreeMap<String, Line> = BTreeMap::new();
    for r in rows {
        let folder = r.folder.unwrap_or_default();
        out.entry(folder.clone())
            .or_insert_with(|| Line::new(folder))
            .add(&r.model, r.requests, &r.usage, prices);
    }
    Ok(out)
}

/// Today's usage of all groups together.
pub fn today_total(conn: &Connection, prices: &Prices, now: i64) -> Result<Line> {
    let today = super::local_day(now);
    let rows = usage::sum(
        conn,
        &Filter {
            from: &today,
            to: &today,
            ..Filter::default()
        },
        false,
        false,
    )?;
    let mut total = Line::new("total".into());
    for r in rows {
        total.add(&r.model, r.requests, &r.usage, prices);
    }
    Ok(total)
}

/// The first day of `--since`: `7d` (the last 7 days, today included), `today`, `month` (this
/// calendar month) or a date `YYYY-MM-DD`.
pub fn parse_since(s: &str, now: i64) -> Result<String, String> {
    let today = local_date(now);
    let s = s.trim();
    let day = match s {
        "today" => today,
        "month" => super::month_start(today),
        _ => {
            if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<u32>().ok()) {
                if n == 0 || n > 36_600 {
                    return Err(format!(
                        "--since {s}: the number of days must be between 1 and 36600"
                    ));
                }
                today - chrono::Duration::days(i64::from(n) - 1)
            } else {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                    format!("--since `{s}` is not understood: use 7d, today, month or a date like 2026-12-01")
                })?
            }
        }
    };
    Ok(day.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::cost::pricing::PricingConfig;

    #[test]
    fn since_forms() {
        let now = crate::rules::cost::local_midnight_ms(
            chrono::NaiveDate::from_ymd_opt(2026, 12, 17).unwrap(),
        ) + 1000;
        for (arg, want) in [
            ("today", Ok("2026-12-17")),
            ("1d", Ok("2026-12-17")),
            ("7d", Ok("2026-12-11")),
            ("month", Ok("2026-12-01")),
            ("2026-11-02", Ok("2026-11-02")),
            ("0d", Err(())),
            ("week", Err(())),
            ("2026-13-01", Err(())),
        ] {
            let got = parse_since(arg, now);
            assert_eq!(
                got.as_deref().map_err(|_| ()),
                want.map_err(|_| ()),
                "{arg}"
            );
        }
    }

    #[test]
    fn lines_price_what_they_can_and_say_what_they_cannot() {
        let prices = Prices::new(&PricingConfig::default());
        let mut l = Line::new("x".into());
        assert_eq!(l.cost_text(&prices), "$0.00");
        l.add(
            "mystery",
            1,
            &Usage {
                input: 5,
                ..Usage::default()
            },
            &prices,
        );
        assert_eq!(l.cost_text(&prices), "—");
        l.add(
            "claude-haiku-4-5",
            1,
            &Usage {
                input: 1_000_000,
                ..Usage::default()
            },
            &prices,
        );
        assert_eq!(l.cost_text(&prices), "$1.00 + —");
        assert_eq!((l.requests, l.tokens()), (2, 1_000_005));
    }
}
