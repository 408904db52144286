//! Usage and budgets for one run. The proxy reports each model request's usage in its event; this
//! run writes it to the `usage` table as soon as the event arrives (so a run killed later still
//! counts it), keeps the proxy's [`Meter`] current with what other runs have spent (read from the
//! store every [`REFRESH`]), and sends the budget notices (`cost::gate`).
//!
//! Two threads, so that SQLite never holds the proxy's events back: a forwarder passes every
//! event on to the audit aggregation (`proxy_rows`) at once, after adding its usage to a pending
//! sum (one entry per provider, model and day, so bounded whatever the agent does); a writer
//! writes the pending sums, refreshes the meter and sends notices. [`Recording::finish`] waits
//! for the last sums to be written once the proxy has stopped.

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Work;
use super::log::RunLog;
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::proxy::{Meter, ProxyEvent};
use crate::infra::store::Store;
use crate::infra::store::groups::Group;
use crate::infra::store::usage::{self, Key};
use crate::rules::cost::budget::{self, Limit};
use crate::rules::cost::pricing::Prices;
use crate::rules::cost::{Usage, gate, local_day};

/// How often other runs' spend is read into the meter (and budget notices are considered).
pub const REFRESH: Duration = Duration::from_secs(3);
/// How long [`Recording::finish`] waits for the last usage to be written.
const FINISH_WAIT: Duration = Duration::from_secs(30);

/// This run's usage recording; see the module comment.
pub struct Recording {
    meter: Meter,
    pending: Shared,
    done: Receiver<()>,
}

impl Recording {
    /// The meter to give the proxy: its budgets, with the spend as the store had it at start.
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }

    /// Waits until the usage of every event the proxy has sent so far is written (call after the
    /// proxy has stopped; gives up after [`FINISH_WAIT`], e.g. on a store locked that long). A
    /// request still waiting on its upstream after the shutdown is written when it ends, if
    /// this process still runs then.
    pub fn finish(self) {
        lock(&self.pending).flush = true;
        self.pending.1.notify_one();
        let _ = self.done.recv_timeout(FINISH_WAIT);
    }
}

/// Starts recording for `work`'s run: returns the recording and the channel the proxy's events
/// continue on.
pub fn start(
    home: &Home,
    config: &Config,
    work: &Work,
    events: Receiver<ProxyEvent>,
    log: &mut RunLog,
) -> Result<(Recording, Receiver<ProxyEvent>)> {
    let prices = Prices::new(&config.pricing);
    let budgets = budget::applicable(&config.budget, &work.group);
    let meter = if budgets.is_empty() {
        Meter::default()
    } else {
        Meter::new(budgets.clone(), prices.clone())
    };
    let writer = Writer {
        store: Store::open(home)?,
        prices,
        meter: meter.clone(),
        group: work.group.clone(),
        run_id: work.run.id,
        pending: Arc::new((Mutex::new(Pending::default()), Condvar::new())),
    };
    let now = crate::infra::time::now_ms();
    writer.refresh(now);
    for (b, s) in meter.states(now) {
        log.line(format!(
            "budget {}: {} of {} used",
            b.id(),
            match b.limit {
                Limit::Money(_) => writer.prices.money(s.money),
                Limit::Tokens(_) => format!("{} tokens", budget::thousands(s.tokens)),
            },
            b.cap_text(&writer.prices)
        ));
    }
    let model = super::sandbox::model_settings(config, &work.group).model;
    if budgets.iter().any(|b| matches!(b.limit, Limit::Money(_)))
        && writer.prices.lookup(&model).is_none()
    {
        log.line(format!(
            "budget: model `{model}` has no price, so money budgets cannot see its use; set \
             [pricing.models.\"{model}\"] in claw.toml or use a token budget"
        ));
    }
    let (out_tx, out_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let pending = Arc::clone(&writer.pending);
    let recording_pending = Arc::clone(&writer.pending);
    std::thread::Builder::new()
        .name("claw-usage-fwd".into())
        .spawn(move || forward(events, out_tx, &pending))?;
    std::thread::Builder::new()
        .name("claw-usage".into())
        .spawn(move || writer.run(done_tx))?;
    Ok((
        Recording {
            meter,
            pending: recording_pending,
            done: done_rx,
        },
        out_rx,
    ))
}

/// Usage reported but not yet written.
#[derive(Default)]
struct Pending {
    /// (provider, model, local day) → (requests, usage).
    sums: BTreeMap<(String, String, String), (u64, Usage)>,
    /// Something the budgets should look at arrived (usage, or a refusal).
    news: bool,
    /// The proxy's channel closed: write what is left and stop.
    closed: bool,
    /// The run is ending: write what is pending now and say so.
    flush: bool,
}

type Shared = Arc<(Mutex<Pending>, Condvar)>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    p.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Passes every event on at once, noting usage and refusals for the writer.
fn forward(events: Receiver<ProxyEvent>, out: Sender<ProxyEvent>, pending: &Shared) {
    for ev in events {
        if let ProxyEvent::Llm {
            provider,
            model,
            usage,
            status,
            ..
        } = &ev
        {
            let mut p = lock(pending);
            if let Some(u) = usage {
                let day = local_day(crate::infra::time::now_ms());
                let e = p
                    .sums
                    .entry((provider.clone(), model.clone(), day))
                    .or_default();
                e.0 += 1;
                e.1.add(u);
                p.news = true;
            } else if *status == 402 {
                p.news = true;
            }
            drop(p);
            pending.1.notify_one();
        }
        // The audit side may be gone at the very end; the usage is noted already.
        let _ = out.send(ev);
    }
    lock(pending).closed = true;
    pending.1.notify_one();
}

struct Writer {
    store: Store,
    prices: Prices,
    meter: Meter,
    group: Group,
    run_id: i64,
    pending: Shared,
}

impl Writer {
    fn run(self, done: Sender<()>) {
        let mut refreshed = Instant::now();
        loop {
            let (sums, news, flush, closed) = {
                let mut p = lock(&self.pending);
                while !p.news && !p.closed && !p.flush && refreshed.elapsed() < REFRESH {
                    let left = REFRESH.saturating_sub(refreshed.elapsed());
                    p = self
                        .pending
                        .1
                        .wait_timeout(p, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                (
                    std::mem::take(&mut p.sums),
                    std::mem::take(&mut p.news),
                    std::mem::take(&mut p.flush),
                    p.closed,
                )
            };
            self.write(sums);
            let now = crate::infra::time::now_ms();
            if refreshed.elapsed() >= REFRESH {
                refreshed = Instant::now();
                self.refresh(now);
                self.notify(now);
            } else if news {
                self.notify(now);
            }
            if flush || closed {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }

    fn write(&self, sums: BTreeMap<(String, String, String), (u64, Usage)>) {
        let now = crate::infra::time::now_ms();
        for ((provider, model, day), (requests, u)) in sums {
            let key = Key {
                run_id: self.run_id,
                folder: &self.group.folder,
                provider: &provider,
                model: &model,
                day: &day,
            };
            if let Err(e) = usage::add(&self.store.conn, &key, requests, &u, now) {
                tracing::warn!(folder = %self.group.folder, run = self.run_id, "could not record usage: {e:#}");
            }
        }
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
