//! `claw tick`: one timer drives everything. Runs ipc-apply, schedule, dispatch and deliver in
//! that order (each step's output feeds the next), warns about messages left waiting too long,
//! then housekeeping at most once an hour, and
//! keeps going when one step fails so a broken channel never stops agents from running.
//!
//! An idle tick (no IPC request, no due task, no queued or running run, no due outbox row) asks
//! each step's cheap question first (an index probe or a directory listing), starts no process,
//! and writes nothing to the database.

use anyhow::Result;
use serde::Serialize;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;

/// What one tick did; `errors` names each step that failed and why.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ipc_applied: usize,
    pub ipc_rejected: usize,
    pub tasks_queued: usize,
    pub runs_started: usize,
    pub runs_recovered: usize,
    pub delivered: u64,
    pub delivery_failures: u64,
    /// Groups whose IPC requests were more than one pass's worth (the rest wait for the next tick).
    pub ipc_deferred: Vec<String>,
    /// What housekeeping removed, when it ran in this tick (at most once an hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub housekeeping: Option<crate::steps::housekeeping::Report>,
    /// Groups whose messages waited past `limits.stale_after_secs` with nothing running (also
    /// logged as a warning, at most once a minute per group).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
    pub errors: Vec<(String, String)>,
}

/// Keep `claw.db-wal` and `-shm` when this connection closes last. SQLite otherwise checkpoints,
/// deletes both, and the next tick creates them again: creating and unlinking two files was most
/// of an idle tick's CPU. Closing still checkpoints, so `claw.db` alone stays complete.
fn keep_wal(store: &Store) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is this open connection's; PERSIST_WAL reads and writes one int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            store.conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(rc, "could not keep the WAL file between ticks");
    }
}

/// Whether housekeeping's hour is up: a read of its mark, so an idle tick writes nothing
/// (`housekeeping::maybe_run` claims the mark in a write transaction).
fn housekeeping_due(store: &Store, now: i64) -> Result<bool> {
    Ok(
        crate::infra::store::marks::get(&store.conn, "housekeeping")?
            .is_none_or(|at| now - at >= crate::steps::housekeeping::EVERY_MS),
    )
}

/// Run the four steps once, then housekeeping if an hour has passed since it last ran.
pub fn tick(home: &Home, config: &Config, secrets: &Secrets) -> Result<Report> {
    let mut r = Report::default();
    let mut store = Store::open(home)?;
    keep_wal(&store);
    match crate::steps::ipc::apply_all(home, &mut store, config) {
        Ok(x) => {
            r.ipc_applied = x.applied;
            r.ipc_rejected = x.rejected;
            r.ipc_deferred = x.deferred.into_iter().map(|d| d.folder).collect();
        }
        Err(e) => r.errors.push(("ipc-apply".into(), format!("{e:#}"))),
    }
    match crate::steps::schedule::claim_due(&mut store, crate::infra::time::now_ms()) {
        Ok(x) => r.tasks_queued = x.claimed.len(),
        Err(e) => r.errors.push(("schedule".into(), format!("{e:#}"))),
    }
    match crate::steps::dispatch::dispatch_with(
        home,
        &mut store,
        config,
        &crate::steps::dispatch::Options::default(),
    ) {
        Ok(x) => {
            r.runs_started = x.decisions.iter().filter(|d| d.pid.is_some()).count();
            r.runs_recovered = x.recovered_runs.len();
        }
        Err(e) => r.errors.push(("dispatch".into(), format!("{e:#}"))),
    }
    let now = crate::infra::time::now_ms();
    match crate::steps::deliver::deliver(home, &mut store, config, secrets, None) {
        Ok(x) => {
            r.delivered = x.sent;
            r.delivery_failures = x.failed;
        }
        Err(e) => r.errors.push(("deliver".into(), format!("{e:#}"))),
    }
    match crate::ops::problems::warn_stale(home, &store, config, now) {
        Ok(x) => r.stale = x,
        Err(e) => r.errors.push(("stale-check".into(), format!("{e:#}"))),
    }
    match housekeeping_due(&store, now) {
        Ok(false) => {}
        Ok(true) => match crate::steps::housekeeping::maybe_run(home, &mut store, config, now) {
            Ok(x) => r.housekeeping = x,
            Err(e) => r.errors.push(("housekeeping".into(), format!("{e:#}"))),
        },
        Err(e) => r.errors.push(("housekeeping".into(), format!("{e:#}"))),
    }
    Ok(r)
}
