//! Indexing the compaction archives an agent writes to `groups/FOLDER/conversations/*.md`.
//!
//! The folder is agent-writable, so it is read only through `crate::infra::untrusted` (no link
//! followed, regular files only, every read bounded), and what is read is only ever text to
//! index: a file's name is its key (so indexing it again replaces it), never a path to open
//! elsewhere. Files are read one at a time, each outside any write transaction.

use anyhow::{Context, Result};
use serde::Serialize;
use std::ffi::OsStr;
use std::io;

use crate::infra::paths::Home;
use crate::infra::store::{Store, history};
use crate::infra::untrusted::{Kind, Parents};

/// Largest archive indexed; a bigger file is skipped and reported.
pub const MAX_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024;
/// Most files looked at in one folder's `conversations/`.
pub const MAX_ARCHIVES: usize = 5_000;
/// Longest file name indexed.
const MAX_NAME: usize = 200;

/// What one folder's scan did.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Report {
    pub indexed: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Files not indexed, with the reason.
    pub skipped: Vec<String>,
}

/// Bring the index of `folder`'s archives in step with its `conversations/` folder: new and
/// changed files are (re)indexed, files that are gone are dropped from the index. At most
/// `max_bytes` of files are read in one call (an agent could rewrite its archives between two
/// searches); what is left is read by the next call.
pub fn index_folder(
    store: &mut Store,
    home: &Home,
    folder: &str,
    max_bytes: u64,
) -> Result<Report> {
    let mut report = Report::default();
    let parents = Parents::open(home).context("opening the home's group folders")?;
    let dir = match parents
        .groups
        .sub(folder)
        .and_then(|g| g.sub("conversations"))
    {
        Ok(d) => Some(d),
        Err(e) if missing(&e) => None,
        Err(e) => {
            return Err(e).with_context(|| format!("opening groups/{folder}/conversations"));
        }
    };
    let (names, truncated) = match &dir {
        Some(d) => d
            .entries(MAX_ARCHIVES)
            .with_context(|| format!("listing groups/{folder}/conversations"))?,
        None => (Vec::new(), false),
    };
    let mut seen = Vec::new();
    let mut budget = max_bytes;
    for name in &names {
        let Some(name) = name
            .to_str()
            .filter(|n| n.ends_with(".md") && n.len() <= MAX_NAME)
        else {
            continue;
        };
        let dir = dir.as_ref().expect("names come from the folder");
        match index_one(store, dir, folder, name, &mut budget)? {
            Outcome::Indexed => report.indexed += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::Skipped(why) => report.skipped.push(format!("{name}: {why}")),
        }
        seen.push(name.to_string());
    }
    if truncated {
        report.skipped.push(format!(
            "more than {MAX_ARCHIVES} files in conversations/; the rest were not looked at"
        ));
    } else {
        for old in history::archive_names(&store.conn, folder)? {
            if !seen.contains(&old) {
                history::delete_archive(&store.conn, folder, &old)?;
                report.removed += 1;
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Indexed,
    Unchanged,
    Skipped(String),
}

fn index_one(
    store: &mut Store,
    dir: &crate::infra::untrusted::Dir,
    folder: &str,
    name: &str,
    budget: &mut u64,
) -> Result<Outcome> {
    let os = OsStr::new(name);
    let Some(st) = dir.stat(os)? else {
        return Ok(Outcome::Skipped("vanished".into()));
    };
    let Kind::File { size } = st.kind else {
        return Ok(Outcome::Skipped(format!("a {}", st.kind.describe())));
    };
    if size > MAX_ARCHIVE_BYTES {
        return Ok(Outcome::Skipped(format!(
            "{size} bytes; archives over {MAX_ARCHIVE_BYTES} are not indexed"
        )));
    }
    if history::archive_stamp(&store.conn, folder, name)? == Some((size as i64, st.mtime)) {
        return Ok(Outcome::Unchanged);
    }
    if size > *budget {
        return Ok(Outcome::Skipped(
            "left for the next scan (read enough for now)".into(),
        ));
    }
    *budget -= size;
    let bytes = match dir.read_regular(os, MAX_ARCHIVE_BYTES) {
        Ok(b) => b,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let archived_at = stamp_of(name).unwrap_or(st.mtime.saturating_mul(1000));
    let tx = store.write()?;
    history::upsert_archive(
        &tx,
        &history::ArchiveFile {
            folder,
            name,
            text: &text,
            archived_at,
            size: size as i64,
            mtime: st.mtime,
        },
    )?;
    tx.commit()?;
    Ok(Outcome::Indexed)
}

/// Index every registered group's archives (for `claw search --reindex`).
pub fn index_all(store: &mut Store, home: &Home) -> Result<Vec<(String, Report)>> {
    let folders: Vec<String> = crate::infra::store::groups::list(&store.conn)?
        .into_iter()
        .map(|g| g.folder)
        .collect();
    let mut out = Vec::new();
    for f in folders {
        let r = index_folder(store, home, &f, u64::MAX)?;
        out.push((f, r));
    }
    Ok(out)
}

fn missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The time claw-agent puts in an archive's name (`2026-03-01-101500.md`, UTC), if it has one.
fn stamp_of(name: &str) -> Option<i64> {
    let stamp = name.get(..17)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d-%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn archive_names_carry_their_time() {
        assert_eq!(
            super::stamp_of("2026-03-01-101500.md"),
            crate::infra::time::parse_rfc3339("2026-03-01T10:15:00Z")
        );
        assert_eq!(
            super::stamp_of("2026-03-01-101500-2.md"),
            super::stamp_of("2026-03-01-101500.md")
        );
        assert_eq!(super::stamp_of("notes.md"), None);
    }
}
