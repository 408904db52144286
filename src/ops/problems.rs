//! `claw status --problems`: everything that drops or delays work, one row each, with what to do.
//!
//! Nothing is stored for this: each problem is read from the rows the pipeline already keeps
//! (messages past a cursor, runs, outbox rows, audit rows), so a problem disappears by itself when
//! its cause is fixed and can never be out of date. A denied sender or a message without the
//! trigger is not a problem: it is the owner's rule working.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::infra::config::Config;
use crate::ops::status::Report;

/// One thing that dropped or is delaying work.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// `waiting`, `run_failed`, `undelivered`, `delivery_retrying`, `ipc_rejected`.
    pub kind: &'static str,
    pub group: Option<String>,
    /// When it started (epoch ms).
    pub since: i64,
    pub detail: String,
    /// What the owner can do.
    pub fix: String,
}

/// How far back delivery and IPC problems are looked for.
const LOOKBACK_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most undelivered rows listed one by one; the rest are counted in one line.
const MAX_ROWS: usize = 20;

/// The problems of a home, given its status report (which already knows what would run and why
/// not). Oldest first.
pub fn list(conn: &Connection, config: &Config, report: &Report, now: i64) -> Result<Vec<Problem>> {
    let mut out = waiting(conn, config, report, now)?;
    for g in &report.groups {
        if let Some(r) = g.last_run.as_ref().filter(|r| r.status == "failed") {
            out.push(Problem {
                kind: "run_failed",
                group: Some(g.folder.clone()),
                since: r.ended_at.or(r.started_at).unwrap_or(r.queued_at),
                detail: format!(
                    "run #{} failed: {}",
                    r.id,
                    crate::infra::output::clip(
                        r.error.as_deref().unwrap_or("no error recorded"),
                        200
                    )
                ),
                fix: format!(
                    "see `claw logs {} --run {}`; `claw doctor` checks the host",
                    g.folder, r.id
                ),
            });
        }
    }
    out.extend(undelivered(conn, now)?);
    out.extend(ipc_rejected(conn, now)?);
    out.sort_by_key(|p| p.since);
    Ok(out)
}

/// Groups whose runnable messages have waited past `limits.stale_after_secs` with nothing running.
fn waiting(conn: &Connection, config: &Config, report: &Report, now: i64) -> Result<Vec<Problem>> {
    let bound = (config.limits.stale_after_secs as i64).saturating_mul(1000);
    let mut out = Vec::new();
    for g in &report.groups {
        if g.running || g.pending == 0 || !(g.would_run || g.held) {
            continue;
        }
        let oldest: Option<i64> = conn.query_row(
            "SELECT min(m.stored_at) FROM messages m
             WHERE m.chat_id = ?1 AND m.is_bot = 0
               AND m.seq > coalesce((SELECT seq FROM cursors WHERE folder = ?2), 0)",
            params![g.chat_id, g.folder],
            |r| r.get(0),
        )?;
        let Some(oldest) = oldest.filter(|o| now - o >= bound) else {
            continue;
        };
        let (detail, fix) = if g.held {
            (
                format!(
                    "{} message(s) waiting since {}: {}",
                    g.pending,
                    crate::infra::time::local_short(oldest),
                    g.reason
                ),
                "see the reason; `claw logs` and `claw doctor` say more".to_string(),
            )
        } else {
            (
                format!(
                    "{} message(s) waiting since {} and nothing is running for this group",
                    g.pending,
                    crate::infra::time::local_short(oldest)
                ),
                "are the timers running? `claw service status`; run `claw dispatch` to start it now"
                    .to_string(),
            )
        };
        out.push(Problem {
            kind: "waiting",
            group: Some(g.folder.clone()),
            since: oldest,
            detail,
            fix,
        });
    }
    Ok(out)
}

/// Outbox rows given up, and rows still failing after two attempts.
fn undelivered(conn: &Connection, now: i64) -> Result<Vec<Problem>> {
    let mut stmt = conn.prepare(
        "SELECT o.id, o.chat_id, o.status, o.attempts, o.last_error, o.created_at, g.folder
         FROM outbox o LEFT JOIN groups g ON g.chat_id = o.chat_id
         WHERE o.created_at >= ?1 AND (o.status = 'failed' OR (o.status = 'pending' AND o.attempts >= 2))
         ORDER BY o.id",
    )?;
    let rows = stmt.query_map([now - LOOKBACK_MS], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    let mut more = 0;
    for r in rows {
        let (id, chat, status, attempts, error, at, folder) = r?;
        if out.len() >= MAX_ROWS {
            more += 1;
            continue;
        }
        let given_up = status == "failed";
        out.push(Problem {
            kind: if given_up {
                "undelivered"
            } else {
                "delivery_retrying"
            },
            group: folder,
            since: at,
            detail: format!(
                "message #{id} to {} {} after {attempts} attempt(s): {}",
                crate::infra::output::clean_line(&chat),
                if given_up {
                    "was given up"
                } else {
                    "keeps failing"
                },
                crate::infra::output::clip(error.as_deref().unwrap_or("unknown error"), 200)
            ),
            fix: "check the channel (`claw doctor`, its token or send command); \
                  `claw outbox --status failed` lists them"
                .into(),
        });
    }
    if more > 0 {
        out.push(Problem {
            kind: "undelivered",
            group: None,
            since: now,
            detail: format!("{more} more undelivered message(s)"),
            fix: "`claw outbox --json` lists them all".into(),
        });
    }
    Ok(out)
}

/// Groups whose agent's IPC requests were rejected in the last day (work the agent asked for and
/// did not get).
fn ipc_rejected(conn: &Connection, now: i64) -> Result<Vec<Problem>> {
    let mut stmt = conn.prepare(
        "SELECT folder, count(*), min(at) FROM audit
         WHERE kind = 'ipc.rejected' AND at >= ?1 AND folder IS NOT NULL GROUP BY folder",
    )?;
    let rows = stmt.query_map([now - 24 * 3600 * 1000], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (folder, n, since) = r?;
        out.push(Problem {
            kind: "ipc_rejected",
            group: Some(folder.clone()),
            since,
            detail: format!("{n} request(s) from the agent rejected in the last day"),
            fix: format!(
                "`claw audit --group {folder} --kind ipc.rejected` says why; the files are in ipc/errors/"
            ),
        });
    }
    Ok(out)
}

/// Folders with a human message older than `bound_ms` past their cursor and no queued or running
/// run: one indexed query per group, cheap enough for every tick. A candidate is not yet a
/// problem (the message may lack the trigger); [`warn_stale`] confirms with the full status.
fn stale_candidates(conn: &Connection, now: i64, bound_ms: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.folder FROM groups g
         WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.folder = g.folder
                             AND r.status IN ('queued', 'running'))
           AND EXISTS (SELECT 1 FROM messages m
                       WHERE m.chat_id = g.chat_id AND m.is_bot = 0
                         AND m.seq > coalesce((SELECT seq FROM cursors c WHERE c.folder = g.folder), 0)
                         AND m.stored_at <= ?1)",
    )?;
    let rows = stmt.query_map([now - bound_ms], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The timer's own log: warn about each group whose messages wait past the bound with nothing
/// running, at most once a minute per group. Writes to the database only when it warns, so an
/// idle tick stays read-only. Returns the folders warned about.
pub fn warn_stale(
    home: &crate::infra::paths::Home,
    store: &crate::infra::store::Store,
    config: &Config,
    now: i64,
) -> Result<Vec<String>> {
    let bound = (config.limits.stale_after_secs as i64).saturating_mul(1000);
    if stale_candidates(&store.conn, now, bound)?.is_empty() {
        return Ok(Vec::new());
    }
    let report = crate::ops::status::status(home, store, config)?;
    let mut warned = Vec::new();
    for p in waiting(&store.conn, config, &report, now)? {
        let folder = p.group.clone().unwrap_or_default();
        if crate::infra::store::marks::claim(
            &store.conn,
            &format!("warn:stale:{folder}"),
            now,
            60_000,
        )? {
            tracing::warn!(group = %folder, "{}; {}", p.detail, p.fix);
            warned.push(folder);
        }
    }
    Ok(warned)
}
