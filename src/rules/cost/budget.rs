//! Budgets: caps on what model use may cost per local day and month, in money or in tokens, for
//! one group (`claw group set G --budget-daily …`) and for everything together (`[budget]` in
//! `claw.toml`). This file holds the pure part: which budgets apply to a run, whether one is
//! spent, and every sentence a budget makes claw say. Reading the spend from the store and
//! sending notices is `gate`; refusing model requests is the proxy's (`proxy::meter`).
//!
//! A budget is spent when what was used reaches the cap. The proxy checks before each model
//! request, so a request already in flight when the cap is reached completes: a budget can be
//! overshot by at most the requests in flight at that moment.

use serde::{Deserialize, Serialize};

use super::pricing::Prices;
use super::{Usage, local_date, local_day, local_midnight_ms, month_start, next_month_start};
use crate::infra::store::groups::Group;

/// Warnings go to the main chat when a budget passes this share of its cap.
pub const WARN_AT: f64 = 0.8;

/// Caps as the owner writes them: `[budget]` (overall) or a group's settings. Absent or 0 means
/// no cap of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Caps {
    /// Money per local day, in the pricing currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<f64>,
    /// Money per local calendar month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<f64>,
    /// Tokens per local day (input, output and cache tokens together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    /// Tokens per local calendar month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_tokens: Option<u64>,
}

impl Caps {
    /// Whether no cap is set.
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    /// The caps that are set, with their periods.
    pub fn list(&self) -> Vec<(Period, Limit)> {
        let mut out = Vec::new();
        let money = |v: Option<f64>| v.filter(|v| *v > 0.0).map(Limit::Money);
        let tokens = |v: Option<u64>| v.filter(|v| *v > 0).map(Limit::Tokens);
        for (period, limit) in [
            (Period::Day, money(self.daily)),
            (Period::Day, tokens(self.daily_tokens)),
            (Period::Month, money(self.monthly)),
            (Period::Month, tokens(self.monthly_tokens)),
        ] {
            if let Some(l) = limit {
                out.push((period, l));
            }
        }
        out
    }

    /// A message naming the bad value (`what` is where it is set), or `None`.
    pub fn problem(&self, what: &str) -> Option<String> {
        for (key, v) in [("daily", self.daily), ("monthly", self.monthly)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Some(format!(
                    "{what} {key} must be an amount of at least 0 (0 means no budget)"
                ));
            }
        }
        None
    }
}

/// The window a budget counts in, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// `daily` or `monthly`, as in config keys.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }

    /// `for today` / `for this month`.
    fn phrase(self) -> &'static str {
        match self {
            Period::Day => "for today",
            Period::Month => "for this month",
        }
    }

    /// The first and last local days (`YYYY-MM-DD`) of the period containing `now`.
    pub fn days(self, now: i64) -> (String, String) {
        let today = local_date(now);
        match self {
            Period::Day => (local_day(now), local_day(now)),
            Period::Month => {
                let last = next_month_start(today).pred_opt().unwrap_or(today);
                (
                    month_start(today).format("%Y-%m-%d").to_string(),
                    last.format("%Y-%m-%d").to_string(),
                )
            }
        }
    }

    /// When the period containing `now` began (epoch ms).
    pub fn start_ms(self, now: i64) -> i64 {
        let today = local_date(now);
        local_midnight_ms(match self {
            Period::Day => today,
            Period::Month => month_start(today),
        })
    }

    /// When the next period begins, after "resumes": `at 00:00` or `on 2027-01-01`.
    pub fn resumes_when(self, now: i64) -> String {
        match self {
            Period::Day => format!("at {}", self.resumes(now)),
            Period::Month => format!("on {}", self.resumes(now)),
        }
    }

    /// When the next period begins, for people: `00:00` or `2027-01-01`.
    pub fn resumes(self, now: i64) -> String {
        match self {
            Period::Day => "00:00".into(),
            Period::Month => next_month_start(local_date(now))
                .format("%Y-%m-%d")
                .to_string(),
        }
    }
}

/// A cap in money (the pricing currency) or in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    Money(f64),
    Tokens(u64),
}

/// What was used in a period: every token, and the money of those with a price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spent {
    pub tokens: u64,
    pub money: f64,
    /// Tokens of models without a price (a money budget cannot see them).
    pub unpriced_tokens: u64,
}

impl Spent {
    /// Adds `u` of `model`, priced by `prices`.
    pub fn add(&mut self, model: &str, u: &Usage, prices: &Prices) {
        self.tokens = self.tokens.saturating_add(u.total());
        match prices.cost(model, u) {
            Some(c) => self.money += c,
            None => self.unpriced_tokens = self.unpriced_tokens.saturating_add(u.total()),
        }
    }

    /// The spend of rows of (model, usage).
    pub fn of(rows: &[(String, Usage)], prices: &Prices) -> Spent {
        let mut s = Spent::default();
        for (model, u) in rows {
            s.add(model, u, prices);
        }
        s
    }

    /// `self` plus `other`.
    pub fn plus(mut self, other: &Spent) -> Spent {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.money += other.money;
        self.unpriced_tokens = self.unpriced_tokens.saturating_add(other.unpriced_tokens);
        self
    }
}

/// One budget that applies to a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// The group it caps, or `None` for the overall budget (all groups together).
    pub folder: Option<String>,
    /// The group's name for notices (one clean line), empty for the overall budget.
    pub name: String,
    pub period: Period,
    pub limit: Limit,
}

impl Budget {
    /// A stable name for marks and audit rows: `group:family:daily:money`, `overall:monthly:tokens`.
    pub fn id(&self) -> String {
        let scope = match &self.folder {
            Some(f) => format!("group:{f}"),
            None => "overall".into(),
        };
        let unit = match self.limit {
            Limit::Money(_) => "money",
            Limit::Tokens(_) => "tokens",
        };
        format!("{scope}:{}:{unit}", self.period.name())
    }

    /// What counts against this budget, in its own unit (money or tokens).
    pub fn used(&self, s: &Spent) -> f64 {
        match self.limit {
            Limit::Money(_) => s.money,
            Limit::Tokens(_) => s.tokens as f64,
        }
    }

    /// Used as a share of the cap (1.0 = spent).
    pub fn fraction(&self, s: &Spent) -> f64 {
        let cap = match self.limit {
            Limit::Money(m) => m,
            Limit::Tokens(t) => t as f64,
        };
        if cap <= 0.0 {
            return 0.0;
        }
        self.used(s) / cap
    }

    /// Whether the cap is reached.
    pub fn is_spent(&self, s: &Spent) -> bool {
        self.fraction(s) >= 1.0
    }

    /// The cap for people: `$2.00`, `100,000 tokens`.
    pub fn cap_text(&self, prices: &Prices) -> String {
        match self.limit {
            Limit::Money(m) => prices.money(m),
            Limit::Tokens(t) => format!("{} tokens", thousands(t)),
        }
    }

    fn used_text(&self, s: &Spent, prices: &Prices) -> String {
        match self.limit {
            Limit::Money(_) => prices.money(s.money),
            Limit::Tokens(_) => format!("{} tokens", thousands(s.tokens)),
        }
    }

    /// Who uses it, as the start of a sentence: `Family` or `The assistant`.
    fn who(&self) -> String {
        match &self.folder {
            Some(_) => self.name.clone(),
            None => "The assistant".into(),
        }
    }

    /// How the owner raises it.
    pub fn raise_hint(&self) -> String {
        match &self.folder {
            Some(f) => {
                let flag = match self.limit {
                    Limit::Money(_) => format!("--budget-{}", self.period.name()),
                    Limit::Tokens(_) => format!("--budget-{}-tokens", self.period.name()),
                };
                format!("claw group set {f} {flag} …")
            }
            None => format!("[budget] {} in claw.toml", self.key()),
        }
    }

    /// The `[budget]` key that sets it.
    fn key(&self) -> String {
        match self.limit {
            Limit::Money(_) => self.period.name().to_string(),
            Limit::Tokens(_) => format!("{}_tokens", self.period.name()),
        }
    }

    /// `its $2.00` or `its overall budget of $5.00`.
    fn its(&self, prices: &Prices) -> String {
        match &self.folder {
            Some(_) => format!("its {}", self.cap_text(prices)),
            None => format!("its overall budget of {}", self.cap_text(prices)),
        }
    }
}

/// The overall budgets (all groups together).
pub fn applicable_overall(overall: &Caps) -> Vec<Budget> {
    overall
        .list()
        .into_iter()
        .map(|(period, limit)| Budget {
            folder: None,
            name: String::new(),
            period,
            limit,
        })
        .collect()
}

/// The budgets that apply to a run of `group`: its own caps, then the overall ones.
pub fn applicable(overall: &Caps, group: &Group) -> Vec<Budget> {
    let name = crate::rules::limits::display_name(group);
    let mut out: Vec<Budget> = group
        .config
        .budget
        .list()
        .into_iter()
        .map(|(period, limit)| Budget {
            folder: Some(group.folder.clone()),
            name: name.clone(),
            period,
            limit,
        })
        .collect();
    out.extend(applicable_overall(overall));
    out
}

/// Of `states`, the spent budget to name: one that lasts the month before one that ends tonight,
/// so "it resumes at 00:00" is never said while a monthly budget still holds.
pub fn blocking(states: &[(Budget, Spent)]) -> Option<&(Budget, Spent)> {
    let mut spent = states.iter().filter(|(b, s)| b.is_spent(s));
    let first = spent.clone().next();
    spent.find(|(b, _)| b.period == Period::Month).or(first)
}

/// The proxy's answer to a model request refused because `b` is spent.
pub fn refusal(b: &Budget, prices: &Prices, now: i64) -> String {
    let scope = match &b.folder {
        Some(_) => format!("group {}", b.name),
        None => "the assistant".into(),
    };
    format!(
        "claw: {scope} has used {} {}; it resumes {} or when the owner raises it ({}). \
         No model request is forwarded until then: stop and do not retry.",
        b.its(prices),
        b.period.phrase(),
        b.period.resumes_when(now),
        b.raise_hint()
    )
}

/// Why dispatch, run-group and status do not start a run of the group.
pub fn reason(b: &Budget, s: &Spent, prices: &Prices, now: i64) -> String {
    let whose = match &b.folder {
        Some(_) => "group",
        None => "overall",
    };
    format!(
        "budget: {} of the {whose} {} budget of {} used; resumes {} ({})",
        b.used_text(s, prices),
        b.period.name(),
        b.cap_text(prices),
        b.period.resumes_when(now),
        b.raise_hint()
    )
}

/// What the group's chat is told when `b` is spent.
pub fn chat_notice(b: &Budget, prices: &Prices, now: i64) -> String {
    format!(
        "{} has used {} {}; it resumes {} or when the owner raises it.",
        b.who(),
        b.its(prices),
        b.period.phrase(),
        b.period.resumes_when(now)
    )
}

/// What the owner's main chat is told when `b` is spent.
pub fn main_notice(b: &Budget, s: &Spent, prices: &Prices, now: i64) -> String {
    let waits = match &b.folder {
        Some(_) => "its messages wait",
        None => "no group runs",
    };
    format!(
        "Budget: {} has used {} {} ({} so far); {waits} until {}. Raise it with `{}`; \
         `claw usage` shows where it went.",
        b.who(),
        b.its(prices),
        b.period.phrase(),
        b.used_text(s, prices),
        b.period.resumes(now),
        b.raise_hint()
    )
}

/// The main chat's warning when `b` passes [`WARN_AT`].
pub fn warning(b: &Budget, s: &Spent, prices: &Prices) -> String {
    format!(
        "Budget: {} has used {:.0}% of {} {} ({}). `claw usage{}` shows where it went.",
        b.who(),
        (b.fraction(s) * 100.0).floor(),
        b.its(prices),
        b.period.phrase(),
        b.used_text(s, prices),
        b.folder
            .as_ref()
            .map(|f| format!(" --group {f}"))
            .unwrap_or_default()
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
