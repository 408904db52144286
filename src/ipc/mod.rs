//! `claw ipc-apply`: apply the requests agents wrote under `ipc/FOLDER/{messages,tasks}/`.
//!
//! Owns the order of work: scan a group's request folders (`read`), decide (`auth`), apply
//! (`apply`) in one transaction per batch with a savepoint per file, then delete applied files,
//! move rejected ones to `ipc/errors/` with a reason, answer task requests in `replies/`, and
//! refresh the task snapshots. One bad file never stops the others. It never trusts anything
//! inside a file for identity (the folder is the identity) and never follows a link in `ipc/`.

pub mod apply;
pub mod auth;
pub mod read;

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::ffi::OsStr;

use crate::config::Config;
use crate::paths::Home;
use crate::protocol::{IPC_MESSAGES_DIR, IPC_REPLIES_DIR, IPC_TASKS_DIR, IpcReply, IpcRequest};
use crate::store::{Store, audit, groups};
use crate::untrusted::{self as fsat, Dir, Kind};
use apply::Effect;
use auth::Origin;
use read::Item;

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

/// What one `ipc-apply` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub applied: usize,
    pub rejected: usize,
    pub entries: Vec<Entry>,
}

impl Report {
    fn push(&mut self, e: Entry) {
        if e.ok {
            self.applied += 1;
        } else {
            self.rejected += 1;
        }
        self.entries.push(e);
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
        IpcRequest::ScheduleTask { .. } => "schedule_task",
        IpcRequest::UpdateTask { .. } => "update_task",
        IpcRequest::PauseTask { .. } => "pause_task",
        IpcRequest::ResumeTask { .. } => "resume_task",
        IpcRequest::CancelTask { .. } => "cancel_task",
        IpcRequest::RegisterGroup { .. } => "register_group",
        IpcRequest::RefreshGroups => "refresh_groups",
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
        crate::error::Coded::err(
            crate::error::Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })?;
    let mut report = Report::default();
    let mut touched = Touched::default();
    apply_one(home, store, config, &group, &mut report, &mut touched)?;
    refresh(home, store, &touched)?;
    Ok(report)
}

/// Apply the requests of every registered group, then refresh affected snapshots once.
pub fn apply_all(home: &Home, store: &mut Store, config: &Config) -> Result<Report> {
    let mut report = Report::default();
    let mut touched = Touched::default();
    let mut first_err = None;
    for group in groups::list(&store.conn)? {
        // One group's broken folder must not hold up every other group's messages.
        if let Err(e) = apply_one(home, store, config, &group, &mut report, &mut touched)
            .with_context(|| format!("applying IPC requests of group `{}`", group.folder))
        {
            tracing::error!(folder = %group.folder, error = %format!("{e:#}"), "ipc-apply failed for group");
            first_err.get_or_insert(e);
        }
    }
    refresh(home, store, &touched)?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Rewrite the snapshots a batch affected. The requests are already committed, so a snapshot
/// that cannot be written is logged (run-group rewrites it before the next run), not fatal.
fn refresh(home: &Home, store: &Store, touched: &Touched) -> Result<()> {
    if touched.task_folders.is_empty() && !touched.chats {
        return Ok(());
    }
    let main = groups::main(&store.conn)?;
    let mut todo: Vec<(&str, bool)> = touched
        .task_folders
        .iter()
        .filter(|f| main.as_ref().is_none_or(|m| &m.folder != *f))
        .map(|f| (f.as_str(), false))
        .collect();
    if let Some(m) = &main {
        todo.push((&m.folder, true));
    }
    for (folder, is_main) in todo {
        if let Err(e) = crate::snapshot::write_snapshots(home, store, folder, is_main) {
            tracing::warn!(folder, error = %format!("{e:#}"), "snapshot not written");
        }
    }
    Ok(())
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

fn apply_one(
    home: &Home,
    store: &mut Store,
    config: &Config,
    group: &groups::Group,
    report: &mut Report,
    touched: &mut Touched,
) -> Result<()> {
    let folder = group.folder.as_str();
    let _lock = crate::lock::acquire(&home.ipc_lock(folder))?;
    std::fs::create_dir_all(home.ipc())?;
    let ipc = Dir::open(&home.ipc())
        .with_context(|| format!("cannot open {} (is it a symlink?)", home.ipc().display()))?;
    let (errors, _) = fsat::ensure_subdir(&ipc, "errors", None)?;
    match ipc.kind(OsStr::new(folder))? {
        None => return Ok(()),
        Some(Kind::Dir) => {}
        Some(k) => {
            let reason = format!(
                "ipc/{folder} is a {}, not a directory; not followed",
                k.describe()
            );
            return reject_dir(store, folder, folder, &reason, report);
        }
    }
    let gdir = ipc.sub(folder)?;
    let mut items: Vec<(usize, Item)> = Vec::new();
    let mut dirs: Vec<Dir> = Vec::new();
    for sub in [IPC_MESSAGES_DIR, IPC_TASKS_DIR] {
        match gdir.kind(OsStr::new(sub))? {
            None => continue,
            Some(Kind::Dir) => {}
            Some(k) => {
                let reason = format!(
                    "ipc/{folder}/{sub} is a {}, not a directory; moved aside, not followed",
                    k.describe()
                );
                let moved = read::quarantine(&errors, &gdir, OsStr::new(sub), folder, sub, &reason);
                gdir.mkdir(sub)?;
                reject_dir(store, folder, sub, &reason, report)?;
                if let Some(e) = report.entries.last_mut() {
                    e.moved_to = moved.ok();
                }
                continue;
            }
        }
        let d = gdir.sub(sub)?;
        let idx = dirs.len();
        items.extend(read::scan(&d, sub)?.into_iter().map(|i| (idx, i)));
        dirs.push(d);
    }
    if items.is_empty() {
        return Ok(());
    }
    let origin = Origin {
        folder: folder.to_string(),
        is_main: group.is_main,
        chat_id: group.chat_id.clone(),
    };
    let mut replies: Option<Dir> = None;
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        // register_group runs in its own transaction (crate::groups::add); everything else is
        // batched so 10,000 files do not cost 10,000 commits.
        let mut done: Vec<(usize, Item, Result<Effect, String>)> = Vec::new();
        if matches!(rest.peek(), Some((_, i)) if matches!(i.parsed, Ok(IpcRequest::RegisterGroup { .. })))
        {
            let (d, item) = rest.next().expect("peeked");
            let req = item.parsed.as_ref().expect("matched Ok");
            let tag = tag_of(folder, &item);
            let facts = auth::facts(&store.conn, &origin, req)?;
            let outcome = match auth::authorise(&origin, req, &facts) {
                Err(r) => Err(r),
                Ok(_) => apply::register(store, home, config, &tag, req)?,
            };
            done.push((d, item, outcome));
        } else {
            let mut tx = store.write()?;
            let now = crate::time::now_ms();
            while let Some((_, i)) = rest.peek() {
                if matches!(i.parsed, Ok(IpcRequest::RegisterGroup { .. })) {
                    break;
                }
                let (d, item) = rest.next().expect("peeked");
                let sp = tx.savepoint()?;
                let outcome = match &item.parsed {
                    Err(r) => Err(r.clone()),
                    Ok(req) => {
                        let facts = auth::facts(&sp, &origin, req)?;
                        match auth::authorise(&origin, req, &facts) {
                            Err(r) => Err(r),
                            Ok(allowed) => apply::apply(
                                &sp,
                                &origin,
                                &tag_of(folder, &item),
                                req,
                                allowed,
                                now,
                            )?,
                        }
                    }
                };
                if outcome.is_ok() {
                    sp.commit()?;
                } else {
                    drop(sp);
                }
                done.push((d, item, outcome));
            }
            tx.commit()?;
        }
        // Only now, with the store committed, touch the files.
        let tx = store.write()?;
        for (d, item, outcome) in done {
            let entry = finish_file(
                &tx,
                &dirs[d],
                &errors,
                &gdir,
                &mut replies,
                folder,
                &item,
                outcome,
                touched,
            )?;
            report.push(entry);
        }
        tx.commit()?;
    }
    Ok(())
}

fn tag_of(folder: &str, item: &Item) -> String {
    format!(
        "ipc:{folder}/{}",
        item.stem.as_deref().unwrap_or("(bad name)")
    )
}

/// Delete an applied file or move a rejected one aside, write the reply, record the audit row.
#[allow(clippy::too_many_arguments)]
fn finish_file(
    conn: &rusqlite::Connection,
    dir: &Dir,
    errors: &Dir,
    gdir: &Dir,
    replies: &mut Option<Dir>,
    folder: &str,
    item: &Item,
    outcome: Result<Effect, String>,
    touched: &mut Touched,
) -> Result<Entry> {
    let request = item.parsed.as_ref().ok().map(request_type);
    let label = item.label();
    let mut entry = Entry {
        folder: folder.into(),
        file: label.clone(),
        ok: outcome.is_ok(),
        request,
        task_id: None,
        outbox_id: None,
        reason: None,
        moved_to: None,
    };
    let wants_reply = item.sub == IPC_TASKS_DIR && item.stem.is_some();
    if wants_reply && replies.is_none() {
        let q = format!("{folder}-replies-{}", crate::time::now_ms());
        match fsat::ensure_subdir(gdir, IPC_REPLIES_DIR, Some((errors, OsStr::new(&q)))) {
            Ok((d, _)) => *replies = Some(d),
            Err(e) => {
                tracing::warn!(folder, error = %e, "replies folder unusable; no replies written")
            }
        }
    }
    let reply = match &outcome {
        Ok(effect) => {
            entry.task_id = effect.task_id;
            entry.outbox_id = effect.outbox_id;
            if let Some(f) = &effect.task_folder {
                touched.task_folders.insert(f.clone());
            }
            touched.chats |= effect.chats_changed;
            if !(wants_reply && replies.is_some())
                && let Err(e) = dir.unlink(&item.name)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(folder, file = %label, error = %e, "applied request file could not be deleted");
            }
            audit::record(
                conn,
                Some(folder),
                None,
                "ipc.applied",
                serde_json::json!({"file": label, "type": request, "task_id": effect.task_id,
                                   "outbox_id": effect.outbox_id}),
            )?;
            IpcReply {
                ok: true,
                task_id: effect.task_id,
                error: None,
            }
        }
        Err(reason) => {
            let moved = read::quarantine(errors, dir, &item.name, folder, &label, reason);
            let moved_to = match moved {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(folder, file = %label, error = %e, "rejected request file could not be moved");
                    None
                }
            };
            audit::record(
                conn,
                Some(folder),
                None,
                "ipc.rejected",
                serde_json::json!({"file": label, "type": request, "reason": reason,
                                   "moved_to": moved_to}),
            )?;
            entry.reason = Some(reason.clone());
            entry.moved_to = moved_to;
            IpcReply {
                ok: false,
                task_id: None,
                error: Some(reason.clone()),
            }
        }
    };
    if let (Some(r), Some(stem)) = (replies.as_ref(), &item.stem)
        && wants_reply
    {
        let body = serde_json::to_vec_pretty(&reply)?;
        let written = if entry.ok {
            reply_in_place(dir, r, &item.name, stem, &body)
        } else {
            r.write_atomic(&format!("{stem}.json"), &body)
        };
        if let Err(e) = written {
            tracing::warn!(folder, file = %label, error = %e, "reply could not be written");
            // An applied request must never stay where it would be applied again.
            if entry.ok
                && let Err(e) = dir.unlink(&item.name)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(folder, file = %label, error = %e, "applied request file could not be deleted");
            }
        }
    }
    Ok(entry)
}

/// Turn an applied request file into its reply: overwrite it where it is, then rename it to
/// `replies/<stem>.json` (one rename, no delete plus create per request, which on a busy ext4
/// costs far more). If the file cannot be rewritten (swapped for a link, FIFO or hard link, or
/// not writable by the host), it is removed and a fresh reply written instead.
fn reply_in_place(
    dir: &Dir,
    replies: &Dir,
    name: &OsStr,
    stem: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let target = format!("{stem}.json");
    if dir.overwrite_regular(name, body).is_ok()
        && dir.rename_to(name, replies, OsStr::new(&target)).is_ok()
    {
        return Ok(());
    }
    match dir.kind(name)? {
        Some(Kind::Dir) => dir.rmdir(name)?,
        Some(_) => dir.unlink(name)?,
        None => {}
    }
    replies.write_atomic(&target, body)
}
