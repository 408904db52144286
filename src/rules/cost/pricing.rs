//! The price table: what a million tokens of each kind cost per model, built in for current
//! Anthropic and OpenAI models and overridable in `[pricing]` of `claw.toml`.
//!
//! A model is looked up by its exact name, then by its family name (the same name without a
//! provider prefix such as `anthropic/`, a `@…` or `[…]` tag, or a date or `-latest` suffix, so
//! `claude-sonnet-4-5-20250929` is priced as `claude-sonnet-4-5`), then by the owner's own
//! prefix patterns (`"gpt-5*"` in config). Nothing else matches: a model not found has no price,
//! and is shown with tokens only (cost `—`), never priced by a guess from a neighbour.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::Usage;

/// Prices of one model per million tokens, in the configured currency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Price {
    /// What `u` costs at these prices.
    pub fn cost(&self, u: &Usage) -> f64 {
        (u.input as f64 * self.input
            + u.output as f64 * self.output
            + u.cache_read as f64 * self.cache_read
            + u.cache_write as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// One model's prices as written in `[pricing.models."NAME"]`; cache prices default to Anthropic's
/// rule (read 0.1 × input, write 1.25 × input).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    fn resolve(&self) -> Price {
        Price {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read.unwrap_or(self.input * 0.1),
            cache_write: self.cache_write.unwrap_or(self.input * 1.25),
        }
    }
}

/// `[pricing]` in `claw.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// Currency code of every price and money budget (default `USD`).
    pub currency: String,
    /// How amounts are written (default: `$` for USD, `€` for EUR, `£` for GBP, else the code).
    pub symbol: Option<String>,
    /// The built-in prices are in US dollars: with another currency they apply only multiplied
    /// by this rate (units of `currency` per dollar); without it only `models` has prices.
    pub usd_rate: Option<f64>,
    /// Prices per model name, replacing the built-in ones; a name ending in `*` is a prefix.
    pub models: BTreeMap<String, ModelPrice>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            currency: "USD".into(),
            symbol: None,
            usd_rate: None,
            models: BTreeMap::new(),
        }
    }
}

impl PricingConfig {
    /// A message naming what is wrong, or `None` if the prices make sense.
    pub fn problem(&self) -> Option<String> {
        let bad = |v: f64| !v.is_finite() || v < 0.0;
        if self.currency.trim().is_empty() {
            return Some("pricing.currency must not be empty".into());
        }
        if self.usd_rate.is_some_and(|r| bad(r) || r == 0.0) {
            return Some("pricing.usd_rate must be a positive number".into());
        }
        for (name, p) in &self.models {
            let all = [p.input, p.output]
                .into_iter()
                .chain(p.cache_read)
                .chain(p.cache_write);
            if all.into_iter().any(bad) {
                return Some(format!(
                    "pricing.models.\"{name}\": prices must be numbers of at least 0 (per million tokens)"
                ));
            }
            if name.trim_end_matches('*').is_empty() {
                return Some("pricing.models: a model name must not be empty or only `*`".into());
            }
        }
        None
    }
}

/// Built-in prices in US dollars per million tokens: (model, input, output, cache read, cache
/// write). Anthropic: platform.claude.com's pricing page (5-minute cache writes, 1.25 × input;
/// cache hits 0.1 × input). OpenAI: its published list prices for Chat Completions (cached input
/// as listed; OpenAI reports no cache writes, so that price is never used). Checked 2026-12; the
/// owner overrides any of them in `[pricing.models]`. Not modelled: Batch and long-context
/// surcharges, 1-hour cache writes (priced as 5-minute ones).
const BUILTIN: &[(&str, f64, f64, f64, f64)] = &[
    ("claude-opus-4-8", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-7", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-6", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-5", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75),
    ("claude-opus-4-0", 15.0, 75.0, 1.50, 18.75),
    ("claude-opus-4", 15.0, 75.0, 1.50, 18.75),
    ("claude-sonnet-4-6", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4-0", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
    ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30),
    ("gpt-5.4", 2.50, 15.0, 0.25, 2.50),
    ("gpt-5.4-mini", 0.75, 4.50, 0.075, 0.75),
    ("gpt-5.2", 1.75, 14.0, 0.175, 1.75),
    ("gpt-5.1", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.0, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("gpt-4.1", 2.0, 8.0, 0.50, 2.0),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-4o", 2.50, 10.0, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("o1", 15.0, 60.0, 7.50, 15.0),
    ("o3", 2.0, 8.0, 0.50, 2.0),
    ("o3-mini", 1.10, 4.40, 0.55, 1.10),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
];

/// The price table in force: the owner's prices over the built-in ones, in one currency.
#[derive(Debug, Clone)]
pub struct Prices {
    currency: String,
    symbol: String,
    exact: BTreeMap<String, Price>,
    /// Owner's `name*` patterns, longest first.
    prefixes: Vec<(String, Price)>,
}

impl Default for Prices {
    fn default() -> Self {
        Prices::new(&PricingConfig::default())
    }
}

impl Prices {
    /// The table for `cfg`: built-in prices (converted by `usd_rate`, or left out for a currency
    /// other than USD without one), then the owner's prices over them.
    pub fn new(cfg: &PricingConfig) -> Prices {
        let usd = cfg.currency.eq_ignore_ascii_case("USD");
        let rate = if usd { Some(1.0) } else { cfg.usd_rate };
        let mut exact = BTreeMap::new();
        if let Some(r) = rate {
            for &(name, i, o, cr, cw) in BUILTIN {
                let p = Price {
                    input: i * r,
                    output: o * r,
                    cache_read: cr * r,
                    cache_write: cw * r,
                };
                exact.insert(name.to_string(), p);
            }
        }
        let mut prefixes = Vec::new();
        for (name, p) in &cfg.models {
            let name = name.to_ascii_lowercase();
            match name.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), p.resolve())),
                None => {
                    exact.insert(name, p.resolve());
                }
            }
        }
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let symbol = cfg
            .symbol
            .clone()
            .unwrap_or_else(|| default_symbol(&cfg.currency));
        Prices {
            currency: cfg.currency.to_ascii_uppercase(),
            symbol,
            exact,
            prefixes,
        }
    }

    /// The price of `model`, or `None` when it has none (see the module comment for matching).
    pub fn lookup(&self, model: &str) -> Option<Price> {
        let name = model.trim().to_ascii_lowercase();
        if let Some(p) = self.exact.get(&name) {
            return Some(*p);
        }
        if let Some(p) = self.exact.get(&family(&name)) {
            return Some(*p);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map(|(_, p)| *p)
    }

    /// What `u` of `model` costs, or `None` when the model has no price.
    pub fn cost(&self, model: &str, u: &Usage) -> Option<f64> {
        self.lookup(model).map(|p| p.cost(u))
    }

    /// The currency code, e.g. `USD`.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// `amount` for people: `$2.00`, `$0.0123`, `12.50 CHF`.
    pub fn money(&self, amount: f64) -> String {
        let digits = if amount == 0.0 || amount.abs() >= 1.0 {
            2
        } else {
            4
        };
        let n = format!("{amount:.digits$}");
        if self.symbol.chars().count() == 1 {
            format!("{}{n}", self.symbol)
        } else {
            format!("{n} {}", self.symbol)
        }
    }
}

fn default_symbol(currency: &str) -> String {
    match currency.to_ascii_uppercase().as_str() {
        "USD" => "$".into(),
        "EUR" => "€".into(),
        "GBP" => "£".into(),
        "JPY" => "¥".into(),
        other => other.to_string(),
    }
}

/// The family name of a (lowercased) model id: without a provider prefix (`anthropic/`), a
/// `@version` or `[tag]` suffix, a trailing date (`-20250929`, `-2024-08-06`) or `-latest`;
/// Claude names written with dots (`claude-sonnet-4.5`, as OpenRouter does) use dashes.
pub fn family(model: &str) -> String {
    let mut s = model.rsplit('/').next().unwrap_or(model);
    if let Some(i) = s.find(['@', '[']) {
        s = &s[..i];
    }
    let mut s = s.to_string();
    if s.starts_with("claude") {
        s = s.replace('.', "-");
    }
    if let Some(base) = s.strip_suffix("-latest") {
        s = base.to_string();
    }
    strip_date(&s).to_string()
}

/// `name` without a trailing `-YYYYMMDD` or `-YYYY-MM-DD`.
fn strip_date(name: &str) -> &str {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    // `…-2024-08-06`: three numeric parts of 2, 2 and 4 digits.
    if parts.len() == 4
        && digits(parts[0])
        && parts[0].len() == 2
        && digits(parts[1])
        && parts[1].len() == 2
        && digits(parts[2])
        && parts[2].len() == 4
    {
        return parts[3];
    }
    match name.rsplit_once('-') {
        Some((base, date)) if date.len() == 8 && digits(date) => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn lookups_by_exact_name_family_and_owner_prefix() {
        let p = Prices::default();
        // (model, expected input price per MTok, or None for "no price")
        let cases: &[(&str, Option<f64>)] = &[
            ("claude-sonnet-4-5", Some(3.0)),
            ("claude-sonnet-4-5-20250929", Some(3.0)),
            ("anthropic/claude-sonnet-4.5", Some(3.0)),
            ("claude-opus-4-5@20251101", Some(5.0)),
            ("claude-opus-4-20250514", Some(15.0)),
            ("claude-opus-4-1-20250805", Some(15.0)),
            ("Claude-Haiku-4-5", Some(1.0)),
            ("claude-sonnet-4-5[1m]", Some(3.0)),
            ("gpt-4.1", Some(2.0)),
            ("gpt-4.1-mini-2025-04-14", Some(0.40)),
            ("openai/gpt-4o-mini", Some(0.15)),
            ("gpt-4o-2024-08-06", Some(2.50)),
            ("gpt-5-mini", Some(0.25)),
            ("o4-mini", Some(1.10)),
            // Never a neighbour's price: a newer or different model has none.
            ("claude-opus-4-9", None),
            ("claude-sonnet-4-5-turbo", None),
            ("o3-pro", None),
            ("gpt-5-chat-latest-x", None),
            ("gpt-4", None),
            ("llama3.1:8b", None),
            ("", None),
        ];
        for (model, want) in cases {
            let got = p.lookup(model).map(|x| x.input);
            let ok = match (got, want) {
                (Some(g), Some(w)) => approx(g, *w),
                (None, None) => true,
                _ => false,
            };
            assert!(ok, "{model}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn anthropic_cache_prices_follow_the_rule_and_openai_cached_input_is_listed() {
        let p = Prices::default();
        let s = p.lookup("claude-sonnet-4-5").unwrap();
        assert!(approx(s.cache_write, s.input * 1.25) && approx(s.cache_read, s.input * 0.1));
        let g = p.lookup("gpt-4.1").unwrap();
        assert!(
            approx(g.cache_read, 0.50),
            "GPT-4.1 cached input is a quarter"
        );
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cache_read: 2_000_000,
            cache_write: 400_000,
        };
        // 3 + 1.5 + 0.6 + 1.5
        assert!(approx(p.cost("claude-sonnet-4-5", &u).unwrap(), 6.6));
        assert_eq!(p.cost("mystery-model", &u), None);
    }

    #[test]
    fn the_owner_overrides_adds_prefixes_and_currencies() {
        let cfg: PricingConfig = toml::from_str(
            r#"
            currency = "EUR"
            [models."claude-sonnet-4-5"]
            input = 2.5
            output = 12.0
            [models."llama*"]
            input = 0.0
            output = 0.0
            [models."gpt-5*"]
            input = 1.0
            output = 8.0
            cache_read = 0.1
            "#,
        )
        .unwrap();
        assert_eq!(cfg.problem(), None);
        let p = Prices::new(&cfg);
        assert_eq!(p.currency(), "EUR");
        let s = p.lookup("claude-sonnet-4-5-20250929").unwrap();
        assert!(approx(s.input, 2.5) && approx(s.cache_write, 3.125));
        assert!(approx(p.lookup("llama3.1:8b").unwrap().output, 0.0));
        assert!(approx(p.lookup("gpt-5-codex").unwrap().cache_read, 0.1));
        // Built-in dollar prices do not silently become euros.
        assert_eq!(p.lookup("gpt-4o"), None);
        assert_eq!(p.money(2.0), "€2.00");
        let converted = Prices::new(&PricingConfig {
            currency: "EUR".into(),
            usd_rate: Some(0.5),
            ..PricingConfig::default()
        });
        assert!(approx(converted.lookup("gpt-4o").unwrap().input, 1.25));
        let chf = Prices::new(&PricingConfig {
            currency: "CHF".into(),
            ..PricingConfig::default()
        });
        assert_eq!(chf.money(12.5), "12.50 CHF");
    }

    #[test]
    fn money_shows_small_amounts_with_more_digits() {
        let p = Prices::default();
        assert_eq!(p.money(2.0), "$2.00");
        assert_eq!(p.money(0.01234), "$0.0123");
        assert_eq!(p.money(0.0), "$0.00");
        assert_eq!(p.money(123.456), "$123.46");
    }

    #[test]
    fn bad_prices_are_named() {
        let mut cfg = PricingConfig::default();
        cfg.models.insert(
            "x".into(),
            ModelPrice {
                input: -1.0,
                output: 1.0,
                cache_read: None,
                cache_write: None,
            },
        );
        assert!(cfg.problem().unwrap().contains("pricing.models.\"x\""));
        let cfg = PricingConfig {
            usd_rate: Some(0.0),
            ..PricingConfig::default()
        };
        assert!(cfg.problem().unwrap().contains("usd_rate"));
    }

    #[test]
    fn families_strip_only_stamps() {
        for (id, fam) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-5-latest", "gpt-5"),
            ("openrouter/anthropic/claude-3.5-haiku", "claude-3-5-haiku"),
            ("gpt-4.1", "gpt-4.1"),
            ("o3-2025-04-16", "o3"),
            ("claude-opus-4-9", "claude-opus-4-9"),
        ] {
            assert_eq!(family(id), fam, "{id}");
        }
    }
}
