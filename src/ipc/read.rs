//! Finding and reading request files, and moving rejected ones to `ipc/errors/`.
//!
//! Owns the rules for what a request file may be: a regular file of at most 1 MiB named
//! `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$`, holding one [`IpcRequest`]. It never follows a
//! symlink, never opens a FIFO or device, and never reads a file whose name is refused.

use std::ffi::{OsStr, OsString};

use crate::protocol::IpcRequest;
use crate::untrusted::{Dir, Kind};

/// Most names read from one request directory in one pass; the rest wait for the next pass.
pub const MAX_NAMES_PER_SCAN: usize = 50_000;

/// Largest request file read.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024;

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

/// Every entry of one request directory, read and parsed. Names starting with `.` are an
/// agent's files still being written and are left alone.
pub fn scan(dir: &Dir, sub: &'static str) -> std::io::Result<Vec<Item>> {
    let mut items = Vec::new();
    for name in dir.entries(MAX_NAMES_PER_SCAN)?.0 {
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let (stem, parsed) = match request_stem(&name) {
            Err(e) => (None, Err(e)),
            Ok(stem) => {
                let parsed = dir
                    .read_regular(&name, MAX_REQUEST_BYTES)
                    .and_then(|b| parse(&b));
                (Some(stem), parsed)
            }
        };
        items.push(Item {
            sub,
            name,
            stem,
            parsed,
        });
    }
    Ok(items)
}

/// Move `name` from `from` into `errors` as `FOLDER-<name>-<n>.json` with a
/// `FOLDER-<name>-<n>.reason.txt` beside it; returns the new name. Links and directories are
/// moved as they are, never followed.
pub fn quarantine(
    errors: &Dir,
    from: &Dir,
    name: &OsStr,
    folder: &str,
    label: &str,
    reason: &str,
) -> Result<String, String> {
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
    let text = format!(
        "ipc/{folder}/{label}\nrejected at {}\nreason: {reason}\n",
        crate::time::rfc3339(crate::time::now_ms())
    );
    for n in 1..10_000 {
        let slot = format!("{folder}-{base}-{n}");
        // The reason file is created exclusively, which reserves the slot against other writers.
        match errors.create_new(OsStr::new(&format!("{slot}.reason.txt")), text.as_bytes()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return Err(format!("cannot write reason file in ipc/errors: {e}")),
        }
        let target = format!("{slot}.json");
        return match from.rename_to(name, errors, OsStr::new(&target)) {
            Ok(()) => Ok(target),
            Err(e) => {
                // Moving can fail (e.g. a non-empty directory across devices); never leave it to
                // be retried forever, and never descend into it.
                let removed = match from.kind(name) {
                    Ok(Some(Kind::Dir)) => from.rmdir(name),
                    _ => from.unlink(name),
                };
                match removed {
                    Ok(()) => Ok(format!("(removed: could not move: {e})")),
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
    fn names() {
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
}
