//! `claw status`: per group, what is waiting, whether it would run now and why not, the last
//! run, today's model spend, and the outbox backlog. Read-only.

use anyhow::Result;
use serde::Serialize;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::{Store, groups, messages, outbox, runs};
use crate::rules::pending;

/// One group's line in `claw status`.
#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub folder: String,
    pub chat_id: String,
    pub name: String,
    pub is_main: bool,
    pub pending: i64,
    pub would_run: bool,
    pub reason: String,
    /// Work that could run is held back by a failed run's retry, a limit or a budget.
    pub held: bool,
    pub running: bool,
    pub last_run: Option<runs::Run>,
    pub outbox_backlog: i64,
    pub active_tasks: i64,
    /// Bytes of saved attachments in the group's inbox (from the attachment rows).
    pub inbox_bytes: i64,
    /// Today's model use (local day), as the proxy measured it.
    pub today: crate::rules::cost::report::Line,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub home: String,
    pub groups: Vec<GroupStatus>,
    pub queued_runs: usize,
    pub outbox_backlog: i64,
    /// The currency of every cost.
    pub currency: String,
    /// Today's model use of all groups together.
    pub today: crate::rules::cost::report::Line,
    /// The overall budgets (`[budget]`) and what is used of each.
    pub budgets: Vec<BudgetState>,
}

/// One overall budget and its use.
#[derive(Debug, Serialize)]
pub struct BudgetState {
    pub budget: crate::rules::cost::budget::Budget,
    pub spent: crate::rules::cost::budget::Spent,
    /// Used as a share of the cap (1.0 = spent).
    pub fraction: f64,
}

/// Build the report.
pub fn status(home: &Home, store: &Store, config: &Config) -> Result<Report> {
    // One read transaction for the whole report: a consistent snapshot, and one SQLite lock
    // round-trip instead of several per group (those fcntl calls dominated with 1,000 groups).
    let tx = store.conn.unchecked_transaction()?;
    let conn: &rusqlite::Connection = &tx;
    let backlog = outbox::backlog(conn)?;
    let now = crate::infra::time::now_ms();
    let mut task_counts = std::collections::HashMap::<String, i64>::new();
    {
        let mut stmt = conn.prepare(
            "SELECT folder, count(*) FROM tasks WHERE status = 'active' GROUP BY folder",
        )?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (f, n) = r?;
            task_counts.insert(f, n);
        }
    }
    let prices = crate::rules::cost::pricing::Prices::new(&config.pricing);
    let mut today = crate::rules::cost::report::today_by_group(conn, &prices, now)?;
    let inbox = crate::infra::store::attachments::inbox_bytes(conn)?;
    let mut out = Vec::new();
    for g in groups::list(conn)? {
        let cursor = groups::cursor(conn, &g.folder)?;
        let count = messages::count_since(conn, &g.chat_id, cursor)?;
        // Stream newest first and stop at the first message that decides it: reading every
        // pending row of every group made status slow on busy installs.
        let mut scan = pending::Scan::new(&g, count as usize);
        if count > 0 && !g.is_main && g.requires_trigger && g.allowed_senders.is_none() {
            // Everyone may trigger here, so only texts that start with the trigger matter: let
            // SQLite pick those instead of handing over every pending text (1,000 quiet groups).
            let hit = messages::trigger_candidates(
                conn,
                &g.chat_id,
                cursor,
                config.limits.prompt_messages,
                &g.trigger,
            )?
            .into_iter()
            .find(|t| pending::has_trigger(t, &g.trigger));
            // Same decision and reason as scanning every message from an allowed sender.
            scan.push_parts("", true, hit.as_deref().unwrap_or(""));
        } else if count > 0 {
            messages::scan_latest_since(
                conn,
                &g.chat_id,
                cursor,
                config.limits.prompt_messages,
                |sender, from_me, text| !scan.push_parts(sender, from_me, text),
            )?;
        }
        let mut d = scan.finish();
        let mut held = false;
        let running = crate::infra::lock::is_held(&home.group_lock(&g.folder))?;
        let last_run = runs::latest(conn, &g.folder)?;
        if d.runnable && running {
            d.runnable = false;
            d.reason = "a run is in progress; new messages are fed into it".into();
        } else if d.runnable
            && let Some(r) = runs::latest_of_kind(conn, &g.folder, "messages")?
            && r.status == "failed"
            && let Some(at) = r.retry_at
            && at > now
        {
            d.runnable = false;
            held = true;
            d.reason = match (&r.exit_code, &r.error) {
                // No exit code, or the runtime's 125: no container ran; say why and what fixes it.
                (None | Some(125), Some(e)) => {
                    let (what, fix) = crate::infra::runtime::start_failure(e);
                    format!(
                        "could not start: {what}; retrying {}. {fix}",
                        crate::infra::time::ago(at)
                    )
                }
                _ => format!("last run failed; retrying {}", crate::infra::time::ago(at)),
            };
        } else if d.runnable
            && let crate::rules::limits::RunGate::Closed { started, until, .. } =
                crate::rules::limits::runs_gate(conn, &config.limits, &g, now)?
        {
            d.runnable = false;
            held = true;
            d.reason = crate::rules::limits::run_reason(&g, started, until);
        } else if d.runnable
            && let Some(why) = crate::rules::limits::budget_stop(conn, config, &g, now, false)?
        {
            d.runnable = false;
            held = true;
            d.reason = why;
        }
        out.push(GroupStatus {
            folder: g.folder.clone(),
            chat_id: g.chat_id.clone(),
            name: g.name.clone(),
            is_main: g.is_main,
            pending: count,
            would_run: d.runnable,
            reason: d.reason,
            held,
            running,
            last_run,
            outbox_backlog: backlog.get(&g.chat_id).copied().unwrap_or(0),
            inbox_bytes: inbox.get(&g.folder).copied().unwrap_or(0),
            active_tasks: task_counts.get(&g.folder).copied().unwrap_or(0),
            today: today
                .remove(&g.folder)
                .unwrap_or_else(|| crate::rules::cost::report::Line::zero(&g.folder)),
        });
    }
    let today_total = crate::rules::cost::report::today_total(conn, &prices, now)?;
    let mut budgets = Vec::new();
    for b in crate::rules::cost::budget::applicable_overall(&config.budget) {
        let spent = crate::rules::cost::gate::spent(conn, &prices, &b, now, None)?;
        budgets.push(BudgetState {
            fraction: b.fraction(&spent),
            budget: b,
            spent,
        });
    }
    Ok(Report {
        home: home.root.display().to_string(),
        groups: out,
        queued_runs: runs::with_status(conn, "queued")?.len(),
        outbox_backlog: backlog.values().sum(),
        currency: prices.currency().to_string(),
        today: today_total,
        budgets,
    })
}

#[cfg(test)]
mod tests {
    use crate::infra::store::messages::{self, NewMessage};

    #[test]
    fn trigger_prefilter_agrees_with_has_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::infra::paths::Home::new(dir.path());
        let store = crate::infra::store::Store::create(&home).unwrap();
        let texts = [
            "@andy hi",
            "\t@ANDY: go",
            "\u{a0}\u{3000}@Andy please",
            "\n@Andy",
            "@Andyx no",
            "@Andy_x no",
            "hello @Andy",
            "@And",
            "",
            "@andé",
            "@Andé ok",
        ];
        for trigger in ["@Andy", "@Andé"] {
            for (i, t) in texts.iter().enumerate() {
                let chat = format!("tg:{i}");
                messages::upsert_chat(&store.conn, &chat, None, None, 0, None).unwrap();
                let id = format!("{trigger}{i}");
                let m = NewMessage {
                    chat_id: &chat,
                    msg_id: &id,
                    sender: "tg:1",
                    sender_name: "",
                    text: t,
                    sent_at: 0,
                    from_me: false,
                    is_bot: false,
                    reply_to_id: None,
                    reply_to_sender: None,
                    reply_to_text: None,
                };
                messages::insert(&store.conn, &m).unwrap();
                let via_sql = messages::trigger_candidates(&store.conn, &chat, 0, 50, trigger)
                    .unwrap()
                    .iter()
                    .any(|c| crate::rules::pending::has_trigger(c, trigger));
                assert_eq!(
                    via_sql,
                    crate::rules::pending::has_trigger(t, trigger),
                    "{trigger} vs {t:?}"
                );
            }
        }
    }
}
