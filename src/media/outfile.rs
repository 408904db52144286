//! `send_file`: copying a file out of a group's folder into host-owned `media-out/`, at
//! ipc-apply time, so what is delivered is what the agent pointed at then (it cannot swap the
//! file afterwards). The walk goes one component at a time through `crate::infra::untrusted`: no
//! symlink is followed, only a regular, singly-linked file is read, and the copy is capped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::image_info::{self, HEAD_BYTES};
use super::{Kind, MediaConfig, name};
use crate::infra::untrusted::{Copied, Dir, copy_capped};

/// Deepest path accepted for `send_file`.
const MAX_DEPTH: usize = 16;

/// A file copied out for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutFile {
    /// Absolute host path under `media-out/`.
    pub path: PathBuf,
    pub kind: Kind,
    /// The name the recipient sees (sanitised).
    pub name: String,
    pub mime: String,
    pub size: u64,
}

/// Check a `send_file` path as the agent gave it: relative to the group folder (a leading
/// `/workspace/group/` is accepted), no `..`, no empty or dot components. Returns the parts.
pub fn split_path(raw: &str) -> Result<Vec<String>, String> {
    let rel = raw
        .strip_prefix("/workspace/group/")
        .unwrap_or(raw)
        .trim_start_matches("./");
    if rel.starts_with('/') {
        return Err(format!(
            "path {raw:?} must be inside the group folder (relative, or under /workspace/group/)"
        ));
    }
    let parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.len() > MAX_DEPTH {
        return Err(format!("path {raw:?} is deeper than {MAX_DEPTH} folders"));
    }
    for p in &parts {
        if p.is_empty() || p == "." || p == ".." || p.contains('\0') {
            return Err(format!(
                "path {raw:?} has an empty, `.` or `..` part; give a plain path inside the group folder"
            ));
        }
    }
    Ok(parts)
}

/// Copy `groups/FOLDER/<rel>` to `out_dir/<tag>-<name>`. Errors are reasons for the agent.
pub fn copy_out(
    group_dir: &Path,
    rel: &str,
    out_dir: &Path,
    tag: &str,
    cfg: &MediaConfig,
) -> Result<OutFile, String> {
    let parts = split_path(rel)?;
    let mut dir = Dir::open(group_dir).map_err(|e| format!("cannot open the group folder: {e}"))?;
    for p in &parts[..parts.len() - 1] {
        dir = dir.sub(p).map_err(|e| {
            format!("`{p}` in {rel:?} is not a plain folder (links are not followed): {e}")
        })?;
    }
    let last = &parts[parts.len() - 1];
    let cap = cfg.cap(None);
    let (mut file, size) = dir
        .open_regular(OsStr::new(last), cap)
        .map_err(|why| format!("cannot send {rel:?}: {why}"))?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let safe = name::sanitise(last, "file");
    let dest = out_dir.join(format!("{}-{safe}", name::safe_id(tag)));
    // The destination is host-owned; a leftover from a crashed apply of the same request is ours.
    let _ = std::fs::remove_file(&dest);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let copied = copy_capped(&mut file, &mut out, cap, HEAD_BYTES)
        .map_err(|e| format!("copying {rel:?} failed: {e}"));
    let (bytes, head) = match copied {
        Ok(Copied::Done { bytes, head }) => (bytes, head),
        Ok(Copied::TooLarge { .. }) => {
            let _ = std::fs::remove_file(&dest);
            return Err(format!("{rel:?} grew past the limit while being copied"));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            return Err(e);
        }
    };
    let mime = image_info::sniff(&head);
    let kind = Kind::checked(None, &mime);
    // Each kind has its own cap; the copy used the largest.
    if bytes > cfg.cap(Some(kind)) {
        let _ = std::fs::remove_file(&dest);
        return Err(format!(
            "{rel:?} is {}, over the {} limit for a {}",
            super::human_size(bytes),
            super::human_size(cfg.cap(Some(kind))),
            kind.as_str()
        ));
    }
    let _ = size;
    Ok(OutFile {
        path: dest,
        kind,
        name: safe,
        mime,
        size: bytes,
    })
}

/// Remove the host copies of `send_file` rows that are sent or given up (the row keeps its
/// record); returns how many. Terminal chats keep theirs: `claw chat` printed the copy's path
/// as the delivery. `dry_run` only counts.
pub fn remove_settled(conn: &rusqlite::Connection, dry_run: bool) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.outbox_id, f.path FROM outbox_files f JOIN outbox o ON o.id = f.outbox_id
         WHERE o.status IN ('sent', 'failed') AND f.path != ''
           AND substr(o.chat_id, 1, 4) != 'cli:' LIMIT 10000",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if dry_run {
        return Ok(rows.len() as u64);
    }
    for (id, path) in &rows {
        // media-out/ is the host's own folder; a copy already gone is fine.
        let _ = std::fs::remove_file(path);
        conn.execute(
            "UPDATE outbox_files SET path = '' WHERE outbox_id = ?1",
            [id],
        )?;
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_group_folder() {
        assert_eq!(split_path("out/chart.png").unwrap(), ["out", "chart.png"]);
        assert_eq!(split_path("/workspace/group/a.pdf").unwrap(), ["a.pdf"]);
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "a/../../b", ""] {
            assert!(split_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_fifos_and_hard_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g");
        std::fs::create_dir_all(g.join("sub")).unwrap();
        std::fs::write(g.join("ok.txt"), b"hello").unwrap();
        std::fs::write(d.path().join("secret"), b"host secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), g.join("link")).unwrap();
        std::os::unix::fs::symlink(d.path(), g.join("dirlink")).unwrap();
        std::fs::hard_link(d.path().join("secret"), g.join("hard")).unwrap();
        let fifo = std::ffi::CString::new(g.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let out = d.path().join("out");
        let cfg = MediaConfig::default();
        let f = copy_out(&g, "ok.txt", &out, "t1", &cfg).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"hello");
        assert_eq!(f.kind, Kind::Document);
        for (bad, why) in [
            ("link", "symlink"),
            ("fifo", "FIFO"),
            ("hard", "hard links"),
            ("dirlink/secret", "not a plain folder"),
            ("sub", "directory"),
            ("missing", "no such file"),
        ] {
            let e = copy_out(&g, bad, &out, "t2", &cfg).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let mut small = MediaConfig::default();
        small.max_mb.document = 0;
        small.max_mb.photo = 0;
        small.max_mb.voice = 0;
        small.max_mb.audio = 0;
        small.max_mb.video = 0;
        assert!(
            copy_out(&g, "ok.txt", &out, "t3", &small)
                .unwrap_err()
                .contains("limit")
        );
    }
}
