//! One pass over one group's request folders, as a stream: names (bounded), then batches of
//! files (bounded by count and bytes), each batch decided, applied, committed and finished
//! before the next one is read. The pass stops at the group's cap (`read::Budget`); what is left
//! waits for the next pass and the report says so.

use anyhow::{Context, Result};
use std::ffi::OsStr;

use super::apply::{self, Effect};
use super::auth::{self, Allowed, Origin};
use super::finish::Finisher;
use super::read::{self, Budget, Item};
use super::{Deferred, Report, Touched, quota, reject_dir};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::{IPC_MESSAGES_DIR, IPC_TASKS_DIR, IpcRequest};
use crate::infra::store::{Store, groups};
use crate::infra::untrusted::{Dir, Kind};
use crate::rules::approvals::ipc::Verdict;

/// Apply one group's requests, at most one pass's worth.
pub(super) fn apply_one(
    home: &Home,
    store: &mut Store,
    config: &Config,
    group: &groups::Group,
    report: &mut Report,
    touched: &mut Touched,
) -> Result<()> {
    let folder = group.folder.as_str();
    let _lock = crate::infra::lock::acquire(&home.ipc_lock(folder))?;
    let crate::infra::untrusted::Parents { ipc, errors, .. } =
        crate::infra::untrusted::Parents::open(home).with_context(|| {
            format!("cannot open the IPC folders under {}", home.root.display())
        })?;
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
    let mut fin = Finisher::new(&errors, &gdir, folder);
    let mut budget = Budget::pass();
    let mut waiting = false;
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
                if let Ok(q) = &moved {
                    fin.moved_bytes += q.disk_bytes;
                    fin.moved_dir |= q.dir;
                }
                if let Some(e) = report.entries.last_mut() {
                    e.moved_to = moved.ok().map(|q| q.name);
                }
                continue;
            }
        }
        let d = gdir.sub(sub)?;
        if budget.spent() {
            waiting |= !read::names(&d, 1)?.0.is_empty();
            break;
        }
        let (names, more) = read::names(&d, budget.files)?;
        let mut names = names.into_iter().peekable();
        while names.peek().is_some() && !budget.spent() {
            let batch = read::next_batch(&d, sub, &mut names, &mut budget);
            apply_batch(
                home, store, config, group, &d, &mut fin, batch, report, touched,
            )?;
        }
        waiting |= more || budget.put_off || names.peek().is_some();
    }
    report.quarantined_bytes += fin.moved_bytes;
    report.quarantined_dirs |= fin.moved_dir;
    if waiting {
        let reason = format!(
            "more than one pass's worth of requests ({} files or {} MiB); the rest wait for the next pass",
            read::MAX_FILES_PER_PASS,
            read::MAX_BYTES_PER_PASS >> 20
        );
        tracing::warn!(folder, "{reason}");
        report.deferred.push(Deferred {
            folder: folder.into(),
            reason,
        });
    }
    Ok(())
}

/// Decide and apply one batch in one transaction (a savepoint per file), commit, then finish
/// every file of it. `register_group` runs in its own transaction (`crate::rules::groups::add`).
#[allow(clippy::too_many_arguments)]
fn apply_batch(
    home: &Home,
    store: &mut Store,
    config: &Config,
    group: &groups::Group,
    dir: &Dir,
    fin: &mut Finisher,
    batch: Vec<Item>,
    report: &mut Report,
    touched: &mut Touched,
) -> Result<()> {
    let folder = group.folder.as_str();
    let origin = Origin {
        folder: folder.to_string(),
        is_main: group.is_main,
        chat_id: group.chat_id.clone(),
    };
    let limits = crate::rules::limits::for_group(&config.limits, group);
    // Requests applied outside the batch transaction: a group registration (its own
    // transaction) and an MCP server (a file).
    let is_register = |i: &Item| {
        matches!(
            i.parsed,
            Ok(IpcRequest::RegisterGroup { .. } | IpcRequest::AddMcpServer { .. })
        )
    };
    let mut rest = batch.into_iter().peekable();
    while rest.peek().is_some() {
        let mut done: Vec<(Item, Result<Effect, String>)> = Vec::new();
        // Requests left in place for the owner's answer: (item, approval id, deadline).
        let mut waiting: Vec<(Item, i64, i64)> = Vec::new();
        if rest.peek().is_some_and(is_register) {
            let item = rest.next().expect("peeked");
            let req = item.parsed.as_ref().expect("matched Ok");
            let tag = tag_of(folder, &item);
            let facts = auth::facts(&store.conn, &origin, req)?;
            let outcome = match auth::authorise(&origin, req, &facts) {
                Err(r) => Err(r),
                Ok(allowed @ Allowed::AddMcp { .. }) => {
                    // Adding a server is a governed act: its policy, and for `ask` its card.
                    let tx = store.write()?;
                    let now = crate::infra::time::now_ms();
                    let verdict = crate::rules::approvals::ipc::add_mcp_server(
                        &tx, config, group, req, &tag, allowed, now,
                    )?;
                    if let Some(stem) = &item.stem {
                        fin.answer_also(stem);
                    }
                    match verdict {
                        Verdict::Go(allowed) => {
                            tx.commit()?;
                            apply::add_mcp(store, home, &origin, &tag, req, allowed)?
                        }
                        Verdict::Refuse(r) => {
                            tx.commit()?;
                            Err(r)
                        }
                        Verdict::Wait {
                            id,
                            asked_now,
                            expires_at,
                        } => {
                            tx.commit()?;
                            report.asked += asked_now as usize;
                            fin.pending(&item, id, expires_at, now);
                            report.waiting += 1;
                            continue;
                        }
                    }
                }
                Ok(_) => apply::register(store, home, config, &tag, req)?,
            };
            done.push((item, outcome));
        } else {
            let mut tx = store.write()?;
            let now = crate::infra::time::now_ms();
            while let Some(item) = rest.next_if(|i| !is_register(i)) {
                let outcome = match &item.parsed {
                    Err(r) => Err(r.clone()),
                    Ok(req) => {
                        let facts = auth::facts(&tx, &origin, req)?;
                        let tag = tag_of(folder, &item);
                        let gated = crate::rules::approvals::ipc::gate(
                            &tx, config, group, &origin, req, &facts, &tag, now,
                        )?;
                        if gated.is_some()
                            && let Some(stem) = &item.stem
                        {
                            // The agent waits for the answer to a governed act.
                            fin.answer_also(stem);
                        }
                        let allowed = match gated {
                            None => auth::authorise(&origin, req, &facts),
                            Some(Verdict::Go(a)) => Ok(a),
                            Some(Verdict::Refuse(r)) => Err(r),
                            Some(Verdict::Wait {
                                id,
                                asked_now,
                                expires_at,
                            }) => {
                                report.asked += asked_now as usize;
                                waiting.push((item, id, expires_at));
                                continue;
                            }
                        };
                        match allowed {
                            Err(r) => Err(r),
                            Ok(allowed) => {
                                match quota::check(&tx, limits.as_ref(), group, req, &allowed, now)?
                                {
                                    Some(refusal) => {
                                        quota::tell(&tx, group, &refusal, now)?;
                                        Err(refusal.reason)
                                    }
                                    None => {
                                        let sp = tx.savepoint()?;
                                        let o = if let IpcRequest::SendFile { .. } = req {
                                            super::send_file::apply(
                                                &sp, home, config, &origin, &tag, req, allowed,
                                            )?
                                        } else {
                                            apply::apply(&sp, &origin, &tag, req, allowed, now)?
                                        };
                                        if o.is_ok() {
                                            sp.commit()?;
                                        }
                                        o
                                    }
                                }
                            }
                        }
                    }
                };
                done.push((item, outcome));
            }
            tx.commit()?;
        }
        // Only now, with the store committed, touch the files.
        let tx = store.write()?;
        for (item, outcome) in done {
            report.push(fin.finish(&tx, dir, &item, outcome, touched)?);
        }
        tx.commit()?;
        let now = crate::infra::time::now_ms();
        for (item, id, expires_at) in waiting {
            fin.pending(&item, id, expires_at, now);
            report.waiting += 1;
        }
    }
    Ok(())
}

/// The origin tag of a request: folder and file stem, so re-applying a file is recognised.
fn tag_of(folder: &str, item: &Item) -> String {
    format!(
        "ipc:{folder}/{}",
        item.stem.as_deref().unwrap_or("(bad name)")
    )
}
