//! Scheduled tasks and their run history: every query on `tasks` and `task_runs`.
//!
//! Validation of schedules and authorisation live elsewhere (`crate::steps::schedule`, `crate::steps::ipc`);
//! this file only reads and writes rows.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// One scheduled task.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    pub id: i64,
    pub folder: String,
    pub chat_id: String,
    pub prompt: String,
    /// `cron`, `interval` or `once`.
    pub kind: String,
    /// Cron expression, interval seconds, or the once time as RFC 3339 UTC.
    pub schedule: String,
    pub timezone: String,
    /// `group` resumes the group's session; `isolated` starts fresh.
    pub context_mode: String,
    /// `active`, `paused`, `completed` or `cancelled`.
    pub status: String,
    pub next_run: Option<i64>,
    pub last_run: Option<i64>,
    pub last_result: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// One run of a task.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRun {
    pub id: i64,
    pub task_id: i64,
    pub run_id: Option<i64>,
    pub scheduled_for: i64,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

const COLS: &str =
    "id, folder, chat_id, prompt, kind, schedule, timezone, context_mode, status, next_run,
    last_run, last_result, created_at, created_by";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        folder: r.get(1)?,
        chat_id: r.get(2)?,
        prompt: r.get(3)?,
        kind: r.get(4)?,
        schedule: r.get(5)?,
        timezone: r.get(6)?,
        context_mode: r.get(7)?,
        status: r.get(8)?,
        next_run: r.get(9)?,
        last_run: r.get(10)?,
        last_result: r.get(11)?,
        created_at: r.get(12)?,
        created_by: r.get(13)?,
    })
}

const RUN_COLS: &str =
    "id, task_id, run_id, scheduled_for, queued_at, started_at, ended_at, status, result, error";

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRun> {
    Ok(TaskRun {
        id: r.get(0)?,
        task_id: r.get(1)?,
        run_id: r.get(2)?,
        scheduled_for: r.get(3)?,
        queued_at: r.get(4)?,
        started_at: r.get(5)?,
        ended_at: r.get(6)?,
        status: r.get(7)?,
        result: r.get(8)?,
        error: r.get(9)?,
    })
}

/// Insert a task (its `id` is ignored); returns the new id.
pub fn insert(conn: &Connection, t: &Task) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO tasks (folder, chat_id, prompt, kind, schedule, timezone, context_mode, status,
                            next_run, last_run, last_result, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        t.folder,
        t.chat_id,
        t.prompt,
        t.kind,
        t.schedule,
        t.timezone,
        t.context_mode,
        t.status,
        t.next_run,
        t.last_run,
        t.last_result,
        t.created_at,
        t.created_by
    ])?;
    Ok(conn.last_insert_rowid())
}

/// One task by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Task>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM tasks WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// Tasks of one group (or all), by id; finished ones (completed, cancelled) only with `all`.
pub fn list(conn: &Connection, folder: Option<&str>, all: bool) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM tasks WHERE (?1 IS NULL OR folder = ?1)
           AND (?2 OR status IN ('active', 'paused')) ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![folder, all], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Number of active or paused tasks of a group.
pub fn count_live(conn: &Connection, folder: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM tasks WHERE folder = ?1 AND status IN ('active', 'paused')",
        )?
        .query_row([folder], |r| r.get(0))?)
}

/// Overwrite a task's mutable fields (prompt, schedule, zone, mode, status, next run).
pub fn update(conn: &Connection, t: &Task) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET prompt = ?2, kind = ?3, schedule = ?4, timezone = ?5, context_mode = ?6,
                status = ?7, next_run = ?8 WHERE id = ?1",
    )?
    .execute(params![
        t.id,
        t.prompt,
        t.kind,
        t.schedule,
        t.timezone,
        t.context_mode,
        t.status,
        t.next_run
    ])?;
    Ok(())
}

/// Active tasks due at `now`, oldest due first.
pub fn due(conn: &Connection, now: i64) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM tasks WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= ?1
         ORDER BY next_run, id"
    ))?;
    let rows = stmt.query_map([now], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether any active task is due at `now` (one probe of the `tasks_due` index).
pub fn any_due(conn: &Connection, now: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'active' AND next_run <= ?1)",
        )?
        .query_row([now], |r| r.get(0))?)
}

/// A task's check command: run in the group's container before the model is woken.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub command: String,
    pub timeout_secs: u64,
}

/// A task's check command, if it has one.
pub fn check(conn: &Connection, task_id: i64) -> Result<Option<Check>> {
    Ok(conn
        .prepare_cached("SELECT command, timeout_secs FROM task_checks WHERE task_id = ?1")?
        .query_row([task_id], |r| {
            Ok(Check {
                command: r.get(0)?,
                timeout_secs: r.get::<_, i64>(1)?.max(1) as u64,
            })
        })
        .optional()?)
}

/// Give a task a check command (replacing any), or take it away with `None`.
pub fn set_check(conn: &Connection, task_id: i64, check: Option<&Check>) -> Result<()> {
    match check {
        Some(c) => conn
            .prepare_cached(
                "INSERT INTO task_checks (task_id, command, timeout_secs) VALUES (?1, ?2, ?3)
                 ON CONFLICT(task_id) DO UPDATE SET command = excluded.command,
                                                    timeout_secs = excluded.timeout_secs",
            )?
            .execute(params![task_id, c.command, c.timeout_secs as i64])?,
        None => conn
            .prepare_cached("DELETE FROM task_checks WHERE task_id = ?1")?
            .execute([task_id])?,
    };
    Ok(())
}

/// Ids of tasks that have a queued or running task run.
pub fn busy_task_ids(conn: &Connection) -> Result<std::collections::HashSet<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT task_id FROM task_runs WHERE status IN ('queued', 'running')",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Set only the next run time.
pub fn set_next_run(conn: &Connection, id: i64, next_run: Option<i64>) -> Result<()> {
    conn.prepare_cached("UPDATE tasks SET next_run = ?2 WHERE id = ?1")?
        .execute(params![id, next_run])?;
    Ok(())
}

/// Insert a queued task run; returns its id.
pub fn insert_run(conn: &Connection, task_id: i64, scheduled_for: i64, now: i64) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO task_runs (task_id, scheduled_for, queued_at, status) VALUES (?1, ?2, ?3, 'queued')",
    )?
    .execute(params![task_id, scheduled_for, now])?;
    Ok(conn.last_insert_rowid())
}

/// Link a task run to its `runs` row.
pub fn set_run_id(conn: &Connection, task_run_id: i64, run_id: i64) -> Result<()> {
    conn.prepare_cached("UPDATE task_runs SET run_id = ?2 WHERE id = ?1")?
        .execute(params![task_run_id, run_id])?;
    Ok(())
}

/// One task run by id.
pub fn get_run(conn: &Connection, id: i64) -> Result<Option<TaskRun>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {RUN_COLS} FROM task_runs WHERE id = ?1"))?
        .query_row([id], run_row)
        .optional()?)
}

/// A task's runs, newest first.
pub fn runs(conn: &Connection, task_id: i64, limit: usize) -> Result<Vec<TaskRun>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLS} FROM task_runs WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![task_id, limit as i64], run_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Mark a queued task run as running.
pub fn mark_run_started(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE task_runs SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, now])?
        == 1)
}

/// Fail a task run whose run-group died, if it is still open (its start time stays unknown).
pub fn abandon_run(conn: &Connection, id: i64, error: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE task_runs SET status = 'failed', error = ?3, ended_at = ?2
         WHERE id = ?1 AND status IN ('queued', 'running')",
    )?
    .execute(params![id, now, error])?;
    Ok(())
}

/// Close a task run; returns false if it was already finished.
pub fn finish_run(
    conn: &Connection,
    id: i64,
    ok: bool,
    result: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE task_runs SET status = ?2, result = ?3, error = ?4, ended_at = ?5,
                    started_at = coalesce(started_at, ?5)
             WHERE id = ?1 AND status IN ('queued', 'running')",
        )?
        .execute(params![
            id,
            if ok { "succeeded" } else { "failed" },
            result,
            error,
            now
        ])?
        == 1)
}

/// Record a finished run on its task (last run time and a short result or error).
pub fn set_last(conn: &Connection, id: i64, last_run: i64, last_result: &str) -> Result<()> {
    conn.prepare_cached("UPDATE tasks SET last_run = ?2, last_result = ?3 WHERE id = ?1")?
        .execute(params![id, last_run, last_result])?;
    Ok(())
}

/// Set a task's status.
pub fn set_status(conn: &Connection, id: i64, status: &str) -> Result<()> {
    conn.prepare_cached("UPDATE tasks SET status = ?2 WHERE id = ?1")?
        .execute(params![id, status])?;
    Ok(())
}

/// Unfinished task runs whose `runs` row ended (for good) before `ended_before` with nothing
/// still queued or running for them: `(task_run_id, run_id, run succeeded)`.
pub fn orphaned_runs(conn: &Connection, ended_before: i64) -> Result<Vec<(i64, i64, bool)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT tr.id, r.id, r.status = 'succeeded' FROM task_runs tr JOIN runs r ON r.id = tr.run_id
         WHERE tr.status IN ('queued', 'running') AND r.status IN ('succeeded', 'failed')
           AND r.retry_at IS NULL AND r.ended_at < ?1
           AND NOT EXISTS (SELECT 1 FROM runs r2 WHERE r2.task_run_id = tr.id
                                                  AND r2.status IN ('queued', 'running'))",
    )?;
    let rows = stmt.query_map([ended_before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
