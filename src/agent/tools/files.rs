//! File tools: `read_file`, `write_file`, `edit_file`, `glob`, `grep`.
//!
//! Relative paths resolve inside the group folder. The container's mounts are the boundary, so
//! these never try to second-guess a path; they only give clear errors.

use super::{Ctx, Output, arg_str};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn resolve(ctx: &Ctx, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        ctx.paths.group().join(p)
    }
}

macro_rules! arg {
    ($input:expr, $key:expr) => {
        match arg_str($input, $key) {
            Ok(v) => v,
            Err(e) => return e,
        }
    };
}

/// `read_file`: the file's text, optionally a window of lines.
pub fn read(ctx: &Ctx, input: &Value) -> Output {
    let path = resolve(ctx, arg!(input, "path"));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Output::err(format!("cannot read {}: {e}", path.display())),
    };
    // An image opened by a vision model is shown to it, not dumped as bytes.
    if ctx.start.vision && crate::agent::image::is_image(&bytes) {
        return match crate::agent::image::from_bytes(&bytes) {
            Ok((block, w, h)) => Output {
                content: format!(
                    "{} is an image ({w}×{h} as sent); it is attached below.",
                    path.display()
                ),
                is_error: false,
                image: Some(block),
            },
            Err(e) => Output::err(format!("{}: {e}", path.display())),
        };
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let offset = input["offset"].as_u64().unwrap_or(1).max(1) as usize;
    let limit = input["limit"].as_u64().map(|l| l as usize);
    if offset == 1 && limit.is_none() {
        return Output::ok(text);
    }
    let lines: Vec<&str> = text
        .lines()
        .skip(offset - 1)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Output::ok(lines.join("\n"))
}

/// `write_file`: create or replace, making parent folders.
pub fn write(ctx: &Ctx, input: &Value) -> Output {
    let path = resolve(ctx, arg!(input, "path"));
    let content = arg!(input, "content");
    if let Some(parent) = path.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return Output::err(format!("cannot create folder {}: {e}", parent.display()));
    }
    match std::fs::write(&path, content) {
        Ok(()) => Output::ok(format!(
            "wrote {} bytes to {}",
            content.len(),
            path.display()
        )),
        Err(e) => Output::err(format!(
            "cannot write {}: {e} (global memory is read-only outside main)",
            path.display()
        )),
    }
}

/// `edit_file`: exact replacement; missing or ambiguous matches are errors that say what to do.
pub fn edit(ctx: &Ctx, input: &Value) -> Output {
    let path = resolve(ctx, arg!(input, "path"));
    let old = arg!(input, "old_string");
    let new = arg!(input, "new_string");
    let all = input["replace_all"].as_bool().unwrap_or(false);
    if old.is_empty() {
        return Output::err("old_string is empty; use write_file to create a file");
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return Output::err(format!("cannot read {}: {e}", path.display())),
    };
    let n = text.matches(old).count();
    if n == 0 {
        return Output::err(format!(
            "old_string not found in {}; read the file and copy the text exactly",
            path.display()
        ));
    }
    if n > 1 && !all {
        return Output::err(format!(
            "old_string appears {n} times in {}; include more surrounding text to make it unique, or set replace_all",
            path.display()
        ));
    }
    let out = if all {
        text.replace(old, new)
    } else {
        text.replacen(old, new, 1)
    };
    match std::fs::write(&path, out) {
        Ok(()) => Output::ok(format!(
            "replaced {} occurrence(s) in {}",
            if all { n } else { 1 },
            path.display()
        )),
        Err(e) => Output::err(format!("cannot write {}: {e}", path.display())),
    }
}

/// `glob`: files under `path` whose relative path matches `pattern`, sorted, at most 1000.
pub fn glob(ctx: &Ctx, input: &Value) -> Output {
    let pattern = arg!(input, "pattern");
    let base = input["path"]
        .as_str()
        .map_or_else(|| ctx.paths.group(), |p| resolve(ctx, p));
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let mut found = Vec::new();
    walk(&base, &base, &mut |rel| {
        let parts: Vec<&str> = rel.split('/').collect();
        if matches_path(&pat, &parts) {
            found.push(rel.to_string());
        }
        found.len() < 1000
    });
    found.sort();
    if found.is_empty() {
        return Output::ok(format!("no files match {pattern} under {}", base.display()));
    }
    Output::ok(found.join("\n"))
}

/// Visit files below `dir` (skipping `.git`), giving paths relative to `base`; stop when `f` says so.
fn walk(base: &Path, dir: &Path, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if e.file_name() == ".git" {
                continue;
            }
            if !walk(base, &p, f) {
                return false;
            }
        } else if let Ok(rel) = p.strip_prefix(base)
            && !f(&rel.to_string_lossy())
        {
            return false;
        }
    }
    true
}

/// Match path segments; `**` matches zero or more segments.
fn matches_path(pat: &[&str], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|i| matches_path(&pat[1..], &path[i..])),
        Some(seg) => {
            !path.is_empty()
                && matches_seg(seg.as_bytes(), path[0].as_bytes())
                && matches_path(&pat[1..], &path[1..])
        }
    }
}

/// Match one segment with `*` and `?`.
fn matches_seg(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => matches_seg(&p[1..], s) || (!s.is_empty() && matches_seg(p, &s[1..])),
        (Some(b'?'), Some(_)) => matches_seg(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => matches_seg(&p[1..], &s[1..]),
        _ => false,
    }
}

/// `grep`: delegates to the system `grep -rnIE`, which every image has.
pub fn grep(ctx: &Ctx, input: &Value) -> Output {
    let pattern = arg!(input, "pattern");
    let path = input["path"]
        .as_str()
        .map_or_else(|| ctx.paths.group(), |p| resolve(ctx, p));
    let mut cmd = Command::new("grep");
    cmd.args(["-rnIE", "--exclude-dir=.git", "-m", "200"]);
    if input["ignore_case"].as_bool().unwrap_or(false) {
        cmd.arg("-i");
    }
    if let Some(inc) = input["include"].as_str() {
        cmd.arg(format!("--include={inc}"));
    }
    cmd.arg("-e")
        .arg(pattern)
        .arg("--")
        .arg(&path)
        .current_dir(ctx.paths.group());
    match cmd.output() {
        Ok(o) if o.status.code() == Some(0) => {
            Output::ok(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Ok(o) if o.status.code() == Some(1) => {
            Output::ok(format!("no matches for {pattern} in {}", path.display()))
        }
        Ok(o) => Output::err(format!(
            "grep failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Output::err(format!("cannot run grep: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_segments_and_double_star() {
        let m = |p: &str, s: &str| {
            let pp: Vec<&str> = p.split('/').collect();
            let ss: Vec<&str> = s.split('/').collect();
            matches_path(&pp, &ss)
        };
        assert!(m("*.md", "a.md"));
        assert!(!m("*.md", "d/a.md"));
        assert!(m("**/*.md", "a.md"));
        assert!(m("**/*.md", "d/e/a.md"));
        assert!(m("d/?.txt", "d/x.txt"));
        assert!(!m("d/?.txt", "d/xy.txt"));
        assert!(m("**", "a/b/c"));
    }
}
