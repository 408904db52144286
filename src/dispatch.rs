//! `claw dispatch`: find groups with runnable work and start one detached `claw run-group` for
//! each while container slots are free. It also recovers what crashed: runs whose process died
//! are marked failed (and retried with backoff), and `claw-*` containers without a live run are
//! removed. Holds the global lock only for its short decision, never while a run goes on.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::config::Config;
use crate::paths::Home;
use crate::pending;
use crate::run_group::log::RunLog;
use crate::store::{Store, groups, messages, runs};

/// Flags of `claw dispatch`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print what would start and why, change nothing.
    pub dry_run: bool,
    /// Wait for the started runs to finish.
    pub wait: bool,
}

/// One decision about one group.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub folder: String,
    pub run_id: Option<i64>,
    pub kind: String,
    pub action: String,
    pub reason: String,
    pub pid: Option<u32>,
}

/// What a dispatch pass did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub decisions: Vec<Decision>,
    pub recovered_runs: Vec<i64>,
    pub removed_containers: Vec<String>,
    pub notes: Vec<String>,
    /// Exit codes of waited-for runs (with `--wait`).
    pub waited: Vec<(i64, Option<i32>)>,
}

/// One dispatch pass.
pub fn dispatch(home: &Home, config: &Config, opts: &Options) -> Result<Report> {
    let mut report = Report::default();
    let mut children: Vec<(i64, Child)> = Vec::new();
    {
        let _global = crate::lock::acquire(&home.global_lock())?;
        let mut store = Store::open(home)?;
        if !opts.dry_run {
            report.recovered_runs = recover_dead_runs(home, &mut store, config)?;
            remove_strays(home, &store, config, &mut report);
        }
        let mut free = (0..config.runtime.max_concurrent)
            .filter(|n| !crate::lock::is_held(&home.slot_lock(*n)).unwrap_or(true))
            .count();
        for cand in candidates(home, &store, config)? {
            let mut d = Decision {
                folder: cand.folder.clone(),
                run_id: cand.run_id,
                kind: cand.kind.clone(),
                action: "start".into(),
                reason: cand.reason.clone(),
                pid: None,
            };
            if crate::lock::is_held(&home.group_lock(&cand.folder))? {
                d.action = "skip".into();
                d.reason = "a run is in progress for this group".into();
            } else if let Some(why) = runs_limit(&mut store, config, &cand.folder, opts.dry_run)? {
                // Queued task runs wait too (one per task at most: the schedule skips the slots
                // of a task whose run is still queued), and start once the hour allows.
                d.action = "skip".into();
                d.reason = why;
            } else if free == 0 {
                d.action = "wait".into();
                d.reason = format!(
                    "all {} slots busy; {}",
                    config.runtime.max_concurrent, cand.reason
                );
            } else if !opts.dry_run {
                let tx = store.write()?;
                let run_id = match cand.run_id {
                    Some(id) => id,
                    None => {
                        let attempt = crate::run_group::next_attempt(&tx, &cand.folder)?;
                        runs::queue(&tx, &cand.folder, &cand.kind, None, None, attempt)?
                    }
                };
                tx.commit()?;
                let child = spawn(home, &cand.folder, run_id)?;
                store.conn.execute(
                    "UPDATE runs SET pid = ?2 WHERE id = ?1 AND status = 'queued'",
                    rusqlite::params![run_id, child.id()],
                )?;
                d.run_id = Some(run_id);
                d.pid = Some(child.id());
                free -= 1;
                children.push((run_id, child));
            } else {
                free -= 1;
            }
            report.decisions.push(d);
        }
    }
    if opts.wait {
        for (run_id, mut child) in children {
            let code = child.wait().ok().and_then(|s| s.code());
            report.waited.push((run_id, code));
        }
    }
    Ok(report)
}

/// Whether the runs-per-hour limit stops `folder` now. Outside a dry run the group's chat is told
/// (once per window), in the same transaction that decides.
fn runs_limit(
    store: &mut Store,
    config: &Config,
    folder: &str,
    dry_run: bool,
) -> Result<Option<String>> {
    let now = crate::time::now_ms();
    let Some(group) = groups::get(&store.conn, folder)? else {
        return Ok(None);
    };
    if let Some(why) = crate::limits::budget_stop(&store.conn, config, &group, now, !dry_run)? {
        return Ok(Some(why));
    }
    let gate = crate::limits::runs_gate(&store.conn, &config.limits, &group, now)?;
    let crate::limits::RunGate::Closed { started, until, .. } = gate else {
        return Ok(None);
    };
    if dry_run {
        return Ok(Some(crate::limits::run_reason(&group, started, until)));
    }
    let tx = store.write()?;
    let why = crate::limits::refuse_run(&tx, &config.limits, &group, now)?;
    tx.commit()?;
    Ok(why)
}

struct Candidate {
    folder: String,
    run_id: Option<i64>,
    kind: String,
    reason: String,
}

/// Queued runs first (tasks and earlier dispatches), then groups with runnable messages.
fn candidates(home: &Home, store: &Store, config: &Config) -> Result<Vec<Candidate>> {
    let conn = &store.conn;
    let now = crate::time::now_ms();
    let mut out: Vec<Candidate> = Vec::new();
    for r in runs::with_status(conn, "queued")? {
        if r.pid.is_some_and(|p| pid_alive(p as i32)) || out.iter().any(|c| c.folder == r.folder) {
            continue;
        }
        let reason = match r.kind.as_str() {
            "task" => format!("scheduled task {} is due", r.task_id.unwrap_or(0)),
            _ => "queued run".to_string(),
        };
        out.push(Candidate {
            folder: r.folder.clone(),
            run_id: Some(r.id),
            kind: r.kind.clone(),
            reason,
        });
    }
    let running: std::collections::HashSet<String> = runs::with_status(conn, "running")?
        .into_iter()
        .map(|r| r.folder)
        .collect();
    for g in groups::list(conn)? {
        if out.iter().any(|c| c.folder == g.folder) || running.contains(&g.folder) {
            continue;
        }
        let cursor = groups::cursor(conn, &g.folder)?;
        let pending =
            messages::latest_since(conn, &g.chat_id, cursor, config.limits.prompt_messages)?;
        let d = pending::decide(&g, &pending);
        if !d.runnable {
            continue;
        }
        if let Some(r) = runs::latest_of_kind(conn, &g.folder, "messages")?
            && r.status == "failed"
            && let Some(at) = r.retry_at
            && at > now
        {
            tracing::debug!(folder = %g.folder, "backing off until {}", crate::time::rfc3339(at));
            continue;
        }
        let _ = home;
        out.push(Candidate {
            folder: g.folder.clone(),
            run_id: None,
            kind: "messages".into(),
            reason: d.reason,
        });
    }
    Ok(out)
}

/// Start `claw run-group FOLDER --run ID` in its own session, output appended to its run log.
fn spawn(home: &Home, folder: &str, run_id: i64) -> Result<Child> {
    let exe = crate::exe::claw_exe().context("cannot find the claw executable")?;
    let log_path = RunLog::path_for(&home.logs(), folder, run_id);
    std::fs::create_dir_all(log_path.parent().expect("log has a folder"))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(&home.root)
        .arg("run-group")
        .arg(folder)
        .arg("--run")
        .arg(run_id.to_string());
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start run-group for `{folder}`"))
}

/// True if a process with this pid exists.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Runs marked running whose run-group died (its group lock is free): mark them failed.
fn recover_dead_runs(home: &Home, store: &mut Store, config: &Config) -> Result<Vec<i64>> {
    let mut recovered = Vec::new();
    for r in runs::with_status(&store.conn, "running")? {
        if crate::lock::is_held(&home.group_lock(&r.folder))? {
            continue;
        }
        let tx = store.write()?;
        let retry_at = if r.output_sent || r.kind == "task" {
            None
        } else {
            Some(
                crate::time::now_ms()
                    + (config.limits.retry_base_secs as i64 * 1000)
                        * (1i64 << (r.attempt.max(1) - 1).min(20)),
            )
        };
        runs::finish(
            &tx,
            r.id,
            false,
            None,
            Some("run-group process died; recovered by dispatch"),
            retry_at,
        )?;
        if let Some(tr) = r.task_run_id {
            tx.execute(
                "UPDATE task_runs SET status = 'failed', error = 'run-group process died', ended_at = ?2 WHERE id = ?1 AND status IN ('queued','running')",
                rusqlite::params![tr, crate::time::now_ms()],
            )?;
        }
        crate::store::audit::record(
            &tx,
            Some(&r.folder),
            Some(r.id),
            "run.recovered",
            serde_json::json!({"pid": r.pid}),
        )?;
        tx.commit()?;
        recovered.push(r.id);
    }
    Ok(recovered)
}

/// Remove `claw-*` containers whose run is not running any more.
fn remove_strays(home: &Home, store: &Store, config: &Config, report: &mut Report) {
    let kind = match crate::runtime::resolve_fast(&config.runtime.kind) {
        Ok(rt) => rt.kind,
        Err(e) => {
            report.notes.push(format!("stray check skipped: {e:#}"));
            return;
        }
    };
    let listed = duct::cmd(kind.program(), crate::runtime::list_args(kind, "claw-"))
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run();
    let names = match listed {
        Ok(o) if o.status.success() => {
            crate::runtime::parse_list(&String::from_utf8_lossy(&o.stdout), "claw-")
        }
        _ => {
            report.notes.push(format!(
                "stray check skipped: `{} ps` failed",
                kind.program()
            ));
            return;
        }
    };
    for name in names {
        // Containers of other claw homes are none of our business.
        let Some(run_id) = crate::run_group::run_id_of(home, &name) else {
            continue;
        };
        let live = runs::get(&store.conn, run_id)
            .ok()
            .flatten()
            .is_some_and(|r| {
                r.status == "running" && r.container.as_deref() == Some(name.as_str())
            });
        if live {
            continue;
        }
        let args = crate::runtime::rm_args(kind, &name);
        match duct::cmd(kind.program(), &args)
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
        {
            Ok(o) if o.status.success() => report.removed_containers.push(name),
            _ => report
                .notes
                .push(format!("could not remove stray container {name}")),
        }
    }
}
