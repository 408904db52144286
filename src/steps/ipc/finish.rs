//! Finishing a request file once its outcome is committed: delete an applied file, move a
//! rejected one to `ipc/errors/` with a reason, answer task requests in `replies/`, and record the
//! audit row. Every file operation goes through `crate::infra::untrusted`.

use anyhow::Result;
use std::ffi::OsStr;

use super::apply::Effect;
use super::read::{self, Item};
use super::{Entry, Touched, request_type};
use crate::infra::protocol::{IPC_REPLIES_DIR, IPC_TASKS_DIR, IpcReply};
use crate::infra::store::audit;
use crate::infra::untrusted::{self as fsat, Dir, Kind};

/// Where one group's finished files go.
pub(super) struct Finisher<'a> {
    errors: &'a Dir,
    gdir: &'a Dir,
    folder: &'a str,
    /// `ipc/FOLDER/replies`, opened on first use.
    replies: Option<Dir>,
    /// Disk bytes moved into `ipc/errors/` so far, and whether a directory was.
    pub(super) moved_bytes: u64,
    pub(super) moved_dir: bool,
    /// Stems of `messages/` requests that get a reply too (acts governed by approvals).
    answer: std::collections::HashSet<String>,
}

impl<'a> Finisher<'a> {
    /// Finish files of `folder`, whose IPC folder is `gdir`.
    pub(super) fn new(errors: &'a Dir, gdir: &'a Dir, folder: &'a str) -> Finisher<'a> {
        Finisher {
            errors,
            gdir,
            folder,
            replies: None,
            moved_bytes: 0,
            moved_dir: false,
            answer: Default::default(),
        }
    }

    /// The replies folder; a link or file planted there is moved to `ipc/errors/` (with a
    /// reason file, so pruning keeps the two together) and a real folder made.
    fn replies(&mut self) -> Option<&Dir> {
        if self.replies.is_none() {
            let folder = self.folder;
            let q = format!("{folder}-replies-{}", crate::infra::time::now_ms());
            match fsat::ensure_subdir(
                self.gdir,
                IPC_REPLIES_DIR,
                Some((self.errors, OsStr::new(&q))),
            ) {
                Ok((d, displaced)) => {
                    if let Some(k) = displaced {
                        let text = format!(
                            "ipc/{folder}/{IPC_REPLIES_DIR}\nmoved aside at {}\nreason: it was a {}, not a directory\n",
                            crate::infra::time::rfc3339(crate::infra::time::now_ms()),
                            k.describe()
                        );
                        let name = format!("{q}.reason.txt");
                        if let Err(e) = self.errors.create_new(OsStr::new(&name), text.as_bytes()) {
                            tracing::warn!(folder, error = %e, "reason file not written");
                        }
                    }
                    self.replies = Some(d);
                }
                Err(e) => {
                    tracing::warn!(folder, error = %e, "replies folder unusable; no replies written")
                }
            }
        }
        self.replies.as_ref()
    }

    /// Delete an applied file or move a rejected one aside, write the reply, record the audit row.
    pub(super) fn finish(
        &mut self,
        conn: &rusqlite::Connection,
        dir: &Dir,
        item: &Item,
        outcome: Result<Effect, String>,
        touched: &mut Touched,
    ) -> Result<Entry> {
        let folder = self.folder;
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
        let wants_reply = (item.sub == IPC_TASKS_DIR
            || item.stem.as_ref().is_some_and(|s| self.answer.contains(s)))
            && item.stem.is_some()
            && self.replies().is_some();
        let reply = match &outcome {
            Ok(effect) => {
                entry.task_id = effect.task_id;
                entry.outbox_id = effect.outbox_id;
                if let Some(f) = &effect.task_folder {
                    touched.task_folders.insert(f.clone());
                }
                touched.chats |= effect.chats_changed;
                if !wants_reply {
                    unlink_applied(dir, &item.name, folder, &label);
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
                    ..IpcReply::default()
                }
            }
            Err(reason) => {
                let moved = read::quarantine(self.errors, dir, &item.name, folder, &label, reason);
                let moved_to = match moved {
                    Ok(q) => {
                        self.moved_bytes += q.disk_bytes;
                        self.moved_dir |= q.dir;
                        Some(q.name)
                    }
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
                    ..IpcReply::default()
                }
            }
        };
        if let (true, Some(r), Some(stem)) = (wants_reply, self.replies.as_ref(), &item.stem) {
            let body = serde_json::to_vec_pretty(&reply)?;
            let written = if entry.ok {
                reply_in_place(dir, r, &item.name, stem, &body)
            } else {
                r.write_atomic(&format!("{stem}.json"), &body)
            };
            if let Err(e) = written {
                tracing::warn!(folder, file = %label, error = %e, "reply could not be written");
                // An applied request must never stay where it would be applied again.
                if entry.ok {
                    unlink_applied(dir, &item.name, folder, &label);
                }
            }
        }
        Ok(entry)
    }
}

impl Finisher<'_> {
    /// Give `messages/<stem>` a reply like a task request (an act governed by approvals).
    pub(super) fn answer_also(&mut self, stem: &str) {
        self.answer.insert(stem.to_string());
    }

    /// Tell the agent its request waits for approval `id` (a `pending` reply); the file stays
    /// where it is for the next pass. Failure is only logged: the final reply still comes.
    pub(super) fn pending(&mut self, item: &Item, id: i64, expires_at: i64, now: i64) {
        let folder = self.folder;
        let (Some(stem), Some(r)) = (item.stem.clone(), self.replies()) else {
            return;
        };
        let reply = IpcReply {
            ok: false,
            pending: true,
            approval_id: Some(id),
            expires_in_secs: Some((expires_at.saturating_sub(now).max(0) / 1000) as u64),
            error: Some(format!(
                "waiting for the owner's approval {id} in the main chat"
            )),
            ..IpcReply::default()
        };
        let Ok(body) = serde_json::to_vec_pretty(&reply) else {
            return;
        };
        if let Err(e) = r.write_atomic(&format!("{stem}.json"), &body) {
            tracing::warn!(folder, file = %item.label(), error = %e, "pending reply not written");
        }
    }
}

/// Delete an applied request file; one that is already gone is fine.
fn unlink_applied(dir: &Dir, name: &OsStr, folder: &str, label: &str) {
    if let Err(e) = dir.unlink(name)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(folder, file = %label, error = %e, "applied request file could not be deleted");
    }
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
