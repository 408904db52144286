//! The runs table: the persistent queue and history of run-group attempts.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// One run-group attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub folder: String,
    pub kind: String,
    pub task_id: Option<i64>,
    pub task_run_id: Option<i64>,
    pub status: String,
    pub attempt: i64,
    pub pid: Option<i64>,
    pub container: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub retry_at: Option<i64>,
    pub output_sent: bool,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

const COLS: &str = "id, folder, kind, task_id, task_run_id, status, attempt, pid, container, queued_at, started_at,
    ended_at, exit_code, error, retry_at, output_sent, first_seq, last_seq, input_tokens, output_tokens";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        folder: r.get(1)?,
        kind: r.get(2)?,
        task_id: r.get(3)?,
        task_run_id: r.get(4)?,
        status: r.get(5)?,
        attempt: r.get(6)?,
        pid: r.get(7)?,
        container: r.get(8)?,
        queued_at: r.get(9)?,
        started_at: r.get(10)?,
        ended_at: r.get(11)?,
        exit_code: r.get(12)?,
        error: r.get(13)?,
        retry_at: r.get(14)?,
        output_sent: r.get(15)?,
        first_seq: r.get(16)?,
        last_seq: r.get(17)?,
        input_tokens: r.get(18)?,
        output_tokens: r.get(19)?,
    })
}

/// One run by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Run>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM runs WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// The newest run of a group, of any kind.
pub fn latest(conn: &Connection, folder: &str) -> Result<Option<Run>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM runs WHERE folder = ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([folder], row)
        .optional()?)
}

/// The newest run of a group of one kind (`messages` or `task`).
pub fn latest_of_kind(conn: &Connection, folder: &str, kind: &str) -> Result<Option<Run>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM runs WHERE folder = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row(params![folder, kind], row)
        .optional()?)
}

/// Runs in a given status, oldest first.
pub fn with_status(conn: &Connection, status: &str) -> Result<Vec<Run>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM runs WHERE status = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([status], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest runs, optionally of one group.
pub fn recent(conn: &Connection, folder: Option<&str>, limit: usize) -> Result<Vec<Run>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM runs WHERE (?1 IS NULL OR folder = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![folder, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queue a run; returns its id.
pub fn queue(
    conn: &Connection,
    folder: &str,
    kind: &str,
    task_id: Option<i64>,
    task_run_id: Option<i64>,
    attempt: i64,
) -> Result<i64> {
    conn.execute(
        "INSERT INTO runs (folder, kind, task_id, task_run_id, status, attempt, queued_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)",
        params![
            folder,
            kind,
            task_id,
            task_run_id,
            attempt,
            crate::infra::time::now_ms()
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Mark a run as running in this process and container.
pub fn mark_running(conn: &Connection, id: i64, pid: u32, container: &str) -> Result<()> {
    conn.execute(
        "UPDATE runs SET status = 'running', pid = ?2, container = ?3, started_at = ?4 WHERE id = ?1",
        params![id, pid, container, crate::infra::time::now_ms()],
    )?;
    Ok(())
}

/// Record the messages handed to the agent so far.
pub fn set_seq_range(conn: &Connection, id: i64, first: i64, last: i64) -> Result<()> {
    conn.execute(
        "UPDATE runs SET first_seq = coalesce(first_seq, ?2), last_seq = max(coalesce(last_seq, 0), ?3) WHERE id = ?1",
        params![id, first, last],
    )?;
    Ok(())
}

/// Note that a result of this run reached the outbox (it must then never be repeated).
pub fn mark_output_sent(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("UPDATE runs SET output_sent = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// Add token usage reported by the agent.
pub fn add_usage(conn: &Connection, id: i64, input: u64, output: u64) -> Result<()> {
    conn.execute(
        "UPDATE runs SET input_tokens = input_tokens + ?2, output_tokens = output_tokens + ?3 WHERE id = ?1",
        params![id, input as i64, output as i64],
    )?;
    Ok(())
}

/// Close a run as succeeded or failed.
pub fn finish(
    conn: &Connection,
    id: i64,
    ok: bool,
    exit_code: Option<i32>,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> Result<()> {
    conn.execute(
        "UPDATE runs SET status = ?2, exit_code = ?3, error = ?4, retry_at = ?5, ended_at = ?6 WHERE id = ?1",
        params![id, if ok { "succeeded" } else { "failed" }, exit_code, error, retry_at, crate::infra::time::now_ms()],
    )?;
    Ok(())
}

/// Start times of the group's runs that started after `since`, newest first, at most `limit`
/// (what the runs-per-hour limit needs; served by the `runs_folder_started` index).
pub fn starts_since(conn: &Connection, folder: &str, since: i64, limit: u32) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT started_at FROM runs WHERE folder = ?1 AND started_at > ?2
         ORDER BY started_at DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![folder, since, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
