//! `claw ipc-apply`: apply the requests agents wrote under `ipc/FOLDER/{messages,tasks}/`.
//!
//! Owns the order of work: for each group, read request names and then files in bounded batches
//! (`read`), decide who may (`auth`) and how much (`quota`), apply (`apply`) in one transaction
//! per batch with a savepoint per file, then finish each file (`finish`: delete it, move it to
//! `ipc/errors/` with a reason, answer task requests in `replies/`) before the next batch is read
//! (`pass`), and refresh the task snapshots. One bad file never stops the others; one flooding
//! group never holds up the others (a pass per group is capped). It never trusts anything inside
//! a file for identity (the folder is the identity) and never follows a link in `ipc/`.

pub mod apply;
pub mod auth;
mod finish;
mod pass;
pub mod quota;
pub mod read;
pub mod send_file;

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::IpcRequest;
use crate::infra::store::{Store, audit, groups};

/// Most [`Entry`] rows one report keeps (the counts stay exact); a flood of files must not make
/// the report itself the thing that grows without bound.
pub const MAX_REPORT_ENTRIES: usize = 2_000;

/// After a pass that rejected at least this many files, or moved this many bytes or any
/// directory into `ipc/errors/`, the folder is pruned at once instead of waiting for the hourly
/// housekeeping.
pub const PRUNE_AFTER_REJECTS: usize = 256;
/// See [`PRUNE_AFTER_REJECTS`].
pub const PRUNE_AFTER_BYTES: u64 = 8 * 1024 * 1024;

/// What happened to one request file.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub folder: String,
    /// `messages/NAME` or `tasks/NAME`.
    pub file: String,
    pub ok: bool,
    /// The request type, when the file parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where a rejected file went under `ipc/errors/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
}

/// A group whose pass stopped at its cap; the rest of its files wait for the next pass.
#[derive(Debug, Clone, Serialize)]
pub struct Deferred {
    pub folder: String,
    pub reason: String,
}

/// What one `ipc-apply` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub applied: usize,
    pub rejected: usize,
    /// At most [`MAX_REPORT_ENTRIES`]; `omitted` counts the rest.
    pub entries: Vec<Entry>,
    pub omitted: usize,
    pub deferred: Vec<Deferred>,
    /// Disk bytes this pass moved into `ipc/errors/`, and whether a whole directory was moved.
    pub quarantined_bytes: u64,
    pub quarantined_dirs: bool,
    /// Requests left in place waiting for the owner's answer to their approval.
    pub waiting: usize,
    /// Approval cards this pass queued in the main chat.
    pub asked: usize,
}

impl Report {
    fn push(&mut self, e: Entry) {
        if e.ok {
            self.applied += 1;
        } else {
            self.rejected += 1;
        }
        if self.entries.len() < MAX_REPORT_ENTRIES {
            self.entries.push(e);
        } else {
            self.omitted += 1;
        }
    }
}

/// Which snapshots need rewriting after a batch.
#[derive(Debug, Default)]
struct Touched {
    task_folders: BTreeSet<String>,
    chats: bool,
}

/// The request's `type` tag, for reports and audit rows.
pub fn request_type(req: &IpcRequest) -> &'static str {
    match req {
        IpcRequest::SendMessage { .. } => "send_message",
        IpcRequest::SendFile { .. } => "send_file",
        IpcRequest::ScheduleTask { .. } => "schedule_task",
        IpcRequest::UpdateTask { .. } => "update_task",
        IpcRequest::PauseTask { .. } => "pause_task",
        IpcRequest::ResumeTask { .. } => "resume_task",
        IpcRequest::CancelTask { .. } => "cancel_task",
        IpcRequest::RegisterGroup { .. } => "register_group",
        IpcRequest::RefreshGroups => "refresh_groups",
        IpcRequest::AddMcpServer { .. } => "add_mcp_server",
    }
}

/// Apply one group's requests and refresh the snapshots they affect (run-group calls this for
/// its own group while the container runs).
pub fn apply_group(
    home: &Home,
    store: &mut Store,
    config: &Config,
    folder: &str,
) -> Result<Report> {
    let group = groups::get(&store.conn, folder)?.ok_or_else(|| {
        crate::infra::error::Coded::err(
            crate::infra::error::Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })?;
    let mut report = Report::default();
    let mut touched = Touched::default();
    pass::apply_one(home, store, config, &group, &mut report, &mut touched)?;
    refresh(home, store, &touched)?;
    prune_if_flooded(home, config, &report);
    Ok(report)
}

/// Apply the requests of every registered group, then refresh affected snapshots once.
pub fn apply_all(home: &Home, store: &mut Store, config: &Config) -> Result<Report> {
    let mut report = Report::default();
    let mut touched = Touched::default();
    let mut first_err = None;
    for group in groups::list(&store.conn)? {
        // One group's broken folder must not hold up every other group's messages.
        if let Err(e) = pass::apply_one(home, store, config, &group, &mut report, &mut touched)
            .with_context(|| format!("applying IPC requests of group `{}`", group.folder))
        {
            tracing::error!(folder = %group.folder, error = %format!("{e:#}"), "ipc-apply failed for group");
            first_err.get_or_insert(e);
        }
    }
    refresh(home, store, &touched)?;
    prune_if_flooded(home, config, &report);
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Rewrite the snapshots a batch affected. The requests are already committed, so a snapshot
/// that cannot be written is logged (run-group rewrites it before the next run), not fatal.
fn refresh(home: &Home, store: &Store, touched: &Touched) -> Result<()> {
    let folders = touched.task_folders.iter().map(String::as_str);
    for (folder, e) in crate::rules::snapshot::refresh(home, store, folders, touched.chats)? {
        tracing::warn!(folder, error = %format!("{e:#}"), "snapshot not written");
    }
    Ok(())
}

/// A pass that moved many files to `ipc/errors/` prunes it now (bounded work), so a flood of
/// rejected files cannot fill the disk before the hourly housekeeping. Failure is only logged.
fn prune_if_flooded(home: &Home, config: &Config, report: &Report) {
    if report.rejected < PRUNE_AFTER_REJECTS
        && report.quarantined_bytes < PRUNE_AFTER_BYTES
        && !report.quarantined_dirs
    {
        return;
    }
    let opts = crate::steps::housekeeping::Options {
        dry_run: false,
        now: crate::infra::time::now_ms(),
    };
    if let Err(e) = crate::steps::housekeeping::prune_ipc_errors(home, config, &opts) {
        tracing::warn!(error = %format!("{e:#}"), "ipc/errors could not be pruned");
    }
}

/// Reject something at the group level (a planted link in place of a folder) with an audit row.
fn reject_dir(
    store: &Store,
    folder: &str,
    what: &str,
    reason: &str,
    report: &mut Report,
) -> Result<()> {
    audit::record(
        &store.conn,
        Some(folder),
        None,
        "ipc.rejected",
        serde_json::json!({"file": what, "reason": reason}),
    )?;
    report.push(Entry {
        folder: folder.into(),
        file: what.into(),
        ok: false,
        request: None,
        task_id: None,
        outbox_id: None,
        reason: Some(reason.into()),
        moved_to: None,
    });
    Ok(())
}
