//! Housekeeping: keep the host's records of agents' activity within `[retention]`. Deletes audit
//! rows older than `audit_days` and prunes `ipc/errors/` by age (`ipc_errors_days`) and by size
//! (`ipc_errors_mb`, oldest first). `claw tick` runs it at most once an hour; `claw prune` runs it
//! by hand; ipc-apply prunes `ipc/errors/` at once after a pass that rejected many files.
//!
//! `ipc/errors/` holds what agents wrote, so everything there goes through `crate::infra::untrusted`:
//! nothing is followed, a directory or link moved aside is removed as the thing it is
//! (`remove_tree`). A rejected file and its `.reason.txt` are one entry here: kept or removed
//! together, and dated by the reason file, which the host wrote (the agent chose the request
//! file's own times). Each call does bounded work; what is left is done by the next call.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::{Store, audit, marks};
use crate::infra::untrusted::{self, Dir, Kind};

/// How often `claw tick` runs housekeeping.
pub const EVERY_MS: i64 = 3_600_000;
/// Most names in `ipc/errors/` looked at per call.
pub const MAX_ERRORS_SCANNED: usize = 50_000;
/// Most entries inside one directory moved aside to `ipc/errors/` counted towards its size.
pub const MAX_ENTRIES_MEASURED: u64 = 10_000;
/// Most audit rows deleted per call, and per transaction.
pub const MAX_AUDIT_ROWS: usize = 200_000;
const AUDIT_CHUNK: usize = 10_000;
/// Most removed entries listed one by one in a report (the counts stay exact).
pub const MAX_LISTED: usize = 1_000;

const DAY_MS: i64 = 86_400_000;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Say what would be removed; remove nothing.
    pub dry_run: bool,
    /// The time ages are measured from (epoch ms).
    pub now: i64,
}

/// What one call removed (or would remove).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub audit: AuditReport,
    pub ipc_errors: ErrorsReport,
    /// Old inbox files and settled `send_file` copies (`crate::media::prune`).
    pub media: crate::media::prune::MediaReport,
}

/// Audit retention.
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    /// Rows recorded before this (RFC 3339) are deleted; `None` when `audit_days` is 0 (keep all).
    pub before: Option<String>,
    pub deleted: u64,
    /// The per-call bound was reached; the next call deletes more.
    pub more: bool,
}

/// `ipc/errors/` pruning.
#[derive(Debug, Default, Serialize)]
pub struct ErrorsReport {
    /// Entries removed, at most [`MAX_LISTED`] of them listed.
    pub removed: Vec<Removed>,
    pub removed_entries: u64,
    pub removed_bytes: u64,
    pub kept_entries: u64,
    pub kept_bytes: u64,
    /// Only part of the folder was looked at (it holds more than [`MAX_ERRORS_SCANNED`] names).
    pub truncated: bool,
}

/// One rejected file with its reason file, or one thing moved aside.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// Names in `ipc/errors/`, escaped for display.
    pub files: Vec<String>,
    pub bytes: u64,
    /// When it was put there (RFC 3339).
    pub at: String,
    /// `age` or `size`.
    pub why: &'static str,
}

/// Run housekeeping if it has not run within the last hour (the claim is a row in `marks`, so
/// two ticks racing cannot both run it). `None` when it was not due.
pub fn maybe_run(
    home: &Home,
    store: &mut Store,
    config: &Config,
    now: i64,
) -> Result<Option<Report>> {
    let tx = store.write()?;
    let due = marks::claim(&tx, "housekeeping", now, EVERY_MS)?;
    tx.commit()?;
    if !due {
        return Ok(None);
    }
    let opts = Options {
        dry_run: false,
        now,
    };
    run(home, store, config, &opts).map(Some)
}

/// Apply `[retention]` once: audit rows, then `ipc/errors/`.
pub fn run(home: &Home, store: &mut Store, config: &Config, opts: &Options) -> Result<Report> {
    let audit = prune_audit(store, config.retention.audit_days, opts)?;
    let ipc_errors = prune_ipc_errors(home, config, opts)?;
    let media = crate::media::prune::run(home, store, config, opts.now, opts.dry_run)?;
    if !opts.dry_run && (audit.deleted > 0 || ipc_errors.removed_entries > 0) {
        audit::record(
            &store.conn,
            None,
            None,
            "housekeeping.pruned",
            serde_json::json!({"audit_rows": audit.deleted, "ipc_errors_entries": ipc_errors.removed_entries,
                               "ipc_errors_bytes": ipc_errors.removed_bytes}),
        )?;
    }
    Ok(Report {
        dry_run: opts.dry_run,
        audit,
        ipc_errors,
        media,
    })
}

/// Delete audit rows older than `days` (0 keeps everything), in short transactions.
fn prune_audit(store: &mut Store, days: u32, opts: &Options) -> Result<AuditReport> {
    let mut r = AuditReport::default();
    if days == 0 {
        return Ok(r);
    }
    let before = opts.now - i64::from(days) * DAY_MS;
    r.before = Some(crate::infra::time::rfc3339(before));
    if opts.dry_run {
        r.deleted = audit::count_before(&store.conn, before)?;
        return Ok(r);
    }
    while (r.deleted as usize) < MAX_AUDIT_ROWS {
        let tx = store.write()?;
        let n = audit::delete_before(&tx, before, AUDIT_CHUNK)?;
        tx.commit()?;
        r.deleted += n as u64;
        if n < AUDIT_CHUNK {
            return Ok(r);
        }
    }
    r.more = audit::count_before(&store.conn, before)? > 0;
    Ok(r)
}

/// One entry of `ipc/errors/`: the names that belong together and what they cost.
#[derive(Debug, Default)]
struct Bundle {
    names: Vec<OsString>,
    bytes: u64,
    /// mtime of the `.reason.txt` the host wrote, in seconds.
    reason_at: Option<i64>,
    /// Earliest mtime of the other names (agent-chosen; used only without a reason file).
    other_at: Option<i64>,
}

impl Bundle {
    /// When it was put there, in epoch ms, never later than `now`.
    fn at(&self, now: i64) -> i64 {
        let s = self.reason_at.or(self.other_at).unwrap_or(0);
        s.saturating_mul(1000).min(now)
    }
}

/// The key that pairs `X.json` (or `X`, a folder moved aside) with `X.reason.txt`.
fn bundle_key(name: &OsStr) -> (Vec<u8>, bool) {
    let b = name.as_encoded_bytes();
    if let Some(k) = b.strip_suffix(b".reason.txt") {
        return (k.to_vec(), true);
    }
    (b.strip_suffix(b".json").unwrap_or(b).to_vec(), false)
}

/// Prune `ipc/errors/` by age, then by size oldest first (0 days or 0 MiB: that rule is off).
pub fn prune_ipc_errors(home: &Home, config: &Config, opts: &Options) -> Result<ErrorsReport> {
    let mut r = ErrorsReport::default();
    let path = home.ipc_errors();
    let errors = match Dir::open(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(r),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open {} (is it a symlink?)", path.display()));
        }
    };
    let mut bundles: BTreeMap<Vec<u8>, Bundle> = BTreeMap::new();
    let mut seen = 0usize;
    let mut failed = None;
    errors.each_entry(|name| {
        seen += 1;
        if seen > MAX_ERRORS_SCANNED {
            r.truncated = true;
            return ControlFlow::Break(());
        }
        let st = match errors.stat(name) {
            Ok(Some(st)) => st,
            Ok(None) => return ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        };
        let (key, is_reason) = bundle_key(name);
        let b = bundles.entry(key).or_default();
        b.names.push(name.to_os_string());
        // A directory's contents are measured below, once the listing is done.
        b.bytes = b.bytes.saturating_add(st.disk_bytes);
        if is_reason && matches!(st.kind, Kind::File { .. }) {
            b.reason_at = Some(st.mtime);
        } else {
            b.other_at = Some(b.other_at.map_or(st.mtime, |t| t.min(st.mtime)));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e).with_context(|| format!("cannot list {}", path.display()));
    }
    for b in bundles.values_mut() {
        for n in &b.names {
            if let Ok(Some(Kind::Dir)) = errors.kind(n)
                && let Ok(sub) = errors.sub_os(n)
                && let Ok(u) = untrusted::usage(&sub, MAX_ENTRIES_MEASURED)
            {
                b.bytes = b.bytes.saturating_add(u.bytes);
            }
        }
    }
    let mut order: Vec<(i64, Vec<u8>)> = bundles
        .iter()
        .map(|(k, b)| (b.at(opts.now), k.clone()))
        .collect();
    order.sort();
    let days = config.retention.ipc_errors_days;
    let too_old = (days > 0).then(|| opts.now - i64::from(days) * DAY_MS);
    let limit = (config.retention.ipc_errors_mb > 0)
        .then(|| config.retention.ipc_errors_mb.saturating_mul(1 << 20));
    let mut total: u64 = bundles.values().map(|b| b.bytes).sum();
    for (at, key) in order {
        let b = &bundles[&key];
        let why = if too_old.is_some_and(|t| at < t) {
            "age"
        } else if limit.is_some_and(|l| total > l) {
            "size"
        } else {
            r.kept_entries += 1;
            r.kept_bytes += b.bytes;
            continue;
        };
        if !opts.dry_run {
            for n in &b.names {
                untrusted::remove_tree(&errors, n)
                    .with_context(|| format!("cannot remove {}", path.join(n).display()))?;
            }
        }
        total = total.saturating_sub(b.bytes);
        r.removed_entries += 1;
        r.removed_bytes += b.bytes;
        if r.removed.len() < MAX_LISTED {
            r.removed.push(Removed {
                files: b
                    .names
                    .iter()
                    .map(|n| crate::steps::ipc::read::display_name(n))
                    .collect(),
                bytes: b.bytes,
                at: crate::infra::time::rfc3339(at),
                why,
            });
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pair_a_file_with_its_reason() {
        for (name, key, reason) in [
            ("fam-a-1.json", "fam-a-1", false),
            ("fam-a-1.reason.txt", "fam-a-1", true),
            ("fam-replies-17", "fam-replies-17", false),
            ("fam-replies-17.reason.txt", "fam-replies-17", true),
            ("odd", "odd", false),
        ] {
            let (k, r) = bundle_key(OsStr::new(name));
            assert_eq!((k.as_slice(), r), (key.as_bytes(), reason), "{name}");
        }
    }

    #[test]
    fn dated_by_the_reason_file_and_never_in_the_future() {
        let b = Bundle {
            reason_at: Some(100),
            other_at: Some(5),
            ..Bundle::default()
        };
        assert_eq!(b.at(1_000_000), 100_000);
        let b = Bundle {
            other_at: Some(10_000_000),
            ..Bundle::default()
        };
        assert_eq!(b.at(1_000), 1_000);
    }
}
