//! No container outlives its run-group. Four layers, each enough on its own for some failure:
//!
//! 1. [`Guard`] owns the runtime client. However `session::execute` returns once it exists (an
//!    error from a store write mid-run included), dropping the guard force-removes the container.
//! 2. `claw watchdog` (see `crate::steps::watchdog`), started before the container, removes it when
//!    run-group dies (even by SIGKILL) or hangs past [`lifetime`].
//! 3. podman enforces [`lifetime`] itself (`--timeout`, in conmon), even if both processes die.
//! 4. Every started container has a row in `containers` until run-group saw it gone; the next
//!    run of the group (run-group or `claw chat`) force-removes any row it finds before starting
//!    ([`remove_leftovers`]). In the normal case there is no row and no runtime call.

use anyhow::{Context, Result};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::log::RunLog;
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::runtime::{self, RuntimeKind};
use crate::infra::store::groups::Group;
use crate::infra::store::{Store, containers};
use crate::steps::watchdog;

/// Time past the run's own wall clock before the watchdog and the runtime kill the container:
/// run-group's own stop (close grace 20 s, then 15 s for the client to exit) comes first.
pub const LIFETIME_GRACE: Duration = Duration::from_secs(60);

/// The longest a container of this group may live: its timeout plus [`LIFETIME_GRACE`].
pub fn lifetime(config: &Config, group: &Group) -> Duration {
    Duration::from_secs(
        group
            .config
            .timeout_secs
            .unwrap_or(config.limits.timeout_secs),
    ) + LIFETIME_GRACE
}

/// Force-remove the group's containers left by run-groups that died. Called with the group lock
/// held, so every row found belongs to a dead run. Fails (and the run with it) if one cannot be
/// removed: two containers of one group must never run at once.
pub fn remove_leftovers(store: &Store, folder: &str, log: &mut RunLog) -> Result<()> {
    for c in containers::of_folder(&store.conn, folder)? {
        let kind = RuntimeKind::parse(&c.runtime)
            .ok()
            .flatten()
            .unwrap_or(RuntimeKind::Podman);
        runtime::remove(kind, &c.name, runtime::REMOVE_LIMIT).map_err(|e| {
            crate::infra::error::Coded::err(
                crate::infra::error::Code::Runtime,
                format!(
                    "a container of an earlier run of `{folder}` may still run and could not be removed ({e}); remove it with `{} {}`",
                    kind.program(),
                    runtime::kill_rm_args(kind, &c.name).join(" ")
                ),
            )
        })?;
        containers::delete(&store.conn, &c.name)?;
        log.line(format!(
            "removed leftover container {} of run {:?} (its run-group died)",
            c.name, c.run_id
        ));
    }
    Ok(())
}

/// The container of this run, from before it is spawned until it is seen gone.
pub struct Guard {
    home: Home,
    kind: RuntimeKind,
    name: String,
    watchdog: Option<watchdog::Handle>,
    child: Option<Child>,
    released: bool,
}

impl Guard {
    /// Record the container in `containers` and start its watchdog; nothing runs yet.
    pub fn arm(
        home: &Home,
        store: &Store,
        kind: RuntimeKind,
        name: &str,
        work: &super::Work,
        lifetime: Duration,
        log: &RunLog,
    ) -> Result<Guard> {
        let (folder, run_id) = (&work.group.folder, work.run.id);
        containers::insert(&store.conn, name, folder, Some(run_id), kind.program())?;
        let mut g = Guard {
            home: home.clone(),
            kind,
            name: name.to_string(),
            watchdog: None,
            child: None,
            released: false,
        };
        let deadline = crate::infra::time::now_ms() + lifetime.as_millis() as i64;
        g.watchdog = Some(
            watchdog::Handle::spawn(kind, name, deadline, Some(&log.path)).context(
                "cannot start `claw watchdog` for the container; the run is not started",
            )?,
        );
        Ok(g)
    }

    /// Start the runtime client; the guard owns it from now on.
    pub fn spawn(&mut self, argv: &[String]) -> Result<(ChildStdin, ChildStdout, ChildStderr)> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                crate::infra::error::Coded::err(
                    crate::infra::error::Code::Runtime,
                    format!(
                        "cannot start {}: {e}; is the container runtime installed? try `claw doctor`",
                        argv[0]
                    ),
                )
            })?;
        let pipes = (
            child.stdin.take().context("no stdin")?,
            child.stdout.take().context("no stdout")?,
            child.stderr.take().context("no stderr")?,
        );
        self.child = Some(child);
        Ok(pipes)
    }

    /// The runtime client.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Remove the container now, whatever it is doing (the disk limit: no grace period).
    pub fn kill_now(&mut self, log: &mut RunLog) {
        match runtime::remove(self.kind, &self.name, runtime::REMOVE_LIMIT) {
            Ok(()) => log.line(format!("removed container {}", self.name)),
            Err(e) => log.line(format!("could not remove container {}: {e}", self.name)),
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
        }
    }

    /// The normal end, once the client was waited for. `gone`: the client exited by itself, so
    /// the container ended and `--rm` removed it; otherwise it is force-removed first.
    pub fn release(mut self, store: &Store, gone: bool, log: &mut RunLog) {
        self.released = true;
        let removed = if gone {
            Ok(())
        } else {
            runtime::remove(self.kind, &self.name, runtime::REMOVE_LIMIT)
        };
        self.reap();
        match removed {
            Ok(()) => {
                if let Err(e) = containers::delete(&store.conn, &self.name) {
                    log.line(format!(
                        "container {} is gone but its row stays ({e:#}); the next run clears it",
                        self.name
                    ));
                }
                if let Some(w) = self.watchdog.take() {
                    w.done();
                }
            }
            Err(e) => log.line(format!(
                "could not remove container {} ({e}); its watchdog retries, the next run of the group too",
                self.name
            )),
        }
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    /// An early return: remove the container before anything else is dropped.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // No client was ever started (the watchdog or the runtime could not be run): there is
        // no container, and no runtime to ask.
        let removed = if self.child.is_none() {
            Ok(())
        } else {
            runtime::remove(self.kind, &self.name, runtime::REMOVE_LIMIT)
        };
        self.reap();
        match removed {
            Ok(()) => {
                // A fresh connection: the run's own may be what failed.
                let _ =
                    Store::open(&self.home).and_then(|s| containers::delete(&s.conn, &self.name));
                if let Some(w) = self.watchdog.take() {
                    w.done();
                }
            }
            // Dropping the watchdog's pipe without `done` makes it retry.
            Err(e) => eprintln!(
                "claw: could not remove container {} after the run ended early: {e}",
                self.name
            ),
        }
    }
}
