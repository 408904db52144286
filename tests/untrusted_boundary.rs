//! The host touches agent-writable trees (`groups/F`, `sessions/F`, `ipc/F`, `groups/global`) only
//! through `src/infra/untrusted/`: descriptors, `O_NOFOLLOW`, `O_EXCL`, bounded reads. This test reads
//! the crate's host code and fails, naming file and line, when a file that refers to those trees
//! also calls a path-based file-system API, which would follow whatever link an agent planted.
//!
//! `src/infra/untrusted/` is the one module allowed to; `src/agent/` and `src/bin/` run inside the
//! container, where those trees are the agent's own.

use std::path::{Path, PathBuf};

/// Names that lead to an agent-writable tree.
const TREE_REFS: &[&str] = &[
    "group_dir(",
    "session_dir(",
    "ipc_dir(",
    "global_dir(",
    ".ipc()",
    "ipc_errors(",
    ".groups()",
    ".sessions()",
    "FixedPaths",
    "join(\"groups\")",
    "join(\"sessions\")",
    "join(\"ipc\")",
];

/// Path-based file-system calls (they follow links and open whatever a name points at).
const FS_CALLS: &[&str] = &[
    "std::fs::",
    "fs::",
    "File::open",
    "File::create",
    "OpenOptions",
    "symlink_metadata",
    "read_dir",
    "lchown",
    ".exists()",
    ".is_file()",
    ".is_dir()",
    "canonicalize",
];

/// Code outside these folders is host code.
const NOT_HOST: &[&str] = &["src/infra/untrusted/", "src/agent/", "src/bin/"];

/// Lines that may call the file system although their file names a tree, each with the reason.
/// An entry matches a line whose trimmed text is exactly the entry's (an empty entry matches the
/// whole file). An entry that matches nothing fails the test, so this list can only shrink.
const ALLOWED: &[(&str, &str, &str)] = &[
    // paths.rs only builds paths; these two calls are on the home root and on claw.toml/claw.db.
    (
        "src/infra/paths.rs",
        "let path = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());",
        "the home's tag hashes the home root, which the owner chose",
    ),
    // mounts/ names the fixed trees only to put them in `-v` flags; its own file calls are on
    // the owner's allowlist file and on extra-mount paths the owner chose. A path through the
    // home is refused before it is resolved (see `check_extra`), so no agent-planted link is
    // ever followed to its end.
    (
        "src/rules/mounts/mod.rs",
        "let text = match std::fs::read_to_string(path) {",
        "the owner's mount allowlist file, outside the home",
    ),
    (
        "src/rules/mounts/mod.rs",
        "let p = p.canonicalize().unwrap_or_else(|_| p.clone());",
        "the claw home and the allowlist path, both host-owned",
    ),
    (
        "src/rules/mounts/mod.rs",
        ".find(|a| a.canonicalize().is_ok_and(|r| r.starts_with(&p)))",
        "resolves ancestors of an owner-chosen path to refuse any that passes through the home",
    ),
    (
        "src/rules/mounts/mod.rs",
        ".canonicalize()",
        "resolves an owner-chosen extra-mount path, after the check above",
    ),
    (
        "src/rules/mounts/mod.rs",
        "let rp = expand(&r.path, &host.user_home).canonicalize().ok()?;",
        "an allowed root from the owner's allowlist",
    ),
    (
        "src/rules/mounts/tests.rs",
        "",
        "unit tests building a fake owner home in a temp dir",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code of a line without a whole-line comment (doc comments name these things freely).
fn code(line: &str) -> Option<&str> {
    let t = line.trim_start();
    (!t.starts_with("//")).then_some(line)
}

/// The host code of a file: everything before its unit-test module (`#[cfg(test)]`), whose
/// fixtures build trees in temp dirs and never run in a claw process.
fn host_part(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// `(line number, line)` of each path-based fs call in `text`, if the file refers to a tree.
fn violations(text: &str) -> Vec<(usize, &str)> {
    let text = host_part(text);
    let refers = text
        .lines()
        .filter_map(code)
        .any(|l| TREE_REFS.iter().any(|r| l.contains(r)));
    if !refers {
        return vec![];
    }
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| code(l).map(|c| (i + 1, c)))
        .filter(|(_, l)| FS_CALLS.iter().any(|f| l.contains(f)))
        .collect()
}

#[test]
fn the_scan_flags_what_it_should() {
    let bad = "fn f(h: &Home) {\n    // std::fs::write in a comment is fine\n    std::fs::write(h.group_dir(\"x\").join(\"AGENTS.md\"), \"\");\n}\n";
    assert_eq!(violations(bad).len(), 1, "{:?}", violations(bad));
    assert_eq!(violations(bad)[0].0, 3);
    let other_file = "fn g() { std::fs::write(\"/tmp/x\", \"\"); }";
    assert!(violations(other_file).is_empty());
    let printing = "println!(\"{}\", home.group_dir(\"x\").display());";
    assert!(violations(printing).is_empty());
}

#[test]
fn no_host_code_touches_agent_writable_trees_by_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut used = vec![false; ALLOWED.len()];
    let mut referring = 0;
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if NOT_HOST.iter().any(|p| rel.starts_with(p)) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        if text
            .lines()
            .filter_map(code)
            .any(|l| TREE_REFS.iter().any(|r| l.contains(r)))
        {
            referring += 1;
        }
        for (n, line) in violations(&text) {
            let allowed = ALLOWED.iter().position(|(file, exact, _)| {
                *file == rel && (exact.is_empty() || line.trim() == *exact)
            });
            match allowed {
                Some(i) => used[i] = true,
                None => problems.push(format!("{rel}:{n}: {}", line.trim())),
            }
        }
    }
    assert!(
        referring >= 3,
        "only {referring} files refer to the trees: is the scan reading src/?"
    );
    assert!(
        problems.is_empty(),
        "host code refers to an agent-writable tree and calls a path-based fs API; go through \
         crate::infra::untrusted (Dir, Parents, create_group, chown_group, …) instead:\n{}",
        problems.join("\n")
    );
    let stale: Vec<String> = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|((f, n, why), _)| format!("{f}: `{n}` ({why})"))
        .collect();
    assert!(
        stale.is_empty(),
        "allow-list entries that match nothing any more; remove them:\n{}",
        stale.join("\n")
    );
}
