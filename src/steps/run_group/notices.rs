//! Telling people when a run could not start at all (runtime missing, image missing, proxy or
//! preparation failure): the chat is told once, with what the owner can do, and the owner's main
//! chat is told when it persists. A failure that is never reported is the one users hate most.

use anyhow::Result;
use rusqlite::Connection;

use super::Work;
use crate::infra::store::{groups, marks, outbox};

/// How long one "could not start" notice covers, per chat and per group for main.
const WINDOW_MS: i64 = 6 * 3600 * 1000;
/// Failed starts in a row, or minutes of failing, after which the owner's main chat is told.
const PERSIST_RUNS: usize = 3;
const PERSIST_MS: i64 = 10 * 60 * 1000;

/// Record that `work`'s run never started: tell its chat once per window, and main when it
/// persists. Returns whether the chat has been told (now or earlier in this window), so the
/// generic "could not answer" notice is not sent on top.
pub fn not_started(conn: &Connection, work: &Work, error: &str, now: i64) -> Result<bool> {
    let folder = &work.group.folder;
    let (what, fix) = crate::infra::runtime::start_failure(error);
    let chat_key = format!("notice:not-started:{folder}");
    if marks::claim(conn, &chat_key, now, WINDOW_MS)? {
        let text = format!(
            "I could not start just now: {what}. {fix} Your message is kept and will be answered \
             once it works again."
        );
        outbox::enqueue(
            conn,
            &work.chat_id,
            &text,
            &format!("run:{}:not-started", work.run.id),
        )?;
    }
    let (streak, since) = failed_start_streak(conn, folder, work.run.id, now)?;
    if streak >= PERSIST_RUNS || now - since >= PERSIST_MS {
        let main = groups::main(conn)?;
        let main_key = format!("notice:not-started-main:{folder}");
        if let Some(m) = main.filter(|m| m.chat_id != work.chat_id)
            && marks::claim(conn, &main_key, now, WINDOW_MS)?
        {
            let text = format!(
                "Group `{folder}` ({}) has not been able to start its assistant {streak} time(s) \
                 since {}: {}. {fix}",
                crate::rules::notice::quoted(&work.group.name),
                crate::infra::time::local_short(since),
                crate::infra::output::clip(error, 300)
            );
            outbox::enqueue(
                conn,
                &m.chat_id,
                &text,
                &format!("notice:not-started:{folder}:{}", work.run.id),
            )?;
        }
    }
    Ok(marks::get(conn, &chat_key)?.is_some_and(|at| now - at < WINDOW_MS))
}

/// This failure plus the failed starts right before it (runs that ended failed without a
/// container exit code), and when the first of them began.
fn failed_start_streak(
    conn: &Connection,
    folder: &str,
    this_run: i64,
    now: i64,
) -> Result<(usize, i64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, exit_code, coalesce(started_at, queued_at) FROM runs
         WHERE folder = ?1 AND id < ?2 AND status IN ('succeeded', 'failed')
         ORDER BY id DESC LIMIT 50",
    )?;
    let rows = stmt.query_map(rusqlite::params![folder, this_run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let (mut streak, mut since) = (1, now);
    for r in rows {
        let (status, exit, at) = r?;
        if status != "failed" || exit.is_some_and(|c| c != 125) {
            break;
        }
        streak += 1;
        since = at;
    }
    Ok((streak, since))
}
