//! `claw status`: per group, what is waiting, whether it would run now and why not, the last
//! run, and the outbox backlog. Read-only.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::paths::Home;
use crate::pending;
use crate::store::{Store, groups, messages, outbox, runs};

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
    pub running: bool,
    pub last_run: Option<runs::Run>,
    pub outbox_backlog: i64,
    pub active_tasks: i64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub home: String,
    pub groups: Vec<GroupStatus>,
    pub queued_runs: usize,
    pub outbox_backlog: i64,
}

/// Build the report.
pub fn status(home: &Home, store: &Store, config: &Config) -> Result<Report> {
    // One read transaction for the whole report: a consistent snapshot, and one SQLite lock
    // round-trip instead of several per group (those fcntl calls dominated with 1,000 groups).
    let tx = store.conn.unchecked_transaction()?;
    let conn: &rusqlite::Connection = &tx;
    let backlog = outbox::backlog(conn)?;
    let now = crate::time::now_ms();
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
    let mut out = Vec::new();
    for g in groups::list(conn)? {
        let cursor = groups::cursor(conn, &g.folder)?;
        let count = messages::count_since(conn, &g.chat_id, cursor)?;
        // Stream newest first and stop at the first message that decides it: reading every
        // pending row of every group made status slow on busy installs.
        let mut scan = pending::Scan::new(&g, count as usize);
        if count > 0 {
            messages::scan_latest_since(
                conn,
                &g.chat_id,
                cursor,
                config.limits.prompt_messages,
                |sender, from_me, text| !scan.push_parts(sender, from_me, text),
            )?;
        }
        let mut d = scan.finish();
        let running = crate::lock::is_held(&home.group_lock(&g.folder))?;
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
            d.reason = format!("last run failed; retrying {}", crate::time::ago(at));
        }
        out.push(GroupStatus {
            folder: g.folder.clone(),
            chat_id: g.chat_id.clone(),
            name: g.name.clone(),
            is_main: g.is_main,
            pending: count,
            would_run: d.runnable,
            reason: d.reason,
            running,
            last_run,
            outbox_backlog: backlog.get(&g.chat_id).copied().unwrap_or(0),
            active_tasks: task_counts.get(&g.folder).copied().unwrap_or(0),
        });
    }
    Ok(Report {
        home: home.root.display().to_string(),
        groups: out,
        queued_runs: runs::with_status(conn, "queued")?.len(),
        outbox_backlog: backlog.values().sum(),
    })
}
