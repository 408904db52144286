//! `claw mcp tools G`: start the group's container exactly as a run would (same image, mounts,
//! hardening, proxy with the group's MCP routes) but with `claw-agent mcp-tools`, which connects
//! the group's MCP servers, prints what they offer as one JSON line and exits without a model
//! call. No `runs` row is written: nothing is queued or retried, and the cursor is untouched.
//!
//! The container has its own name (`claw-FOLDER-mcp-…`), a hard time limit (the agent's start
//! limit plus room for the container to start) after which it is killed, and everything read
//! from it is bounded. Requests it made through the proxy are audited like a run's.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::log::RunLog;
use super::{Work, sandbox};
use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::protocol::{AgentLine, HostLine, MCP_START_SECS, Start};
use crate::infra::proxy::{Meter, ProxyEvent};
use crate::infra::secrets::Secrets;
use crate::infra::store::{Store, audit, groups, runs};

/// Largest line read from the probe's stdout.
const MAX_LINE: u64 = 4 * 1024 * 1024;
/// Time for the container to start, on top of the agent's own MCP start limit.
const START_ROOM: Duration = Duration::from_secs(60);

/// Runs the probe for `folder`, keeping only servers named in `only` (all when empty), and
/// returns the agent's listing: `{"servers":[{"server","ok","error"?,"tools":[…]}]}`.
pub fn list_tools(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    folder: &str,
    only: Option<&str>,
) -> Result<serde_json::Value> {
    let store = Store::open(home)?;
    let group = groups::get(&store.conn, folder)?.ok_or_else(|| {
        Coded::err(
            Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })?;
    // An id no real run has (ms since the epoch), for the per-run folder and the names.
    let id = crate::infra::time::now_ms();
    let work = Work {
        run: runs::Run {
            id,
            folder: folder.to_string(),
            kind: "mcp-tools".into(),
            task_id: None,
            task_run_id: None,
            status: "running".into(),
            attempt: 1,
            pid: None,
            container: None,
            queued_at: id,
            started_at: Some(id),
            ended_at: None,
            exit_code: None,
            error: None,
            retry_at: None,
            output_sent: false,
            first_seq: None,
            last_seq: None,
            input_tokens: 0,
            output_tokens: 0,
        },
        chat_id: group.chat_id.clone(),
        group,
        prompt: String::new(),
        session_id: None,
        keep_session: false,
        task: None,
        check: None,
        handed: None,
        observer: None,
        close_when_idle: Default::default(),
        images: vec![],
    };
    let mut log = RunLog::open(&home.logs(), folder, id, 256 * 1024);
    log.line(format!("mcp tools probe for group `{folder}`"));
    let (tx, rx) = mpsc::channel::<ProxyEvent>();
    let mut sb = sandbox::prepare(
        home,
        config,
        secrets,
        &store,
        &work,
        tx,
        Meter::default(),
        &mut log,
    )?;
    if let Some(name) = only {
        sb.mcp.retain(|s| s.name == name);
        if sb.mcp.is_empty() {
            return Err(Coded::err(
                Code::Usage,
                format!(
                    "group `{folder}` has no MCP server `{name}`; see `claw mcp list {folder}`"
                ),
            ));
        }
    }
    if sb.mcp.is_empty() {
        return Ok(serde_json::json!({"servers": []}));
    }
    let name = crate::infra::runtime::container_name(
        &format!("{folder}-mcp"),
        &format!("{id}x{}", home.tag()),
    )
    .unwrap_or_else(|_| format!("claw-invalid-mcp-{id}"));
    if let Some(i) = sb.argv.iter().position(|a| a == "--name") {
        sb.argv[i + 1] = name.clone();
    }
    sb.argv.push("mcp-tools".into());
    log.line(format!("command: {}", sb.argv.join(" ")));
    let start = HostLine::Start(Box::new(Start {
        prompt: String::new(),
        group_folder: folder.to_string(),
        chat_id: work.chat_id.clone(),
        is_main: work.group.is_main,
        is_task: false,
        task_id: None,
        session_id: None,
        assistant_name: config.assistant_name.clone(),
        channel: "cli".into(),
        model: sandbox::model_settings(config, &work.group),
        limits: Default::default(),
        mcp: sb.mcp.clone(),
        images: vec![],
        vision: false,
    }));
    let mut child = Command::new(&sb.argv[0])
        .args(&sb.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Coded::err(
                Code::Runtime,
                format!("cannot start {}: {e}; try `claw doctor`", sb.argv[0]),
            )
        })?;
    audit::record(
        &store.conn,
        Some(folder),
        None,
        "container.start",
        serde_json::json!({"name": name, "image": config.runtime.image, "network": "none", "mounts": sb.mount_summary, "purpose": "mcp tools"}),
    )?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(start.to_line().as_bytes());
        // Dropped: EOF after the start line.
    }
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (ltx, lrx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout.take(MAX_LINE * 4));
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if ltx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let err_tail = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(64 * 1024).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let limit = Duration::from_secs(MCP_START_SECS) + START_ROOM;
    let deadline = std::time::Instant::now() + limit;
    let mut listing = None;
    while listing.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lrx.recv_timeout(left) {
            Ok(l) => {
                if let Ok(AgentLine::Result { text }) = serde_json::from_str::<AgentLine>(&l) {
                    listing = serde_json::from_str::<serde_json::Value>(&text).ok();
                }
            }
            Err(_) => break,
        }
    }
    if listing.is_none() {
        let _ = duct::cmd(
            sb.rt.kind.program(),
            crate::infra::runtime::kill_args(sb.rt.kind, &name),
        )
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run();
    }
    let _ = child.kill();
    let status = child.wait().ok();
    let tail = err_tail.join().unwrap_or_default();
    for line in tail.lines() {
        log.line(format!("agent: {line}"));
    }
    for e in rx.try_iter() {
        let (kind, detail) = sandbox::proxy_audit(&e);
        log.line(format!("proxy: {kind} {detail}"));
        audit::record(&store.conn, Some(folder), None, kind, detail)?;
    }
    sandbox::cleanup(sb, &mut log);
    listing.ok_or_else(|| {
        Coded::err(
            Code::Runtime,
            format!(
                "the probe container gave no listing within {} s (exit {:?}); its log is {}: {}",
                limit.as_secs(),
                status.and_then(|s| s.code()),
                log.path.display(),
                crate::infra::output::clip(tail.trim(), 500)
            ),
        )
    })
}
