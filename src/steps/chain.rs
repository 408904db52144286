//! Chaining: each step starts the next one the moment it has work for it, so a reply waits for no
//! timer. `claw ingest` wakes a group's live run or starts `claw dispatch` for the groups it made
//! runnable; run-group hands each result to `claw deliver` as soon as it is committed to the
//! outbox, and when it ends starts dispatch again if work is left.
//!
//! A chained step is a detached child: its own session, stdin and stdout on /dev/null, stderr
//! appended to `logs/chain.log`. The parent never waits for it (a reaper thread collects it) and
//! a kill of either leaves the other running. Chained steps take exactly the locks the timer's do
//! (the global lock for dispatch, the group lock and the queued `runs` row for run-group, the
//! channel lock for deliver), so a chained start racing a `claw tick` can neither start two
//! containers for one group nor send one row twice. The timer stays as the safety net for what a
//! crash, a busy lock or a retry leaves behind.
//!
//! `CLAW_CHAIN=0` turns chaining off (to drive the steps by hand; the tests of single steps do).

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;
use crate::infra::store::groups::{self, Group};

/// Past this size `logs/chain.log` is moved to `chain.log.1` (one old copy kept).
const LOG_CAP: u64 = 1 << 20;

/// Whether chaining is on: unless `CLAW_CHAIN` is `0`, `off`, `false` or `no`.
pub fn enabled() -> bool {
    !matches!(
        std::env::var("CLAW_CHAIN").as_deref().map(str::trim),
        Ok("0" | "off" | "false" | "no")
    )
}

/// The `claw` executable to chain to. Only a process that is itself `claw` chains: a test
/// binary or another program embedding the library must never re-run itself with claw's
/// arguments.
fn claw_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "claw").then_some(exe)
}

/// Start `claw --home HOME ARGS…` detached; returns its pid, or None when chaining is off.
pub fn spawn(home: &Home, args: &[&str]) -> Result<Option<u32>> {
    if !enabled() {
        return Ok(None);
    }
    let Some(exe) = claw_exe() else {
        return Ok(None);
    };
    let err = chain_log(&home.logs())
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(&home.root)
        .args(args.iter().map(OsString::from))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `claw {}`", args.join(" ")))?;
    let pid = child.id();
    // A long-lived parent (a poller, `claw chat`) must not collect zombies; a short one exits
    // first and the child is re-parented.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(Some(pid))
}

/// Open `logs/chain.log` for appending, moving a full one aside first.
fn chain_log(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("chain.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_CAP) {
        let _ = std::fs::rename(&path, dir.join("chain.log.1"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Start `claw dispatch` for these groups (all groups when empty). Failures are logged: the
/// timer's dispatch does the same work a moment later.
pub fn dispatch(home: &Home, folders: &[String]) {
    let mut args = vec!["dispatch"];
    for f in folders {
        args.extend(["--group", f.as_str()]);
    }
    if let Err(e) = spawn(home, &args) {
        tracing::warn!(error = %format!("{e:#}"), "chained dispatch not started; the timer will dispatch");
    }
}

/// Hand a channel's due rows to `claw deliver --channel PREFIX`, if `claw deliver` sends that
/// channel at all (terminal rows are printed by `claw chat`; WhatsApp's by its own service).
pub fn deliver(home: &Home, config: &Config, secrets: &Secrets, prefix: &str) {
    if !enabled() || crate::channels::sender_for(prefix, config, &home.root, secrets).is_err() {
        return;
    }
    if let Err(e) = spawn(home, &["deliver", "--channel", prefix]) {
        tracing::warn!(error = %format!("{e:#}"), prefix, "chained deliver not started; the timer will deliver");
    }
}

/// What chaining did after one ingest.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AfterIngest {
    /// Groups whose live run was woken to read the new messages.
    pub woken: Vec<String>,
    /// Groups handed to a chained `claw dispatch`.
    pub dispatched: Vec<String>,
}

/// After ingest committed messages for `chats`: wake each group's live run, or start dispatch
/// for the groups the messages made runnable. Never waits for either.
pub fn after_ingest(
    home: &Home,
    store: &Store,
    config: &Config,
    chats: &[String],
) -> Result<AfterIngest> {
    let mut done = AfterIngest::default();
    if !enabled() || chats.is_empty() {
        return Ok(done);
    }
    for chat in chats {
        let Some(group) = groups::by_chat(&store.conn, chat)? else {
            continue;
        };
        // The run's wake is open from before it reads its prompt until after it stops feeding:
        // a run that took the wake reads these messages, or its own exit starts dispatch.
        if crate::steps::wake::poke(home, &group.folder) {
            done.woken.push(group.folder);
        } else if runnable(store, config, &group)? {
            done.dispatched.push(group.folder);
        }
    }
    if !done.dispatched.is_empty() {
        dispatch(home, &done.dispatched);
    }
    Ok(done)
}

/// After a run-group let its group go: hand the outbox rows it left (notices, requests applied
/// after the container exited) to deliver, and start dispatch if work is left: messages that came
/// while the container was closing, a queued run of the group (a task due meanwhile), or groups
/// that the last dispatch left waiting for the slot this run just freed.
pub fn after_run(
    home: &Home,
    store: &Store,
    config: &Config,
    secrets: &Secrets,
    group: &Group,
) -> Result<()> {
    if !enabled() {
        return Ok(());
    }
    for prefix in channels_due(store)? {
        deliver(home, config, secrets, &prefix);
    }
    if crate::steps::dispatch::waiting(&store.conn)? {
        dispatch(home, &[]);
    } else if runnable(store, config, group)? || queued(store, &group.folder)? {
        dispatch(home, std::slice::from_ref(&group.folder));
    }
    Ok(())
}

/// Channel prefixes with outbox rows due now (served by the `outbox_due` index).
pub fn channels_due(store: &Store) -> Result<Vec<String>> {
    let mut stmt = store.conn.prepare_cached(
        "SELECT DISTINCT substr(chat_id, 1, instr(chat_id, ':') - 1) FROM outbox
         WHERE status = 'pending' AND next_attempt_at <= ?1 AND instr(chat_id, ':') > 1",
    )?;
    let rows = stmt.query_map([crate::infra::time::now_ms()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the group has a queued run (a task run, or one a dispatch queued).
fn queued(store: &Store, folder: &str) -> Result<bool> {
    Ok(store
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'queued' AND folder = ?1)",
        )?
        .query_row([folder], |r| r.get(0))?)
}

/// Whether the group's pending messages would start a run now (dispatch decides again).
fn runnable(store: &Store, config: &Config, group: &Group) -> Result<bool> {
    let cursor = groups::cursor(&store.conn, &group.folder)?;
    let pending = crate::infra::store::messages::latest_since(
        &store.conn,
        &group.chat_id,
        cursor,
        config.limits.prompt_messages,
    )?;
    Ok(crate::rules::pending::decide(group, &pending).runnable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_claw_executable_chains() {
        // The unit-test binary is not `claw`: it must never re-run itself as a chained step.
        assert_eq!(claw_exe(), None);
    }

    #[test]
    fn a_full_log_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("chain.log"),
            vec![b'x'; LOG_CAP as usize + 1],
        )
        .unwrap();
        drop(chain_log(dir.path()).unwrap());
        assert_eq!(
            std::fs::metadata(dir.path().join("chain.log"))
                .unwrap()
                .len(),
            0
        );
        assert!(dir.path().join("chain.log.1").exists());
    }
}
