//! Getting a container going: clear what a dead run left, refuse a group over its disk limit,
//! write the snapshots, start the proxy and the sandbox, spawn the runtime client behind its
//! guard, and send the start line.

use anyhow::Result;
use std::process::ChildStdin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TrySendError};
use std::time::Instant;

use super::Ended;
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::{HostLine, Start};
use crate::infra::proxy::ProxyEvent;
use crate::infra::secrets::Secrets;
use crate::infra::store::{Store, audit, marks, outbox};
use crate::steps::run_group::agent_io::{self, Output, send};
use crate::steps::run_group::container::{self, Guard};
use crate::steps::run_group::log::RunLog;
use crate::steps::run_group::proxy_rows::Rows;
use crate::steps::run_group::{Work, disk, sandbox, usage};

/// A started container and everything the session loop reads from or must clean up.
pub struct Launched {
    pub guard: Guard,
    pub sb: sandbox::Sandbox,
    /// The agent's stdout and stderr, and wake-ups from a chained ingest.
    pub rx: Receiver<Output>,
    /// Set by a wake-up: new messages may be waiting.
    pub woken: Arc<AtomicBool>,
    pub disk_watch: disk::Watch,
    pub usage: usage::Recording,
    /// Proxy events after the usage meter, for the aggregated audit rows.
    pub merged: Receiver<()>,
    pub rows: Rows,
    pub spawned: Instant,
}

/// What the preflight measured, for the disk watch of the running container.
pub struct Preflight {
    limit: disk::Limit,
    dirs: Vec<std::path::PathBuf>,
    measured: disk::Measured,
}

/// Everything before the container: leftovers removed, half-written requests cleared, the disk
/// limit checked. `Err(ended)` means the run must not start (the chat was told why).
pub fn preflight(
    home: &Home,
    config: &Config,
    store: &mut Store,
    work: &Work,
    log: &mut RunLog,
) -> Result<std::result::Result<Preflight, Ended>> {
    let folder = &work.group.folder;
    container::remove_leftovers(store, folder, log)?;
    // No container of this group is alive now, so a half-written request has a dead writer.
    match crate::infra::untrusted::clear_abandoned_requests(home, folder, 10_000) {
        Ok(0) => {}
        Ok(n) => log.line(format!(
            "removed {n} half-written IPC request file(s) a dead container left"
        )),
        Err(e) => log.line(format!("could not clear half-written IPC files: {e}")),
    }
    let limit = disk::Limit::for_group(config, &work.group);
    let dirs = disk::dirs(home, &work.group);
    let measured = disk::measure(&dirs, &limit);
    log.line(format!(
        "disk: {} KiB in {} files and folders (limit {} MiB, {} files); measured in {} ms",
        measured.usage.bytes >> 10,
        measured.usage.entries,
        limit.mb,
        limit.files,
        measured.took.as_millis()
    ));
    if let Some(over) = disk::over(&measured, &limit) {
        return Ok(Err(refuse_over_disk(store, work, &over, log)?));
    }
    // Within the limit again: the next refusal is news to the chat.
    if marks::get(&store.conn, &refused_mark(folder))?.is_some() {
        marks::clear(&store.conn, &refused_mark(folder))?;
    }
    Ok(Ok(Preflight {
        limit,
        dirs,
        measured,
    }))
}

/// Start the container for `work` and send it the start line; returns the agent's stdin with it. From the moment the guard exists,
/// every return path removes the container (the guard is dropped before the sandbox).
#[allow(clippy::too_many_arguments)]
pub fn launch(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    store: &Store,
    work: &Work,
    wake: &mut Option<crate::steps::wake::Wake>,
    pre: Preflight,
    log: &mut RunLog,
) -> Result<(Launched, ChildStdin)> {
    let Preflight {
        limit,
        dirs,
        measured,
    } = pre;
    let folder = &work.group.folder;
    crate::rules::snapshot::write_snapshots(home, store, folder, work.group.is_main)?;
    let rows = Rows::new();
    let (ptx, prx) = mpsc::channel::<ProxyEvent>();
    // Usage is written and budgets kept current as events pass, before they are aggregated.
    let (usage, prx) = usage::start(home, config, work, prx, log)?;
    let merged = rows.merge_from(prx);
    let sb = sandbox::prepare(home, config, secrets, store, work, ptx, usage.meter(), log)?;
    log.line(format!("command: {}", sb.argv.join(" ")));
    let mut guard = Guard::arm(
        home,
        store,
        sb.rt.kind,
        &sb.name,
        work,
        container::lifetime(config, &work.group),
        log,
    )?;
    let spawned = Instant::now();
    let (mut stdin, stdout, stderr) = guard.spawn(&sb.argv)?;
    audit::record(
        &store.conn,
        Some(folder),
        Some(work.run.id),
        "container.start",
        serde_json::json!({"name": sb.name, "image": config.runtime.image, "network": "none", "mounts": sb.mount_summary, "pid": guard.child().map(|c| c.id())}),
    )?;
    let (tx, rx) = mpsc::sync_channel::<Output>(agent_io::SLOTS);
    let woken = Arc::new(AtomicBool::new(false));
    if let Some(w) = wake.as_mut() {
        let (tx, woken) = (tx.clone(), woken.clone());
        w.listen(move || {
            woken.store(true, Ordering::Release);
            // Full: the loop is busy and sees the flag on its next turn.
            !matches!(
                tx.try_send(Output::Wake),
                Err(TrySendError::Disconnected(_))
            )
        });
    }
    agent_io::spawn_readers(stdout, stderr, tx);
    let disk_watch = disk::Watch::start(dirs, limit, disk::interval(measured.took));
    send(&mut stdin, &start_line(config, work, &sb), log);
    log.line(format!(
        "sent start line ({} prompt bytes) after {:.0} ms",
        work.prompt.len(),
        spawned.elapsed().as_secs_f64() * 1000.0
    ));
    let run = Launched {
        guard,
        sb,
        rx,
        woken,
        disk_watch,
        usage,
        merged,
        rows,
        spawned,
    };
    Ok((run, stdin))
}

/// The first line the agent reads: its prompt, who it is, its model and limits, its MCP servers.
fn start_line(config: &Config, work: &Work, sb: &sandbox::Sandbox) -> HostLine {
    let model = sandbox::model_settings(config, &work.group);
    let vision = crate::media::supports_vision(&config.models, &model.model);
    HostLine::Start(Box::new(Start {
        prompt: work.prompt.clone(),
        group_folder: work.group.folder.clone(),
        chat_id: work.chat_id.clone(),
        is_main: work.group.is_main,
        is_task: work.task.is_some(),
        task_id: work.task.as_ref().map(|t| t.id),
        session_id: work.session_id.clone(),
        assistant_name: config.assistant_name.clone(),
        channel: crate::infra::store::messages::channel_name(
            crate::infra::store::messages::channel_of(&work.chat_id),
        )
        .to_string(),
        model,
        limits: crate::infra::protocol::AgentLimits {
            max_steps: config.limits.max_steps,
            ..Default::default()
        },
        mcp: sb.mcp.clone(),
        images: work.images.clone(),
        vision,
    }))
}

fn refused_mark(folder: &str) -> String {
    format!("disk.refused:{folder}")
}

/// The group's folders are over the limit before the run: do not start; tell the chat once per
/// [`disk::NOTICE_WINDOW`].
fn refuse_over_disk(
    store: &mut Store,
    work: &Work,
    over: &disk::Over,
    log: &mut RunLog,
) -> Result<Ended> {
    let why = over.describe();
    log.line(format!(
        "not starting the container: the group's folders {why}"
    ));
    let tx = store.write()?;
    let window = disk::NOTICE_WINDOW.as_millis() as i64;
    if marks::claim(
        &tx,
        &refused_mark(&work.group.folder),
        crate::infra::time::now_ms(),
        window,
    )? {
        outbox::enqueue(
            &tx,
            &work.chat_id,
            &disk::refused_notice(over, &work.group),
            &format!("run:{}:disk", work.run.id),
        )?;
        log.line("told the chat");
    } else {
        log.line("the chat was told recently; not again");
    }
    tx.commit()?;
    Ok(Ended {
        error: Some(format!("not started: the group's folders {why}")),
        handed: work.handed,
        notice_sent: true,
        ..Default::default()
    })
}
