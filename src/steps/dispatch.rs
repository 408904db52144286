//! `claw dispatch`: find groups with runnable work and start one detached `claw run-group` for
//! each while container slots are free. It also recovers what crashed: runs whose process died
//! are marked failed (and retried with backoff), and `claw-*` containers without a live run are
//! removed. Holds the global lock only for its short decision, never while a run goes on.
//!
//! Idle costs nothing: before taking any lock, one indexed probe each asks whether there is a
//! queued or running run, a recorded container, or a group with messages past its cursor; with
//! none, the pass ends there. The stray sweep (the only runtime call) runs only when the database
//! says a run ended abnormally, or at most every [`SWEEP_EVERY`] while runs are happening.

use anyhow::{Context, Result};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::{Store, groups, marks, messages, runs};
use crate::rules::pending;
use crate::steps::run_group::log::RunLog;

/// Longest gap between two routine stray sweeps while runs are happening (none while idle).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// Shortest gap between sweeps for a recorded container of a finished run.
const ORPHAN_SWEEP_GAP_MS: i64 = 30_000;
/// Mark of the last stray sweep.
const SWEEP_MARK: &str = "dispatch.sweep";
/// Set while a group waits for a free slot, so the run that frees one chains a dispatch.
const WAITING_MARK: &str = "dispatch.waiting";

/// Flags of `claw dispatch`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print what would start and why, change nothing.
    pub dry_run: bool,
    /// Wait for the started runs to finish.
    pub wait: bool,
    /// Only these groups' work (empty: every group). Recovery and the sweep stay global.
    pub groups: Vec<String>,
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
    /// Why the stray sweep ran in this pass (it did not when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swept: Option<String>,
}

/// One dispatch pass.
pub fn dispatch(home: &Home, config: &Config, opts: &Options) -> Result<Report> {
    dispatch_with(home, &mut Store::open(home)?, config, opts)
}

/// One dispatch pass on an open store (`claw tick` shares its connection).
pub fn dispatch_with(
    home: &Home,
    store: &mut Store,
    config: &Config,
    opts: &Options,
) -> Result<Report> {
    let mut report = Report::default();
    let mut children: Vec<(i64, Child)> = Vec::new();
    if !anything_to_do(&store.conn, crate::infra::time::now_ms())? {
        return Ok(report);
    }
    {
        let _global = crate::infra::lock::acquire(&home.global_lock())?;
        if !opts.dry_run {
            report.recovered_runs = recover_dead_runs(home, store, config)?;
            let now = crate::infra::time::now_ms();
            if let Some(why) = sweep_reason(&store.conn, !report.recovered_runs.is_empty(), now)? {
                marks::clear(&store.conn, SWEEP_MARK)?;
                marks::claim(&store.conn, SWEEP_MARK, now, 0)?;
                remove_strays(home, store, config, &mut report);
                report.swept = Some(why);
            }
        }
        let mut free = (0..config.runtime.max_concurrent)
            .filter(|n| !crate::infra::lock::is_held(&home.slot_lock(*n)).unwrap_or(true))
            .count();
        for cand in candidates(store, config, &opts.groups)? {
            let mut d = Decision {
                folder: cand.folder.clone(),
                run_id: cand.run_id,
                kind: cand.kind.clone(),
                action: "start".into(),
                reason: cand.reason.clone(),
                pid: None,
            };
            if crate::infra::lock::is_held(&home.group_lock(&cand.folder))? {
                d.action = "skip".into();
                d.reason = "a run is in progress for this group".into();
            } else if let Some(why) = runs_limit(store, config, &cand.folder, opts.dry_run)? {
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
                        let attempt = crate::steps::run_group::next_attempt(&tx, &cand.folder)?;
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
        if !opts.dry_run {
            note_waiting(&store.conn, &report.decisions, opts.groups.is_empty())?;
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
    let now = crate::infra::time::now_ms();
    let Some(group) = groups::get(&store.conn, folder)? else {
        return Ok(None);
    };
    if let Some(why) =
        crate::rules::limits::budget_stop(&store.conn, config, &group, now, !dry_run)?
    {
        return Ok(Some(why));
    }
    let gate = crate::rules::limits::runs_gate(&store.conn, &config.limits, &group, now)?;
    let crate::rules::limits::RunGate::Closed { started, until, .. } = gate else {
        return Ok(None);
    };
    if dry_run {
        return Ok(Some(crate::rules::limits::run_reason(
            &group, started, until,
        )));
    }
    let tx = store.write()?;
    let why = crate::rules::limits::refuse_run(&tx, &config.limits, &group, now)?;
    tx.commit()?;
    Ok(why)
}

struct Candidate {
    folder: String,
    run_id: Option<i64>,
    kind: String,
    reason: String,
}

/// Whether a pass has anything to look at: a queued or running run, a recorded container, a
/// group with human messages past its cursor, or a routine sweep due. Each is one probe of an
/// index (`runs_status`, the `containers` key, `messages_chat_seq_human` once per group).
fn anything_to_do(conn: &rusqlite::Connection, now: i64) -> Result<bool> {
    let busy: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE status IN ('queued', 'running'))
                 OR EXISTS (SELECT 1 FROM containers)
                 OR EXISTS (SELECT 1 FROM groups g WHERE EXISTS (
                        SELECT 1 FROM messages m WHERE m.chat_id = g.chat_id AND m.is_bot = 0
                          AND m.seq > coalesce((SELECT seq FROM cursors c WHERE c.folder = g.folder), 0)))",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(busy || routine_sweep_due(conn, now)?)
}

/// Why the stray sweep should run now, if it should: a run was just found dead, a container is
/// recorded for a run that is not running (its run-group could not see it gone), or the last
/// routine sweep is [`SWEEP_EVERY`] old and a run was queued since. An idle home never sweeps.
fn sweep_reason(conn: &rusqlite::Connection, recovered: bool, now: i64) -> Result<Option<String>> {
    if recovered {
        return Ok(Some("a run-group died".into()));
    }
    let orphaned: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM containers c LEFT JOIN runs r ON r.id = c.run_id
                            WHERE r.status IS NULL OR r.status != 'running')",
        )?
        .query_row([], |r| r.get(0))?;
    // Bounded, so a runtime that cannot answer is not asked on every tick.
    let last = marks::get(conn, SWEEP_MARK)?.unwrap_or(0);
    if orphaned && now - last >= ORPHAN_SWEEP_GAP_MS {
        return Ok(Some(
            "a container of a finished run is still recorded".into(),
        ));
    }
    if routine_sweep_due(conn, now)? {
        return Ok(Some(format!(
            "routine: runs started since the last sweep, {} s ago or more",
            SWEEP_EVERY.as_secs()
        )));
    }
    Ok(None)
}

fn routine_sweep_due(conn: &rusqlite::Connection, now: i64) -> Result<bool> {
    let last = marks::get(conn, SWEEP_MARK)?.unwrap_or(0);
    if now - last < SWEEP_EVERY.as_millis() as i64 && last <= now {
        return Ok(false);
    }
    let newest: Option<i64> = conn
        .prepare_cached(
            "SELECT max(queued_at) FROM (SELECT queued_at FROM runs ORDER BY id DESC LIMIT 1)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(newest.is_some_and(|q| q > last))
}

/// Whether the last full dispatch left a group waiting for a slot (run-group then chains one).
pub fn waiting(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(marks::get(conn, WAITING_MARK)?.is_some())
}

/// Remember whether groups wait for a slot; only a full pass may say that none does.
fn note_waiting(conn: &rusqlite::Connection, decisions: &[Decision], full: bool) -> Result<()> {
    if decisions.iter().any(|d| d.action == "wait") {
        marks::claim(conn, WAITING_MARK, crate::infra::time::now_ms(), 0)?;
    } else if full && waiting(conn)? {
        marks::clear(conn, WAITING_MARK)?;
    }
    Ok(())
}

/// Queued runs first (tasks and earlier dispatches), then groups with runnable messages; only
/// the groups in `only` when it is not empty.
fn candidates(store: &Store, config: &Config, only: &[String]) -> Result<Vec<Candidate>> {
    let conn = &store.conn;
    let now = crate::infra::time::now_ms();
    let wanted = |folder: &str| only.is_empty() || only.iter().any(|f| f == folder);
    let mut out: Vec<Candidate> = Vec::new();
    for r in runs::with_status(conn, "queued")? {
        if !wanted(&r.folder)
            || r.pid.is_some_and(|p| pid_alive(p as i32))
            || out.iter().any(|c| c.folder == r.folder)
        {
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
        if !wanted(&g.folder)
            || out.iter().any(|c| c.folder == g.folder)
            || running.contains(&g.folder)
        {
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
            tracing::debug!(folder = %g.folder, "backing off until {}", crate::infra::time::rfc3339(at));
            continue;
        }
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
    let exe = crate::infra::exe::claw_exe().context("cannot find the claw executable")?;
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
        if crate::infra::lock::is_held(&home.group_lock(&r.folder))? {
            continue;
        }
        let tx = store.write()?;
        let retry_at = if r.output_sent || r.kind == "task" {
            None
        } else {
            Some(
                crate::infra::time::now_ms()
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
            crate::infra::store::tasks::abandon_run(
                &tx,
                tr,
                "run-group process died",
                crate::infra::time::now_ms(),
            )?;
        }
        crate::infra::store::audit::record(
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

/// Remove this home's `claw-*` containers whose run is not running any more (a running run's
/// run-group owns its containers: the agent's and its task check's), then forget the recorded
/// containers the runtime no longer has.
fn remove_strays(home: &Home, store: &Store, config: &Config, report: &mut Report) {
    let kind = match crate::infra::runtime::resolve_fast(&config.runtime.kind) {
        Ok(rt) => rt.kind,
        Err(e) => {
            report.notes.push(format!("stray check skipped: {e:#}"));
            return;
        }
    };
    let listed = duct::cmd(
        kind.program(),
        crate::infra::runtime::list_args(kind, "claw-"),
    )
    .stdout_capture()
    .stderr_null()
    .unchecked()
    .run();
    let names = match listed {
        Ok(o) if o.status.success() => {
            crate::infra::runtime::parse_list(&String::from_utf8_lossy(&o.stdout), "claw-")
        }
        _ => {
            report.notes.push(format!(
                "stray check skipped: `{} ps` failed",
                kind.program()
            ));
            return;
        }
    };
    let mut gone: Vec<&str> = Vec::new();
    for name in &names {
        // Containers of other claw homes are none of our business.
        let Some(run_id) = crate::steps::run_group::run_id_of(home, name) else {
            continue;
        };
        let live = runs::get(&store.conn, run_id)
            .ok()
            .flatten()
            .is_some_and(|r| r.status == "running");
        if live {
            continue;
        }
        let args = crate::infra::runtime::rm_args(kind, name);
        match duct::cmd(kind.program(), &args)
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
        {
            Ok(o) if o.status.success() => {
                gone.push(name);
                report.removed_containers.push(name.clone());
            }
            _ => report
                .notes
                .push(format!("could not remove stray container {name}")),
        }
    }
    if let Err(e) = forget_gone(&store.conn, &names, &gone) {
        report
            .notes
            .push(format!("could not update the containers table: {e:#}"));
    }
}

/// Delete the `containers` rows of finished runs whose container the listing did not show or
/// that were just removed, so the database stops asking for a sweep.
fn forget_gone(conn: &rusqlite::Connection, listed: &[String], removed: &[&str]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.name FROM containers c LEFT JOIN runs r ON r.id = c.run_id
         WHERE r.status IS NULL OR r.status != 'running'",
    )?;
    let recorded: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in recorded {
        if !listed.contains(&name) || removed.contains(&name.as_str()) {
            crate::infra::store::containers::delete(conn, &name)?;
        }
    }
    Ok(())
}
