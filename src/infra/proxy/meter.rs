//! The budgets one proxy enforces, and what it knows of their spend: what other runs had used
//! when run-group last read the store (every few seconds), plus this run's own usage, added by
//! the proxy itself as each model request ends. Before forwarding a model request the proxy asks
//! [`Meter::refusal`]; a spent budget refuses it (status 402, which claw-agent treats as a failed
//! call and does not retry).
//!
//! A request already forwarded when a budget runs out completes, so a budget can be overshot by
//! the requests in flight at that moment (at most `limits.llm_concurrency` of this run, plus any
//! other runs' requests in flight).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::rules::cost::budget::{self, Budget, Period, Spent};
use crate::rules::cost::pricing::Prices;
use crate::rules::cost::{Usage, local_day};

/// Shared between the proxy's threads and run-group; clones share the state. The default has no
/// budgets and never refuses.
#[derive(Clone, Default)]
pub struct Meter {
    inner: Option<Arc<Mutex<State>>>,
}

struct State {
    budgets: Vec<Budget>,
    /// Per budget: the period it was read for (`YYYY-MM-DD` or `YYYY-MM`) and what other runs
    /// had used in it.
    others: Vec<Option<(String, Spent)>>,
    /// This run's usage by (local day, model).
    own: BTreeMap<(String, String), Usage>,
    prices: Prices,
}

/// The key of the period containing `now`, as the meter compares them.
fn period_key(period: Period, now: i64) -> String {
    let day = local_day(now);
    match period {
        Period::Day => day,
        Period::Month => day[..7.min(day.len())].to_string(),
    }
}

impl Meter {
    /// A meter for `budgets`, pricing money budgets with `prices`.
    pub fn new(budgets: Vec<Budget>, prices: Prices) -> Meter {
        let others = vec![None; budgets.len()];
        Meter {
            inner: Some(Arc::new(Mutex::new(State {
                budgets,
                others,
                own: BTreeMap::new(),
                prices,
            }))),
        }
    }

    /// The budgets this meter enforces.
    pub fn budgets(&self) -> Vec<Budget> {
        self.with(|s| s.budgets.clone()).unwrap_or_default()
    }

    /// Records what other runs have used of budget `i` in the period containing `now`.
    pub fn set_others(&self, i: usize, spent: Spent, now: i64) {
        self.with(|s| {
            if let Some(b) = s.budgets.get(i) {
                let key = period_key(b.period, now);
                s.others[i] = Some((key, spent));
            }
        });
    }

    /// Adds this run's `usage` of `model`, reported at `now`.
    pub fn add(&self, model: &str, usage: &Usage, now: i64) {
        self.with(|s| {
            s.own
                .entry((local_day(now), model.to_string()))
                .or_default()
                .add(usage);
        });
    }

    /// Every budget with what is used of it in the period containing `now`.
    pub fn states(&self, now: i64) -> Vec<(Budget, Spent)> {
        self.with(|s| {
            s.budgets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let key = period_key(b.period, now);
                    // Read for an earlier period: nothing of this one is known yet.
                    let others = match &s.others[i] {
                        Some((k, spent)) if *k == key => *spent,
                        _ => Spent::default(),
                    };
                    let mut own = Spent::default();
                    for ((day, model), u) in &s.own {
                        if day.starts_with(&key) {
                            own.add(model, u, &s.prices);
                        }
                    }
                    (b.clone(), others.plus(&own))
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// The message to refuse a model request with at `now`, if a budget is spent.
    pub fn refusal(&self, now: i64) -> Option<String> {
        self.inner.as_ref()?;
        let prices = self.with(|s| s.prices.clone())?;
        let states = self.states(now);
        budget::blocking(&states).map(|(b, _)| budget::refusal(b, &prices, now))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let inner = self.inner.as_ref()?;
        // A thread that panicked while holding the lock left counts, not broken invariants.
        let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::cost::budget::Limit;

    fn budget(period: Period, limit: Limit) -> Budget {
        Budget {
            folder: Some("fam".into()),
            name: "Family".into(),
            period,
            limit,
        }
    }

    #[test]
    fn refuses_once_others_and_own_use_reach_a_cap() {
        let now = crate::infra::time::now_ms();
        let m = Meter::new(
            vec![
                budget(Period::Day, Limit::Tokens(100)),
                budget(Period::Month, Limit::Money(1.0)),
            ],
            Prices::default(),
        );
        assert_eq!(m.refusal(now), None);
        m.set_others(
            0,
            Spent {
                tokens: 60,
                ..Spent::default()
            },
            now,
        );
        m.add(
            "mystery",
            &Usage {
                input: 30,
                ..Usage::default()
            },
            now,
        );
        assert_eq!(m.refusal(now), None);
        m.add(
            "mystery",
            &Usage {
                output: 10,
                ..Usage::default()
            },
            now,
        );
        let r = m.refusal(now).expect("100 of 100 tokens");
        assert!(r.contains("its 100 tokens for today"), "{r}");
        // The monthly budget has no reading of other runs yet: only this run's 40 tokens, of a
        // model without a price, so no money.
        let states = m.states(now);
        assert_eq!(states[1].1.tokens, 40);
        assert_eq!(states[1].1.money, 0.0);
        assert_eq!(states[1].1.unpriced_tokens, 40);
    }

    #[test]
    fn a_reading_from_an_earlier_period_does_not_count() {
        let now = crate::infra::time::now_ms();
        let m = Meter::new(
            vec![budget(Period::Day, Limit::Money(1.0))],
            Prices::default(),
        );
        let yesterday = Period::Day.start_ms(now) - 1000;
        m.set_others(
            0,
            Spent {
                money: 5.0,
                ..Spent::default()
            },
            yesterday,
        );
        assert_eq!(m.refusal(now), None);
        assert!(m.refusal(yesterday).is_some());
    }

    #[test]
    fn the_default_meter_never_refuses() {
        let m = Meter::default();
        m.add("x", &Usage::default(), 0);
        assert_eq!(m.refusal(0), None);
        assert!(m.states(0).is_empty());
    }
}
