//! Finding and reading request files, and moving rejected ones to `ipc/errors/`.
//!
//! Owns the rules for what a request file may be: a regular file of at most 1 MiB named
//! `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$`, holding one [`IpcRequest`]. It never follows a
//! symlink, never opens a FIFO or device, and never reads a file whose name is refused.
//!
//! Requests are read as a stream: names first (a bounded number, in byte order), then files in
//! small batches bounded by count and bytes, each batch finished before the next is read, so what
//! the host holds at once does not depend on how much an agent wrote. A pass over one group stops
//! at [`MAX_FILES_PER_PASS`] files or [`MAX_BYTES_PER_PASS`] bytes; the rest waits for the next
//! pass, so a flooding group cannot starve the others.

use std::collections::BinaryHeap;
use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;

use crate::infra::protocol::IpcRequest;
use crate::infra::untrusted::{Dir, Kind};

/// Most directory entries looked at in one request directory per pass (names are cheap, but an
/// agent can create millions).
pub const MAX_NAMES_VISITED: usize = 50_000;

/// Largest request file read.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024;

/// Most request files handled for one group in one pass (both directories together).
pub const MAX_FILES_PER_PASS: usize = 1_000;

/// Most request bytes read for one group in one pass.
pub const MAX_BYTES_PER_PASS: u64 = 64 * 1024 * 1024;

/// Most files in one batch (one transaction).
pub const BATCH_FILES: usize = 256;

/// A batch is closed once it holds this many bytes of requests (the file that crosses the line
/// is the last one in it, so a batch holds at most this plus one file).
pub const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// What is left of one group's pass.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub files: usize,
    pub bytes: u64,
    /// A file was left for the next pass because the bytes ran out.
    pub put_off: bool,
}

impl Budget {
    /// A fresh pass: [`MAX_FILES_PER_PASS`] files, [`MAX_BYTES_PER_PASS`] bytes.
    pub fn pass() -> Budget {
        Budget {
            files: MAX_FILES_PER_PASS,
            bytes: MAX_BYTES_PER_PASS,
            put_off: false,
        }
    }

    /// Nothing more may be read in this pass.
    pub fn spent(&self) -> bool {
        self.files == 0 || self.bytes == 0
    }
}

/// One directory entry found under `messages/` or `tasks/`.
#[derive(Debug)]
pub struct Item {
    /// `messages` or `tasks`.
    pub sub: &'static str,
    pub name: OsString,
    /// The request id, when the name is allowed.
    pub stem: Option<String>,
    /// The request, or why the file is refused.
    pub parsed: Result<IpcRequest, String>,
}

impl Item {
    /// `tasks/NAME` for messages and audit rows (odd bytes escaped).
    pub fn label(&self) -> String {
        format!("{}/{}", self.sub, display_name(&self.name))
    }
}

/// A file name as text, with anything unprintable escaped.
pub fn display_name(name: &OsStr) -> String {
    name.to_string_lossy().escape_debug().to_string()
}

/// The request id of an allowed file name, or why the name is refused.
pub fn request_stem(name: &OsStr) -> Result<String, String> {
    let shown = display_name(name);
    let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
        return Err(format!(
            "file name `{shown}` must end in `.json` (write `.tmp-…` first, then rename)"
        ));
    };
    let mut chars = stem.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || stem.len() > 128 {
        return Err(format!(
            "file name `{shown}` is not allowed: use 1–128 of A-Z a-z 0-9 . _ - (starting with a letter or digit), then `.json`"
        ));
    }
    Ok(stem.to_string())
}

/// Parse a request body; the error names what is wrong and where.
pub fn parse(bytes: &[u8]) -> Result<IpcRequest, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a valid request: {e}"))
}

/// The first `max` request names of a directory in byte order (agents name files by time, so
/// this is oldest first), looking at no more than [`MAX_NAMES_VISITED`] entries; the flag says
/// whether names were left for a later pass. Names starting with `.` are an agent's files still
/// being written and are left alone. Memory is bounded by `max` names, however big the directory.
pub fn names(dir: &Dir, max: usize) -> std::io::Result<(Vec<OsString>, bool)> {
    let mut heap: BinaryHeap<OsString> = BinaryHeap::new();
    let mut visited = 0usize;
    let mut more = false;
    dir.each_entry(|name| {
        visited += 1;
        if visited > MAX_NAMES_VISITED {
            more = true;
            return ControlFlow::Break(());
        }
        if name.as_encoded_bytes().starts_with(b".") {
            return ControlFlow::Continue(());
        }
        if heap.len() < max {
            heap.push(name.to_os_string());
        } else if heap.peek().is_some_and(|top| name < top.as_os_str()) {
            heap.pop();
            heap.push(name.to_os_string());
            more = true;
        } else {
            more = true;
        }
        ControlFlow::Continue(())
    })?;
    Ok((heap.into_sorted_vec(), more))
}

/// Read and parse the next files named by `names` into one batch: at most [`BATCH_FILES`]
/// files, closed once [`BATCH_BYTES`] were read, and never past what `budget` allows (a file
/// that does not fit what is left of the pass stays where it is for the next pass).
pub fn next_batch(
    dir: &Dir,
    sub: &'static str,
    names: &mut std::iter::Peekable<std::vec::IntoIter<OsString>>,
    budget: &mut Budget,
) -> Vec<Item> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while batch.len() < BATCH_FILES && bytes < BATCH_BYTES && !budget.spent() {
        let Some(name) = names.next() else { break };
        // Only near the end of a pass's bytes is a file looked at before reading it.
        if budget.bytes < MAX_REQUEST_BYTES && over_pass_budget(dir, &name, budget.bytes) {
            budget.bytes = 0;
            budget.put_off = true;
            break;
        }
        budget.files -= 1;
        let (stem, parsed) = match request_stem(&name) {
            Err(e) => (None, Err(e)),
            Ok(stem) => {
                let parsed = dir.read_regular(&name, MAX_REQUEST_BYTES).and_then(|b| {
                    let n = b.len() as u64;
                    bytes += n;
                    budget.bytes = budget.bytes.saturating_sub(n);
                    parse(&b)
                });
                (Some(stem), parsed)
            }
        };
        batch.push(Item {
            sub,
            name,
            stem,
            parsed,
        });
    }
    batch
}

/// True if `name` is a regular file within [`MAX_REQUEST_BYTES`] but bigger than `left`.
fn over_pass_budget(dir: &Dir, name: &OsStr, left: u64) -> bool {
    matches!(dir.kind(name), Ok(Some(Kind::File { size })) if size > left && size <= MAX_REQUEST_BYTES)
}

/// Rejected regular files bigger than this are deleted instead of kept in `ipc/errors/` (the
/// reason file says so). Moving them would take them out of the group's own disk limit and let
/// an agent fill the host's disk through the errors folder.
pub const KEEP_REJECTED_BYTES: u64 = 64 * 1024;

/// Where a rejected entry went.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// The name under `ipc/errors/`, or what was done instead, in parentheses.
    pub name: String,
    /// Disk bytes it added to `ipc/errors/` (a directory counts only itself: it is not walked).
    pub disk_bytes: u64,
    /// A whole directory was moved there.
    pub dir: bool,
}

/// Move `name` from `from` into `errors` as `FOLDER-<name>-<n>.json` with a
/// `FOLDER-<name>-<n>.reason.txt` beside it. Links and directories are moved as they are, never
/// followed; a regular file over [`KEEP_REJECTED_BYTES`] is deleted and only its reason kept.
pub fn quarantine(
    errors: &Dir,
    from: &Dir,
    name: &OsStr,
    folder: &str,
    label: &str,
    reason: &str,
) -> Result<Quarantined, String> {
    let lossy = name.to_string_lossy();
    let base: String = lossy
        .strip_suffix(".json")
        .unwrap_or(&lossy)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let st = from.stat(name).ok().flatten();
    let too_big = match st.map(|s| s.kind) {
        Some(Kind::File { size }) if size > KEEP_REJECTED_BYTES => Some(size),
        _ => None,
    };
    let mut text = format!(
        "ipc/{folder}/{label}\nrejected at {}\nreason: {reason}\n",
        crate::infra::time::rfc3339(crate::infra::time::now_ms())
    );
    if let Some(size) = too_big {
        text.push_str(&format!(
            "the file ({size} bytes) was deleted, not kept: rejected files over {} KiB are not kept\n",
            KEEP_REJECTED_BYTES / 1024
        ));
    }
    for n in 1..10_000 {
        let slot = format!("{folder}-{base}-{n}");
        let reason_name = format!("{slot}.reason.txt");
        // The reason file is created exclusively, which reserves the slot against other writers.
        match errors.create_new(OsStr::new(&reason_name), text.as_bytes()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return Err(format!("cannot write reason file in ipc/errors: {e}")),
        }
        let reason_bytes = text.len() as u64;
        if let Some(size) = too_big {
            return match from.unlink(name) {
                Ok(()) => Ok(Quarantined {
                    name: format!("(deleted, {size} bytes; reason in {reason_name})"),
                    disk_bytes: reason_bytes,
                    dir: false,
                }),
                Err(e) => Err(format!("cannot delete it: {e}")),
            };
        }
        let target = format!("{slot}.json");
        return match from.rename_to(name, errors, OsStr::new(&target)) {
            Ok(()) => Ok(Quarantined {
                name: target,
                disk_bytes: reason_bytes + st.map_or(0, |s| s.disk_bytes),
                dir: st.is_some_and(|s| s.kind == Kind::Dir),
            }),
            Err(e) => {
                // Moving can fail (e.g. a non-empty directory across devices); never leave it to
                // be retried forever, and never descend into it.
                let removed = match from.kind(name) {
                    Ok(Some(Kind::Dir)) => from.rmdir(name),
                    _ => from.unlink(name),
                };
                match removed {
                    Ok(()) => Ok(Quarantined {
                        name: format!("(removed: could not move: {e})"),
                        disk_bytes: reason_bytes,
                        dir: false,
                    }),
                    Err(e2) => Err(format!("cannot move ({e}) or remove ({e2}) it")),
                }
            }
        };
    }
    Err("ipc/errors has too many files with this name; clear it out".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names() {
        for ok in [
            "a.json",
            "1700000000-ab_c.d-e.json",
            &format!("{}.json", "a".repeat(128)),
        ] {
            assert!(request_stem(OsStr::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "a.txt",
            "a",
            ".json",
            "-a.json",
            "_a.json",
            "a b.json",
            "a\n.json",
            "é.json",
            "a.JSON",
            &format!("{}.json", "a".repeat(129)),
        ] {
            assert!(request_stem(OsStr::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_refuses_unknown_and_mistyped() {
        assert!(parse(br#"{"type":"send_message","text":"hi"}"#).is_ok());
        assert!(parse(br#"{"type":"refresh_groups"}"#).is_ok());
        for bad in [
            &br#"{"type":"send_message","text":"hi","extra":1}"#[..],
            br#"{"type":"shout","text":"hi"}"#,
            br#"{"type":"pause_task","task_id":"7"}"#,
            br#"{"text":"hi"}"#,
            br#"{"type":"send_message","text":"hi""#,
            b"\xff\xfe",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn dir_with(files: &[(&str, usize)]) -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        for (name, size) in files {
            let text = "x".repeat(size.saturating_sub(32));
            let body = format!(r#"{{"type":"send_message","text":"{text}"}}"#);
            std::fs::write(t.path().join(name), body).unwrap();
        }
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn names_keeps_the_first_in_byte_order_and_skips_temp_files() {
        let (_t, d) = dir_with(&[
            ("c.json", 40),
            ("a.json", 40),
            (".tmp-x.json", 40),
            ("b.json", 40),
            ("d.json", 40),
        ]);
        let (n, more) = names(&d, 10).unwrap();
        assert_eq!(n, ["a.json", "b.json", "c.json", "d.json"]);
        assert!(!more);
        let (n, more) = names(&d, 2).unwrap();
        assert_eq!(n, ["a.json", "b.json"]);
        assert!(more);
    }

    #[test]
    fn batches_are_bounded_by_count_bytes_and_the_pass() {
        let files: Vec<(String, usize)> = (0..300).map(|i| (format!("{i:04}.json"), 100)).collect();
        let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let (_t, d) = dir_with(&refs);
        let (n, _) = names(&d, 1000).unwrap();
        let mut it = n.into_iter().peekable();
        let mut budget = Budget::pass();
        let b = next_batch(&d, "messages", &mut it, &mut budget);
        assert_eq!(b.len(), BATCH_FILES);
        assert!(b.iter().all(|i| i.parsed.is_ok()));
        assert_eq!(next_batch(&d, "messages", &mut it, &mut budget).len(), 44);
        assert_eq!(budget.files, MAX_FILES_PER_PASS - 300);

        // 20 files of 900 KiB: a batch closes once it passes 8 MiB.
        let big: Vec<(String, usize)> = (0..20)
            .map(|i| (format!("{i:02}.json"), 900 << 10))
            .collect();
        let refs: Vec<(&str, usize)> = big.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let (_t, d) = dir_with(&refs);
        let (n, _) = names(&d, 1000).unwrap();
        let mut it = n.into_iter().peekable();
        let mut budget = Budget::pass();
        assert_eq!(next_batch(&d, "messages", &mut it, &mut budget).len(), 10);

        // A pass with 2 MiB left takes two of them and leaves the third for the next pass.
        let (n, _) = names(&d, 1000).unwrap();
        let mut it = n.into_iter().peekable();
        let mut budget = Budget {
            files: 1000,
            bytes: 2 << 20,
            put_off: false,
        };
        assert_eq!(next_batch(&d, "messages", &mut it, &mut budget).len(), 2);
        assert!(budget.spent() && budget.put_off);
    }
}
