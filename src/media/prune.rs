//! Inbox retention: saved attachments older than `media.inbox_max_age_days` are deleted from the
//! group folders (through `crate::infra::untrusted`: the folders are agent-writable, so each part of
//! `inbox/<date>/<file>` is opened without following links and only the entry itself is
//! removed). Their rows stay, marked as deleted, so history still says a file was there. Files
//! copied out for `send_file` are removed once their outbox row is settled.

use anyhow::Result;
use serde::Serialize;
use std::ffi::OsStr;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::{Store, attachments};
use crate::infra::untrusted::{Dir, Kind};

/// Most inbox files removed per call (the next call does the rest).
pub const MAX_PER_CALL: usize = 10_000;
const DAY_MS: i64 = 86_400_000;

/// What one call removed (or would remove).
#[derive(Debug, Default, Serialize)]
pub struct MediaReport {
    pub inbox_files: u64,
    pub inbox_bytes: u64,
    pub sent_copies: u64,
}

/// Prune inbox files by age and settled `send_file` copies; `dry_run` only counts.
pub fn run(
    home: &Home,
    store: &mut Store,
    config: &Config,
    now: i64,
    dry_run: bool,
) -> Result<MediaReport> {
    let mut r = MediaReport::default();
    let days = config.media.inbox_max_age_days;
    if days > 0 {
        let old =
            attachments::saved_before(&store.conn, now - i64::from(days) * DAY_MS, MAX_PER_CALL)?;
        for a in old {
            r.inbox_files += 1;
            r.inbox_bytes += a.size.unwrap_or(0).max(0) as u64;
            if dry_run {
                continue;
            }
            if let Some(path) = &a.path {
                remove_inbox_file(&home.groups().join(&a.folder), path);
            }
            attachments::mark_pruned(&store.conn, a.id)?;
        }
    }
    r.sent_copies = crate::media::outfile::remove_settled(&store.conn, dry_run)?;
    Ok(r)
}

/// Remove `inbox/<date>/<file>` under a group folder; anything but that shape, or a link on
/// the way, is left alone (and logged).
fn remove_inbox_file(group: &std::path::Path, rel: &str) {
    let parts: Vec<&str> = rel.split('/').collect();
    let [inbox, date, file] = parts[..] else {
        tracing::warn!(rel, "inbox path of an unexpected shape; not removed");
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let day = Dir::open(group)?.sub(inbox)?.sub(date)?;
        if let Some(Kind::File { .. }) = day.kind(OsStr::new(file))? {
            day.unlink(OsStr::new(file))?;
        }
        // An emptied day folder goes too; a non-empty one stays.
        drop(day);
        let inbox_dir = Dir::open(group)?.sub(inbox)?;
        let _ = inbox_dir.rmdir(OsStr::new(date));
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(rel, error = %e, "cannot remove an old inbox file");
    }
}
