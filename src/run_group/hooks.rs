//! Where run-group calls into the IPC and scheduling modules: snapshots before a run, applying
//! the group's requests while it runs, and task bookkeeping.

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

use crate::config::Config;
use crate::paths::Home;
use crate::store::Store;
use crate::store::groups::Group;

/// Write the read-only snapshots the agent sees (its tasks; for main also the chats).
pub fn write_snapshots(home: &Home, store: &Store, group: &Group) -> Result<()> {
    let _ = (home, store, group);
    Ok(())
}

/// Apply the group's pending IPC requests; returns how many files were handled.
pub fn apply_ipc(home: &Home, store: &mut Store, config: &Config, group: &Group) -> Result<usize> {
    let _ = (home, store, config, group);
    Ok(0)
}

/// The parts of a task a run needs.
pub struct TaskRow {
    pub prompt: String,
    pub chat_id: String,
    pub context_mode: String,
}

/// Load a task for its run.
pub fn task_for_run(conn: &Connection, task_id: i64) -> Result<TaskRow> {
    conn.query_row(
        "SELECT prompt, chat_id, context_mode FROM tasks WHERE id = ?1",
        [task_id],
        |r| {
            Ok(TaskRow {
                prompt: r.get(0)?,
                chat_id: r.get(1)?,
                context_mode: r.get(2)?,
            })
        },
    )
    .with_context(|| format!("task {task_id} not found"))
}

/// Queue a run of a group's task right now (`claw run-group FOLDER --task ID`).
pub fn queue_task_now(conn: &Connection, group: &Group, task_id: i64) -> Result<i64> {
    let folder: String = conn
        .query_row("SELECT folder FROM tasks WHERE id = ?1", [task_id], |r| {
            r.get(0)
        })
        .with_context(|| format!("task {task_id} not found; see `claw task list`"))?;
    if folder != group.folder {
        anyhow::bail!(
            "task {task_id} belongs to group `{folder}`, not `{}`",
            group.folder
        );
    }
    let now = crate::time::now_ms();
    conn.execute(
        "INSERT INTO task_runs (task_id, scheduled_for, queued_at, status) VALUES (?1, ?2, ?2, 'queued')",
        params![task_id, now],
    )?;
    let tr = conn.last_insert_rowid();
    let run = crate::store::runs::queue(conn, &group.folder, "task", Some(task_id), Some(tr), 1)?;
    conn.execute(
        "UPDATE task_runs SET run_id = ?2 WHERE id = ?1",
        params![tr, run],
    )?;
    Ok(run)
}

/// Record a task run's end in the task's history.
pub fn finish_task_run(
    conn: &Connection,
    task_run_id: i64,
    ok: bool,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    let _ = (conn, task_run_id, ok, result, error);
    Ok(())
}
