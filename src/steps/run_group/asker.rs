//! The proxy's [`Asker`] for one run: applies the group's approval policy to egress and
//! credential acts and, for `ask`, records the approval row, queues the card, and holds the
//! proxy connection thread until the row is decided or expires.
//!
//! The act's identity is (run, kind, host and port or credential and host): a yes covers that act
//! for the rest of this run only (a credential with `credential_every_use` is asked every time),
//! and connections asking about the same act at once wait on one row (one card). Nothing crosses
//! runs: a new run asks again, and rows of a run that ended (or was killed) expire, by the run's
//! own clean-up, by [`stop`](Stopper::stop), or by the deadline and any later answer (which
//! refuses to approve for a dead run).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::proxy::ask::{Act, Asker, Decision};
use crate::infra::secrets::Secrets;
use crate::infra::store::groups::Group;
use crate::infra::store::{Store, approvals as rows};
use crate::rules::approvals::{self, Kind, Policy, policy};

/// How often a waiting act looks at its row.
const POLL: Duration = Duration::from_millis(200);
/// How long an expired act is refused again without asking.
const EXPIRY_MEMORY: Duration = Duration::from_secs(60);

/// Ends every wait of one run's asker (the run is over: its waits expire at once).
#[derive(Clone, Default)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    /// Make every wait return `Expired` (and expire its row) within one poll.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything the closure needs, owned.
struct Ctx {
    home: Home,
    config: Config,
    secrets: Secrets,
    group: Group,
    run_id: i64,
    stop: Stopper,
    /// Decisions already made in this run, by act identity, with when they were made.
    decided: Mutex<HashMap<String, (Decision, Instant)>>,
}

/// The asker for run `run_id` of `group`, and the stopper that ends its waits.
pub fn build(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    group: &Group,
    run_id: i64,
) -> (Asker, Stopper) {
    let stop = Stopper::default();
    let ctx = Arc::new(Ctx {
        home: home.clone(),
        config: config.clone(),
        secrets: secrets.clone(),
        group: group.clone(),
        run_id,
        stop: stop.clone(),
        decided: Mutex::new(HashMap::new()),
    });
    let asker = Asker(Arc::new(move |act, reason| ctx.ask(act, reason)));
    (asker, stop)
}

impl Ctx {
    fn ask(&self, act: Act, reason: Option<String>) -> Decision {
        let (kind, detail) = match &act {
            Act::Egress { host, port } => (
                Kind::Egress,
                serde_json::json!({"host": host, "port": port}),
            ),
            Act::Credential { name, host } => (
                Kind::Credential,
                serde_json::json!({"credential": name, "host": host}),
            ),
        };
        match policy::for_group(&self.config, &self.group, kind) {
            Policy::Allow => return Decision::Approved,
            Policy::Deny => {
                return Decision::Denied(format!(
                    "the group's approval policy for {} is deny",
                    kind.as_str()
                ));
            }
            Policy::Ask => {}
        }
        let key = format!("{}:{detail}", kind.as_str());
        let remember = !(kind == Kind::Credential && policy::every_use(&self.config, &self.group));
        if remember
            && let Some((d, at)) = self.decided.lock().ok().and_then(|m| m.get(&key).cloned())
            && (d != Decision::Expired || at.elapsed() < EXPIRY_MEMORY)
        {
            return d;
        }
        let d = match self.ask_owner(kind, &detail, reason.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "approval could not be asked");
                Decision::Denied(format!("the owner could not be asked ({e})"))
            }
        };
        // An expiry is remembered only briefly: the agent may ask again later (a new card, within
        // `max_per_run`), but an immediate retry, or a client asking why it was refused, is
        // answered at once without a second card.
        if remember && let Ok(mut m) = self.decided.lock() {
            m.insert(key, (d.clone(), Instant::now()));
        }
        d
    }

    fn ask_owner(
        &self,
        kind: Kind,
        detail: &serde_json::Value,
        reason: Option<&str>,
    ) -> anyhow::Result<Decision> {
        let mut store = Store::open(&self.home)?;
        let now = crate::infra::time::now_ms();
        let tx = store.write()?;
        let (row, asked) = match rows::open_for_run(&tx, self.run_id, kind.as_str(), detail)? {
            Some(r) => (r, false),
            None => {
                let limit = self.config.approvals.max_per_run;
                if rows::count_for_run(&tx, self.run_id)? >= i64::from(limit) {
                    return Ok(Decision::Denied(format!(
                        "this run already asked the owner {limit} times (approvals.max_per_run)"
                    )));
                }
                let req = approvals::Request {
                    folder: &self.group.folder,
                    group_name: &self.group.name,
                    run_id: Some(self.run_id),
                    kind,
                    detail: detail.clone(),
                    reason,
                };
                match approvals::ask(&tx, &self.config, &req, now)? {
                    Ok(r) => (r, true),
                    Err(why) => return Ok(Decision::Denied(why)),
                }
            }
        };
        tx.commit()?;
        if asked && let Some(main) = crate::infra::store::groups::main(&store.conn)? {
            // The card goes out now, not at the next timer tick.
            if let Some((prefix, _)) = main.chat_id.split_once(':') {
                crate::steps::chain::deliver(&self.home, &self.config, &self.secrets, prefix);
            }
        }
        self.wait(&store, row.id, row.expires_at)
    }

    /// Hold until row `id` is decided, expires, or the run stops.
    fn wait(&self, store: &Store, id: i64, expires_at: i64) -> anyhow::Result<Decision> {
        loop {
            let now = crate::infra::time::now_ms();
            if self.stop.stopped() {
                rows::expire(&store.conn, id, "run ended", now)?;
            } else if now >= expires_at {
                rows::expire(&store.conn, id, "timeout", now)?;
            }
            match rows::status(&store.conn, id)?.as_deref() {
                Some("approved") => return Ok(Decision::Approved),
                Some("denied") => {
                    return Ok(Decision::Denied(format!(
                        "the owner denied it (approval {id})"
                    )));
                }
                Some("expired") | None => return Ok(Decision::Expired),
                _ => std::thread::sleep(POLL),
            }
        }
    }
}
