//! The mount plan of a run (docs/ARCHITECTURE.md, "What a container sees"): which host paths a group's container sees, and how.
//!
//! Every mount decision lives here so one file can be audited: the fixed mounts for main and other
//! groups, and the extra mounts a group asks for, each checked against the owner's allowlist file
//! after following symlinks. It never mounts the claw home, `claw.db`, `secrets.env`, `claw.toml`,
//! the allowlist or another group's folders, and it never fails a run: a mount it refuses is
//! returned with the reason so the caller can log and audit it and carry on without it.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

pub use crate::infra::runtime::Mount;

/// Path components refused in any extra mount, whatever the allowlist file says.
pub const DEFAULT_BLOCKED: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
];

/// Where extra mounts appear inside the container.
pub const EXTRA_DIR: &str = "/workspace/extra";

/// Host paths of one group's fixed mounts; the caller derives them from the home layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedPaths {
    /// `groups/FOLDER`
    pub group: PathBuf,
    /// `groups/global`
    pub global: PathBuf,
    /// `sessions/FOLDER`
    pub session: PathBuf,
    /// `ipc/FOLDER`
    pub ipc: PathBuf,
    /// The skills folder.
    pub skills: PathBuf,
    /// The per-run folder holding the proxy socket.
    pub run: PathBuf,
}

impl FixedPaths {
    /// The layout in docs/ARCHITECTURE.md ("What a container sees") under a claw home for one folder.
    pub fn for_home(home: &Path, folder: &str, skills: &Path, run_dir: &Path) -> FixedPaths {
        FixedPaths {
            group: home.join("groups").join(folder),
            global: home.join("groups").join("global"),
            session: home.join("sessions").join(folder),
            ipc: home.join("ipc").join(folder),
            skills: skills.to_path_buf(),
            run: run_dir.to_path_buf(),
        }
    }
}

/// The fixed mounts: only `/workspace/global` differs, writable for main alone.
pub fn fixed_mounts(p: &FixedPaths, is_main: bool) -> Vec<Mount> {
    let m = |host: &Path, container: &str, readonly: bool| Mount {
        host: host.to_path_buf(),
        container: container.into(),
        readonly,
    };
    vec![
        m(&p.group, "/workspace/group", false),
        m(&p.global, "/workspace/global", !is_main),
        m(&p.session, "/home/agent/.claw", false),
        m(&p.ipc, "/workspace/ipc", false),
        m(&p.skills, "/workspace/skills", true),
        m(&p.run, "/run/claw", true),
    ]
}

/// The owner's mount allowlist file (`~/.config/claw/mount-allowlist.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allowlist {
    #[serde(default)]
    pub allowed_roots: Vec<AllowedRoot>,
    /// Added to [`DEFAULT_BLOCKED`], never replacing it.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
    #[serde(default = "yes")]
    pub non_main_read_only: bool,
}

fn yes() -> bool {
    true
}

/// A folder under which extra mounts may be made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoot {
    /// May start with `~/`.
    pub path: String,
    #[serde(default)]
    pub allow_read_write: bool,
    #[serde(default)]
    pub description: String,
}

/// An extra mount a group's config asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraMountRequest {
    /// Host path; may start with `~/`.
    pub host_path: String,
    /// Name under /workspace/extra; defaults to the host path's last component.
    #[serde(default, alias = "containerPath")]
    pub name: Option<String>,
    /// Asked-for access; read-only unless false and allowed.
    #[serde(default = "yes")]
    pub readonly: bool,
}

/// A mount left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub host_path: String,
    pub name: String,
    pub reason: String,
}

/// The mounts to pass to the runtime and the extra mounts refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountPlan {
    pub mounts: Vec<Mount>,
    pub refusals: Vec<Refusal>,
}

/// What the extra-mount checks need to know about this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostContext {
    /// The owner's home directory, for `~/` expansion.
    pub user_home: PathBuf,
    /// Paths an extra mount may neither be inside of nor contain: the claw home and the allowlist.
    pub protected: Vec<PathBuf>,
    /// Why the allowlist file could not be used, when it exists but is unreadable or malformed
    /// (refusals then say that, not that there is no file).
    pub allowlist_error: Option<String>,
}

/// The allowlist file location: `$CLAW_MOUNT_ALLOWLIST`, else `~/.config/claw/mount-allowlist.json`.
pub fn allowlist_path(user_home: &Path) -> PathBuf {
    match std::env::var_os("CLAW_MOUNT_ALLOWLIST") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => user_home.join(".config/claw/mount-allowlist.json"),
    }
}

/// Reads the allowlist; a missing file is `Ok(None)` (no extra mounts), a malformed one an error.
pub fn load_allowlist(path: &Path) -> Result<Option<Allowlist>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read mount allowlist {}: {e}",
                path.display()
            ));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "mount allowlist {} is malformed: {e}; fix it or remove it (no extra mounts are made meanwhile)",
            path.display()
        )
    })
}

/// The whole plan: fixed mounts, then each extra mount that passes every check.
pub fn plan(
    fixed: &FixedPaths,
    is_main: bool,
    extras: &[ExtraMountRequest],
    allowlist: Option<&Allowlist>,
    host: &HostContext,
) -> MountPlan {
    let mut out = MountPlan {
        mounts: fixed_mounts(fixed, is_main),
        ..MountPlan::default()
    };
    let mut names = HashSet::new();
    for req in extras {
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| default_name(&req.host_path));
        match check_extra(req, &name, is_main, allowlist, host) {
            Ok(_) if !names.insert(name.clone()) => out.refusals.push(Refusal {
                host_path: req.host_path.clone(),
                name,
                reason: "another extra mount already uses this name".into(),
            }),
            Ok(m) => out.mounts.push(m),
            Err(reason) => out.refusals.push(Refusal {
                host_path: req.host_path.clone(),
                name,
                reason,
            }),
        }
    }
    out
}

fn default_name(host_path: &str) -> String {
    Path::new(host_path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks a name for /workspace/extra: one plain component that cannot escape or confuse `-v`.
pub fn validate_extra_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the container name is empty".into());
    }
    if name.starts_with('/') {
        return Err(format!("container name `{name}` starts with `/`"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(format!("container name `{name}` contains `..`"));
    }
    // `:` splits docker/podman -v specs and `,` Apple --mount specs.
    if let Some(c) = name
        .chars()
        .find(|c| *c == ':' || *c == ',' || c.is_control())
    {
        return Err(format!("container name `{name}` contains {c:?}"));
    }
    Ok(())
}

/// `~` and `~/x` relative to the owner's home; anything else unchanged.
fn expand(p: &str, user_home: &Path) -> PathBuf {
    if p == "~" {
        user_home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        user_home.join(rest)
    } else {
        PathBuf::from(p)
    }
}

/// The blocked pattern found in any component of `path`, compared case-insensitively.
fn blocked_component(path: &Path, patterns: &[String]) -> Option<(String, String)> {
    path.components().find_map(|c| {
        let Component::Normal(s) = c else { return None };
        let comp = s.to_string_lossy().to_lowercase();
        patterns
            .iter()
            .find(|p| !p.is_empty() && comp.contains(&p.to_lowercase()))
            .map(|p| (comp.clone(), p.clone()))
    })
}

fn check_extra(
    req: &ExtraMountRequest,
    name: &str,
    is_main: bool,
    allowlist: Option<&Allowlist>,
    host: &HostContext,
) -> Result<Mount, String> {
    validate_extra_name(name)?;
    let Some(allow) = allowlist else {
        return Err(match &host.allowlist_error {
            Some(e) => format!("{e}; no extra mounts are allowed until it is fixed"),
            None => "no mount allowlist file, so no extra mounts are allowed".into(),
        });
    };
    if req.host_path.contains([':', ',']) || req.host_path.chars().any(char::is_control) {
        return Err("the host path contains `:`, `,` or a control character".into());
    }
    let mut patterns: Vec<String> = DEFAULT_BLOCKED.iter().map(|s| s.to_string()).collect();
    patterns.extend(allow.blocked_patterns.iter().cloned());

    let asked = expand(&req.host_path, &host.user_home);
    if !asked.is_absolute() {
        return Err("the host path is not absolute".into());
    }
    // Checked before and after resolving: a blocked name in the request is refused even if it
    // resolves elsewhere, and a symlink cannot smuggle a blocked target in.
    if let Some((comp, pat)) = blocked_component(&asked, &patterns) {
        return Err(format!(
            "path component `{comp}` matches blocked pattern `{pat}`"
        ));
    }
    // A path that passes through claw's home is refused before it is resolved to its end: the
    // group folders are in the home, so an agent could have planted the link it resolves through.
    // (Each ancestor is only resolved, with readlink/lstat; nothing in it is opened.)
    for p in &host.protected {
        let p = p.canonicalize().unwrap_or_else(|_| p.clone());
        if let Some(a) = asked
            .ancestors()
            .find(|a| a.canonicalize().is_ok_and(|r| r.starts_with(&p)))
        {
            return Err(format!(
                "passes through {}, inside claw's own files at {}",
                a.display(),
                p.display()
            ));
        }
    }
    let resolved = asked
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", asked.display()))?;
    if let Some((comp, pat)) = blocked_component(&resolved, &patterns) {
        return Err(format!(
            "resolves to {}, whose component `{comp}` matches blocked pattern `{pat}`",
            resolved.display()
        ));
    }
    if resolved.to_string_lossy().contains([':', ',']) {
        return Err(format!(
            "resolves to {}, which contains `:` or `,`",
            resolved.display()
        ));
    }
    for p in &host.protected {
        let p = p.canonicalize().unwrap_or_else(|_| p.clone());
        if resolved.starts_with(&p) || p.starts_with(&resolved) {
            return Err(format!(
                "resolves to {}, which overlaps claw's own files at {}",
                resolved.display(),
                p.display()
            ));
        }
    }
    let root = allow
        .allowed_roots
        .iter()
        .filter_map(|r| {
            let rp = expand(&r.path, &host.user_home).canonicalize().ok()?;
            resolved.starts_with(&rp).then_some(r)
        })
        // The most permissive matching root wins, so nesting a read-only root does not surprise.
        .max_by_key(|r| r.allow_read_write)
        .ok_or_else(|| {
            format!(
                "resolves to {}, which is under no allowed root",
                resolved.display()
            )
        })?;
    let may_write =
        root.allow_read_write && (is_main || !allow.non_main_read_only) && !req.readonly;
    Ok(Mount {
        host: resolved,
        container: format!("{EXTRA_DIR}/{name}"),
        readonly: !may_write,
    })
}

#[cfg(test)]
mod tests;
