//! Usage and budgets for one run. The proxy reports each model request's usage in its event; a
//! thread of this run writes it to the `usage` table the moment the event arrives (so a run
//! killed later still counts), keeps the proxy's [`Meter`] up to date with what other runs have
//! spent (read from the store every [`REFRESH`]), and sends the budget notices (`cost::gate`).
//!
//! The thread sits between the proxy and the audit aggregation (`proxy_rows`): every event is
//! passed on unchanged, and the channel it passes them on closes when the proxy's does.

use anyhow::Result;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::Work;
use super::log::RunLog;
use crate::config::Config;
use crate::cost::budget::{self, Limit};
use crate::cost::pricing::Prices;
use crate::cost::{gate, local_day};
use crate::paths::Home;
use crate::proxy::{Meter, ProxyEvent};
use crate::store::Store;
use crate::store::groups::Group;

/// How often other runs' spend is read into the meter (and budget notices are considered).
pub const REFRESH: Duration = Duration::from_secs(3);

/// Starts recording for `work`'s run: returns the meter to give the proxy and the channel the
/// proxy's events continue on. The meter starts with the spend as the store has it now.
pub fn start(
    home: &Home,
    config: &Config,
    work: &Work,
    events: Receiver<ProxyEvent>,
    log: &mut RunLog,
) -> Result<(Meter, Receiver<ProxyEvent>)> {
    let prices = Prices::new(&config.pricing);
    let budgets = budget::applicable(&config.budget, &work.group);
    let meter = if budgets.is_empty() {
        Meter::default()
    } else {
        Meter::new(budgets.clone(), prices.clone())
    };
    let rec = Recorder {
        store: Store::open(home)?,
        prices,
        meter: meter.clone(),
        group: work.group.clone(),
        run_id: work.run.id,
        refreshed: Instant::now(),
    };
    let now = crate::time::now_ms();
    rec.refresh(now);
    for (b, s) in meter.states(now) {
        log.line(format!(
            "budget {}: {} of {} used",
            b.id(),
            match b.limit {
                Limit::Money(_) => rec.prices.money(s.money),
                Limit::Tokens(_) => format!("{} tokens", budget::thousands(s.tokens)),
            },
            b.cap_text(&rec.prices)
        ));
    }
    let model = super::sandbox::model_settings(config, &work.group).model;
    if budgets.iter().any(|b| matches!(b.limit, Limit::Money(_)))
        && rec.prices.lookup(&model).is_none()
    {
        log.line(format!(
            "budget: model `{model}` has no price, so money budgets cannot see its use; set \
             [pricing.models.\"{model}\"] in claw.toml or use a token budget"
        ));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("claw-usage".into())
        .spawn(move || rec.run(events, tx))?;
    Ok((meter, rx))
}

struct Recorder {
    store: Store,
    prices: Prices,
    meter: Meter,
    group: Group,
    run_id: i64,
    refreshed: Instant,
}

impl Recorder {
    fn run(mut self, events: Receiver<ProxyEvent>, out: Sender<ProxyEvent>) {
        loop {
            match events.recv_timeout(REFRESH) {
                Ok(ev) => {
                    let counted = self.record(&ev);
                    // The audit side may be gone at the very end; usage is already written.
                    let _ = out.send(ev);
                    if counted {
                        self.notify(crate::time::now_ms());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.refreshed.elapsed() >= REFRESH {
                self.refreshed = Instant::now();
                let now = crate::time::now_ms();
                self.refresh(now);
                self.notify(now);
            }
        }
    }

    /// Writes the usage a model request reported; true if it is news for the budgets (usage,
    /// or a request the proxy refused because a budget is spent).
    fn record(&self, ev: &ProxyEvent) -> bool {
        let ProxyEvent::Llm {
            provider,
            model,
            usage,
            status,
            ..
        } = ev
        else {
            return false;
        };
        let Some(u) = usage else {
            return *status == 402;
        };
        let now = crate::time::now_ms();
        if let Err(e) = crate::store::usage::add(
            &self.store.conn,
            self.run_id,
            &self.group.folder,
            provider,
            model,
            &local_day(now),
            u,
            now,
        ) {
            tracing::warn!(folder = %self.group.folder, run = self.run_id, "could not record usage: {e:#}");
        }
        true
    }

    /// Reads what other runs have spent of each budget into the meter.
    fn refresh(&self, now: i64) {
        for (i, b) in self.meter.budgets().iter().enumerate() {
            match gate::spent(&self.store.conn, &self.prices, b, now, Some(self.run_id)) {
                Ok(s) => self.meter.set_others(i, s, now),
                Err(e) => tracing::warn!(budget = %b.id(), "could not read spend: {e:#}"),
            }
        }
    }

    /// Sends the notices the budgets' state calls for (each at most once per period).
    fn notify(&self, now: i64) {
        let states = self.meter.states(now);
        if states.is_empty() {
            return;
        }
        if let Err(e) = gate::notify(&self.store.conn, &self.prices, &self.group, &states, now) {
            tracing::warn!(folder = %self.group.folder, "could not send budget notices: {e:#}");
        }
    }
}
