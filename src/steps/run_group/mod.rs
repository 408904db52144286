//! `claw run-group FOLDER`: one agent session for one group in one container, start to exit.
//!
//! Order matters: take the group lock, then a concurrency slot, then claim the run row; build
//! the prompt; write snapshots; start the proxy and the container; speak the protocol
//! (`session`); then apply the rules for the cursor and retries (`rules`). Every lock is a
//! lockfile the OS drops if this process dies, so a killed run never blocks the next one.

mod agent_io;
mod asker;
mod check;
mod container;
mod disk;
mod handoff;
pub mod log;
pub mod mcp_probe;
mod observer;
mod proxy_rows;
pub use sandbox::run_id_of;
mod notices;
pub use searcher::searcher as searcher_for;
pub mod rules;
mod rundir;
mod sandbox;
mod searcher;
mod session;
mod usage;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::groups::Group;
use crate::infra::store::{Store, audit, groups, messages, outbox, runs};
use log::RunLog;

/// What `claw run-group` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run this queued run row (dispatch passes it).
    pub run_id: Option<i64>,
    /// Run this scheduled task now.
    pub task_id: Option<i64>,
    /// Receives the agent's progress, errors and idle lines, clipped (for `claw chat`'s live
    /// view). Bounded: progress is dropped while the receiver lags; idle is retried.
    pub observer: Option<std::sync::mpsc::SyncSender<crate::infra::protocol::AgentLine>>,
    /// Close the container as soon as the agent is idle instead of waiting `idle_secs`
    /// (may be switched on while the run goes on, e.g. when `claw chat` ends).
    pub close_when_idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How a run-group invocation ended.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub run_id: Option<i64>,
    pub status: String,
    pub detail: String,
    pub log: Option<String>,
    /// The run failed because the container runtime is missing or could not start the container
    /// (`claw run-group` then exits 6, as its help says).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime_problem: bool,
}

/// The work one run does: its prompt and where its answers go.
pub(crate) struct Work {
    pub run: runs::Run,
    pub group: Group,
    pub prompt: String,
    /// Chat that receives results.
    pub chat_id: String,
    /// Session to resume (None for isolated tasks and fresh groups).
    pub session_id: Option<String>,
    /// Whether to store the session id the agent reports.
    pub keep_session: bool,
    pub task: Option<TaskInfo>,
    /// The task's check command, run before the model is woken (`check`).
    pub check: Option<crate::infra::store::tasks::Check>,
    /// Highest message seq in the prompt.
    pub handed: Option<i64>,
    /// Saved photos of the prompt's messages, relative to the group folder, for a vision model.
    pub images: Vec<String>,
    pub observer: Option<std::sync::mpsc::SyncSender<crate::infra::protocol::AgentLine>>,
    pub close_when_idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The scheduled task behind a task run.
pub(crate) struct TaskInfo {
    pub id: i64,
    pub task_run_id: Option<i64>,
}

/// Run one group's agent to completion.
pub fn run_group(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    folder: &str,
    opts: &Options,
) -> Result<Outcome> {
    let mut store = Store::open(home)?;
    let group = groups::get(&store.conn, folder)?.ok_or_else(|| {
        Coded::err(
            Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })?;
    let Some(group_lock) = try_lock_patiently(&home.group_lock(folder))? else {
        return Err(Coded::err(
            Code::Busy,
            format!("group `{folder}` already has a run in progress; new messages are fed into it"),
        ));
    };
    let Some(slot) = take_slot(home, config.runtime.max_concurrent)? else {
        return Err(Coded::err(
            Code::Busy,
            format!(
                "all {} container slots are busy (runtime.max_concurrent); the next dispatch will start it",
                config.runtime.max_concurrent
            ),
        ));
    };
    // Taken before the prompt is read, let go before the group lock: see `crate::steps::wake`. Only
    // chained ingests poke it.
    let mut wake = if crate::steps::chain::enabled() {
        crate::steps::wake::Wake::open(home, folder)
    } else {
        None
    };
    let Some(mut work) = claim_work(home, &mut store, config, group.clone(), opts)? else {
        drop((wake, slot, group_lock));
        crate::steps::chain::after_run(home, &store, config, secrets, &group)?;
        return Ok(Outcome {
            run_id: opts.run_id,
            status: "idle".into(),
            detail: "nothing to run".into(),
            log: None,
            runtime_problem: false,
        });
    };
    let run_id = work.run.id;
    let mut log = RunLog::open(
        &home.logs(),
        folder,
        run_id,
        config.limits.run_log_kb.saturating_mul(1024),
    );
    log.line(format!(
        "run {run_id} for group `{folder}` ({}, attempt {}) pid {}",
        work.run.kind,
        work.run.attempt,
        std::process::id()
    ));
    let result = match work.check.clone() {
        None => session::execute(
            home, config, secrets, &mut store, &work, &mut wake, &mut log,
        ),
        Some(c) => checked(
            home, config, secrets, &mut store, &mut work, &c, &mut wake, &mut log,
        ),
    };
    drop(wake);
    let (ending, error, runtime_problem) = match result {
        // docker and podman exit 125 when they could not start the container at all.
        Ok(e) => {
            let runtime = e.exit_code == Some(125) && !e.clean;
            (e, None, runtime)
        }
        Err(err) => {
            log.line(format!("run failed to start: {err:#}"));
            let runtime = crate::infra::error::exit_code(&err) == Code::Runtime as i32;
            (session::Ended::default(), Some(format!("{err:#}")), runtime)
        }
    };
    // No container ran at all (or the runtime refused to start one): people must hear of it.
    let not_started = error.is_some() || runtime_problem;
    let outcome = finish(
        &mut store,
        config,
        &work,
        &ending,
        error,
        not_started,
        &mut log,
    )?;
    log.line(format!(
        "finished: {} ({}); peak RSS of this run-group {} KiB",
        outcome.status,
        outcome.detail,
        peak_rss_kb()
    ));
    // The group is free from here: anything left (messages that came while the container was
    // closing, a task queued meanwhile, notices in the outbox) is chained on, not left to the timer.
    drop((slot, group_lock));
    if let Err(e) = crate::steps::chain::after_run(home, &store, config, secrets, &work.group) {
        log.line(format!(
            "could not chain the next steps ({e:#}); the timer will"
        ));
    }
    Ok(Outcome {
        log: Some(log.path.display().to_string()),
        runtime_problem,
        ..outcome
    })
}

/// A task with a check: run the check, then the agent only if the check says so (`check`).
#[allow(clippy::too_many_arguments)]
fn checked(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    store: &mut Store,
    work: &mut Work,
    c: &crate::infra::store::tasks::Check,
    wake: &mut Option<crate::steps::wake::Wake>,
    log: &mut RunLog,
) -> Result<session::Ended> {
    let task_id = work.task.as_ref().map_or(0, |t| t.id);
    match check::run(home, config, secrets, store, work, c, log)? {
        check::Verdict::Wake { output, cut } => {
            work.prompt.push_str(&check::prompt_section(&output, cut));
            session::execute(home, config, secrets, store, work, wake, log)
        }
        check::Verdict::Skip(why) => Ok(session::Ended {
            clean: true,
            exit_code: Some(0),
            last_result: Some(why),
            ..Default::default()
        }),
        check::Verdict::Failed(why) => {
            check::tell_failure(store, work, task_id, &why, log)?;
            Ok(session::Ended {
                error: Some(why),
                notice_sent: true,
                ..Default::default()
            })
        }
    }
}

/// This process's peak resident memory so far, in KiB (the kernel's high-water mark), written to
/// every run log so a run that pushed the host's memory shows it.
pub fn peak_rss_kb() -> u64 {
    // SAFETY: getrusage fills a plain struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    // Linux reports KiB; macOS reports bytes.
    if cfg!(target_os = "macos") {
        ru.ru_maxrss as u64 / 1024
    } else {
        ru.ru_maxrss as u64
    }
}

/// Take the first free concurrency slot.
fn take_slot(home: &Home, max: usize) -> Result<Option<crate::infra::lock::Held>> {
    for attempt in 0..LOCK_TRIES {
        for n in 0..max {
            if let Some(h) = crate::infra::lock::try_acquire(&home.slot_lock(n))? {
                return Ok(Some(h));
            }
        }
        if attempt + 1 < LOCK_TRIES {
            std::thread::sleep(LOCK_PAUSE);
        }
    }
    Ok(None)
}

/// Tries at a lock before it counts as held. Dispatch and chained ingests probe the group and
/// slot locks by taking them for a moment; a run-group starting in that moment must not give up.
const LOCK_TRIES: usize = 4;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(15);

/// Take a lock that a real holder keeps for a whole run, retrying past momentary probes.
fn try_lock_patiently(path: &std::path::Path) -> Result<Option<crate::infra::lock::Held>> {
    for attempt in 0..LOCK_TRIES {
        if let Some(h) = crate::infra::lock::try_acquire(path)? {
            return Ok(Some(h));
        }
        if attempt + 1 < LOCK_TRIES {
            std::thread::sleep(LOCK_PAUSE);
        }
    }
    Ok(None)
}

/// Decide what this run does and mark its row running, in one IMMEDIATE transaction.
fn claim_work(
    home: &Home,
    store: &mut Store,
    config: &Config,
    group: Group,
    opts: &Options,
) -> Result<Option<Work>> {
    let tx = store.write()?;
    // Runs per hour of a non-main group (the chat is told); a queued run stays queued.
    if let Some(why) =
        crate::rules::limits::refuse_run(&tx, &config.limits, &group, crate::infra::time::now_ms())?
    {
        tx.commit()?;
        return Err(Coded::err(Code::Busy, why));
    }
    // A spent budget: no container for nothing (the chat is told once per period).
    if let Some(why) =
        crate::rules::limits::budget_stop(&tx, config, &group, crate::infra::time::now_ms(), true)?
    {
        tx.commit()?;
        return Err(Coded::err(Code::Busy, why));
    }
    let run = match (opts.run_id, opts.task_id) {
        (Some(id), _) => {
            let r = runs::get(&tx, id)?
                .ok_or_else(|| Coded::err(Code::Usage, format!("no run #{id}")))?;
            if r.folder != group.folder {
                return Err(Coded::err(
                    Code::Usage,
                    format!("run #{id} belongs to group `{}`", r.folder),
                ));
            }
            if r.status != "queued" {
                // Another run-group got here first; nothing to do.
                return Ok(None);
            }
            r
        }
        (None, Some(task_id)) => {
            let id = crate::steps::schedule::queue_now(&tx, &group.folder, task_id)?;
            runs::get(&tx, id)?.context("queued run vanished")?
        }
        (None, None) => {
            if let Some(q) = runs::with_status(&tx, "queued")?
                .into_iter()
                .find(|r| r.folder == group.folder)
            {
                q
            } else {
                let attempt = next_attempt(&tx, &group.folder)?;
                let id = runs::queue(&tx, &group.folder, "messages", None, None, attempt)?;
                runs::get(&tx, id)?.context("queued run vanished")?
            }
        }
    };
    let mut work = Work {
        chat_id: group.chat_id.clone(),
        session_id: groups::session(&tx, &group.folder)?,
        keep_session: true,
        prompt: String::new(),
        task: None,
        check: None,
        handed: None,
        images: vec![],
        observer: opts.observer.clone(),
        close_when_idle: opts.close_when_idle.clone(),
        group,
        run,
    };
    if work.run.kind == "task" {
        let task_id = work.run.task_id.context("task run without a task id")?;
        let t = crate::infra::store::tasks::get(&tx, task_id)?
            .with_context(|| format!("task {task_id} not found"))?;
        work.prompt = crate::rules::prompt::task(task_id, &t.prompt);
        work.chat_id = t.chat_id;
        if t.context_mode != "group" {
            work.session_id = None;
            work.keep_session = false;
        }
        if let Some(tr) = work.run.task_run_id {
            crate::steps::schedule::start_task_run(&tx, tr)?;
        }
        work.check = crate::infra::store::tasks::check(&tx, task_id)?;
        work.task = Some(TaskInfo {
            id: task_id,
            task_run_id: work.run.task_run_id,
        });
    } else {
        let cursor = groups::cursor(&tx, &work.group.folder)?;
        let pending = messages::since(
            &tx,
            &work.group.chat_id,
            cursor,
            config.limits.prompt_messages,
        )?;
        let decision = crate::rules::pending::decide(&work.group, &pending);
        if !decision.runnable {
            runs::finish(
                &tx,
                work.run.id,
                true,
                None,
                Some(&format!("nothing to run: {}", decision.reason)),
                None,
            )?;
            tx.commit()?;
            return Ok(None);
        }
        let undelivered =
            outbox::take_undelivered(&tx, &work.group.chat_id, crate::infra::time::now_ms(), 5)?;
        let seqs: Vec<i64> = pending.iter().map(|m| m.seq).collect();
        let media = crate::infra::store::attachments::for_messages(&tx, &seqs)?;
        work.prompt = format!(
            "{}{}",
            crate::rules::prompt::delivery_note(&undelivered),
            crate::rules::prompt::messages_with_media(&pending, &media)
        );
        work.images = crate::media::images_for_model(config, &work.group, &media);
        work.handed = pending.last().map(|m| m.seq);
        if let (Some(first), Some(last)) = (pending.first(), pending.last()) {
            runs::set_seq_range(&tx, work.run.id, first.seq, last.seq)?;
        }
    }
    let name = sandbox::container_name(home, &work.group.folder, work.run.id);
    runs::mark_running(&tx, work.run.id, std::process::id(), &name)?;
    tx.commit()?;
    Ok(Some(work))
}

/// Attempt number for a new messages run: one more than a failed previous run that said nothing.
pub fn next_attempt(conn: &rusqlite::Connection, folder: &str) -> Result<i64> {
    Ok(match runs::latest_of_kind(conn, folder, "messages")? {
        Some(r) if r.status == "failed" && r.retry_at.is_some() => r.attempt + 1,
        _ => 1,
    })
}

/// Record the run's end: status, cursor, retry, task history, failure notice.
fn finish(
    store: &mut Store,
    config: &Config,
    work: &Work,
    ended: &session::Ended,
    start_error: Option<String>,
    not_started: bool,
    log: &mut RunLog,
) -> Result<Outcome> {
    let now = crate::infra::time::now_ms();
    let ending = rules::Ending {
        clean_exit: ended.clean && start_error.is_none(),
        handed: ended.handed.or(work.handed),
        acked: ended.acked,
        attempt: work.run.attempt.max(1) as u32,
        not_started,
    };
    let error = start_error.or_else(|| ended.error.clone());
    let tx = store.write()?;
    let told_not_started = if not_started {
        let told =
            notices::not_started(&tx, work, error.as_deref().unwrap_or("unknown error"), now)?;
        log.line("the run never started; the chat was told (once per 6 h), main if it persists");
        told
    } else {
        false
    };
    let outcome = if let Some(task) = &work.task {
        let ok = ending.clean_exit;
        if let Some(tr) = task.task_run_id {
            crate::steps::schedule::finish_task_run(
                &tx,
                tr,
                ok,
                ended.last_result.as_deref(),
                error.as_deref(),
            )?;
        }
        runs::finish(
            &tx,
            work.run.id,
            ok,
            ended.exit_code,
            error.as_deref(),
            None,
        )?;
        let _ = task.id;
        Outcome {
            run_id: Some(work.run.id),
            status: if ok { "succeeded" } else { "failed" }.into(),
            detail: error
                .clone()
                .unwrap_or_else(|| format!("task {} done", task.id)),
            log: None,
            runtime_problem: false,
        }
    } else {
        let v = rules::verdict(
            &ending,
            config.limits.max_attempts,
            (config.limits.retry_base_secs * 1000) as i64,
            now,
        );
        if let Some(seq) = v.cursor_to {
            groups::advance_cursor(&tx, &work.group.folder, seq)?;
        }
        // A run stopped by the disk limit already told the chat why.
        if v.notify_failure && !ended.notice_sent && !told_not_started {
            let text = format!(
                "Sorry, I could not answer that: the run failed {} times ({}). Check `claw logs {}`.",
                ending.attempt,
                error.as_deref().unwrap_or("unknown error"),
                work.group.folder
            );
            outbox::enqueue(
                &tx,
                &work.chat_id,
                &text,
                &format!("run:{}:failure", work.run.id),
            )?;
        }
        runs::finish(
            &tx,
            work.run.id,
            v.succeeded,
            ended.exit_code,
            error.as_deref(),
            v.retry_at,
        )?;
        let detail = match (&v.retry_at, v.notify_failure, v.succeeded) {
            (_, _, true) => "agent finished".to_string(),
            (Some(at), _, _) => format!(
                "{}; will retry {}",
                error.as_deref().unwrap_or("failed"),
                crate::infra::time::ago(*at)
            ),
            (None, true, _) => format!(
                "{}; gave up after {} attempts and told the chat",
                error.as_deref().unwrap_or("failed"),
                ending.attempt
            ),
            (None, false, _) => format!(
                "{}; output already sent, not retried",
                error.as_deref().unwrap_or("failed")
            ),
        };
        Outcome {
            run_id: Some(work.run.id),
            status: if v.succeeded { "succeeded" } else { "failed" }.into(),
            detail,
            log: None,
            runtime_problem: false,
        }
    };
    audit::record(
        &tx,
        Some(&work.group.folder),
        Some(work.run.id),
        "run.finished",
        serde_json::json!({"status": outcome.status, "exit_code": ended.exit_code, "error": error}),
    )?;
    tx.commit()?;
    log.line(format!(
        "exit code {:?}, handed up to seq {:?}, answered up to {:?}",
        ended.exit_code, ending.handed, ending.acked
    ));
    Ok(outcome)
}
