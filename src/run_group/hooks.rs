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
    crate::snapshot::write_snapshots(home, store, &group.folder, group.is_main)
}

/// Apply the group's pending IPC requests; returns how many files were handled (or asked about:
/// a new approval card is outbox work too).
pub fn apply_ipc(home: &Home, store: &mut Store, config: &Config, group: &Group) -> Result<usize> {
    let r = crate::ipc::apply_group(home, store, config, &group.folder)?;
    Ok(r.applied + r.rejected + r.asked)
}

/// Load a task for its run.
pub fn task_for_run(conn: &Connection, task_id: i64) -> Result<crate::store::tasks::Task> {
    crate::store::tasks::get(conn, task_id)?.with_context(|| format!("task {task_id} not found"))
}

/// Queue a run of a group's task right now (`claw run-group FOLDER --task ID`).
pub fn queue_task_now(conn: &Connection, group: &Group, task_id: i64) -> Result<i64> {
    let task = crate::store::tasks::get(conn, task_id)?
        .with_context(|| format!("task {task_id} not found; see `claw task list`"))?;
    if task.folder != group.folder {
        anyhow::bail!(
            "task {task_id} belongs to group `{}`, not `{}`",
            task.folder,
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

/// Mark a task run as started.
pub fn start_task_run(conn: &Connection, task_run_id: i64) -> Result<()> {
    crate::schedule::start_task_run(conn, task_run_id)?;
    Ok(())
}

/// Record a task run's end in the task's history (same transaction as the run's end).
pub fn finish_task_run(
    conn: &Connection,
    task_run_id: i64,
    ok: bool,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    crate::schedule::finish_task_run(conn, task_run_id, ok, result, error)?;
    Ok(())
}
