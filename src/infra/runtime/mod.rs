//! Container runtimes: which one to use, and the exact argument vectors claw passes to its CLI.
//!
//! Owns every runtime-specific flag, so swapping docker, podman and Apple `container` means reading
//! this one file. Argument building is pure (no process is started) so each runtime's hardening is
//! tested as a table. It must never build a shell string: callers pass the vectors to `Command`.
//! What a runtime cannot express is returned as a list of gaps for the caller to log, never dropped
//! silently.

mod control;

pub use control::{REMOVE_LIMIT, kill_rm_args, remove, remove_with, wall_clock_args};

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A container runtime claw knows how to drive through its CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Docker,
    Podman,
    AppleContainer,
}

impl RuntimeKind {
    /// The program name to execute for this runtime.
    pub fn program(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Podman => "podman",
            RuntimeKind::AppleContainer => "container",
        }
    }

    /// Parses a `claw.toml` runtime choice; `auto` (or empty) yields `None`, meaning "detect".
    pub fn parse(choice: &str) -> Result<Option<RuntimeKind>, RuntimeError> {
        match choice.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "docker" => Ok(Some(RuntimeKind::Docker)),
            "podman" => Ok(Some(RuntimeKind::Podman)),
            "container" | "apple" | "apple-container" => Ok(Some(RuntimeKind::AppleContainer)),
            other => Err(RuntimeError(format!(
                "runtime `{other}` is unknown: use auto, podman, docker or container (Apple)"
            ))),
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

/// A runtime that answered, with what matters for argument building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub kind: RuntimeKind,
    /// Rootless podman: files written by the container keep the owner's uid only with keep-id.
    pub rootless: bool,
}

/// A runtime problem, worded with what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError(pub String);

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuntimeError {}

/// One bind mount: a host path at a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub readonly: bool,
}

/// Everything that varies between container runs; the hardening itself is not optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `claw-FOLDER-ID`, checked by [`validate_name`].
    pub name: String,
    pub image: String,
    pub mounts: Vec<Mount>,
    /// `uid:gid`, usually from [`container_user`].
    pub user: String,
    /// Memory limit as the runtimes write it, e.g. `512m`.
    pub memory: String,
    /// CPU limit, e.g. `1` or `0.5`.
    pub cpus: String,
    pub pids_limit: u32,
    /// Size of the tmpfs at /tmp, e.g. `64m`.
    pub tmp_size: String,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Passed before the image, verbatim (from config; for runtime-specific needs).
    pub extra_args: Vec<String>,
    /// Passed after the image (the entrypoint's arguments, or a command when testing).
    pub command: Vec<String>,
}

impl ContainerSpec {
    /// A container with the configured image, user and limits: the one constructor for real
    /// runs, check commands and `claw doctor`'s probe, so the probe proves the hardening a run
    /// really gets. Callers add env, workdir and command; `run_args` adds the fixed hardening.
    pub fn configured(
        config: &crate::infra::config::Config,
        name: String,
        mounts: Vec<Mount>,
        extra_args: Vec<String>,
    ) -> ContainerSpec {
        ContainerSpec {
            name,
            image: config.runtime.image.clone(),
            mounts,
            user: current_container_user(),
            memory: config.limits.memory.clone(),
            cpus: config.limits.cpus.to_string(),
            pids_limit: config.limits.pids,
            tmp_size: "256m".into(),
            env: vec![],
            workdir: None,
            extra_args,
            command: vec![],
        }
    }
}

/// The argument vector for `<runtime> run …` and the hardening the runtime could not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub args: Vec<String>,
    /// One line per missing protection, for the run log.
    pub gaps: Vec<String>,
}

/// Builds the full `run` argument vector (without the program name) for a spec. Pure.
pub fn run_args(rt: Runtime, spec: &ContainerSpec) -> RunArgs {
    let mut a: Vec<String> = Vec::new();
    let mut gaps = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["run", "--rm", "-i", "--name", &spec.name]);
    match rt.kind {
        RuntimeKind::Docker | RuntimeKind::Podman => {
            let tmpfs = format!("/tmp:rw,nosuid,nodev,size={},mode=1777", spec.tmp_size);
            let pids = spec.pids_limit.to_string();
            push(&[
                // Images are built here (`claw image build`); a missing one is an error to report,
                // never a reason to reach a registry.
                "--pull=never",
                "--network",
                "none",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--read-only",
                "--tmpfs",
                &tmpfs,
                "--pids-limit",
                &pids,
                "--memory",
                &spec.memory,
                "--cpus",
                &spec.cpus,
                "--user",
                &spec.user,
            ]);
            if rt.kind == RuntimeKind::Podman && rt.rootless {
                push(&["--userns=keep-id"]);
            }
            for m in &spec.mounts {
                let ro = if m.readonly { ":ro" } else { "" };
                push(&["-v", &format!("{}:{}{ro}", m.host.display(), m.container)]);
            }
        }
        RuntimeKind::AppleContainer => {
            // Each Apple container is its own lightweight VM: the VM boundary replaces the
            // namespace flags it lacks, but the limits inside the VM are not expressible.
            push(&[
                "--tmpfs",
                "/tmp",
                "--memory",
                &spec.memory,
                "--cpus",
                &spec.cpus,
                "--user",
                &spec.user,
            ]);
            for m in &spec.mounts {
                let ro = if m.readonly { ",readonly" } else { "" };
                let mount = format!(
                    "type=bind,source={},target={}{ro}",
                    m.host.display(),
                    m.container
                );
                push(&["--mount", &mount]);
            }
            gaps.extend(apple_gaps(spec));
        }
    }
    for (k, v) in &spec.env {
        push(&["-e", &format!("{k}={v}")]);
    }
    if let Some(w) = &spec.workdir {
        push(&["-w", w]);
    }
    a.extend(spec.extra_args.iter().cloned());
    a.push(spec.image.clone());
    a.extend(spec.command.iter().cloned());
    RunArgs { args: a, gaps }
}

/// The protections Apple `container` cannot express for this spec, one readable line each.
fn apple_gaps(spec: &ContainerSpec) -> Vec<String> {
    vec![
        "no `--network none`: the VM is attached to the default network; only the proxy socket is meant to be used".into(),
        "no `--cap-drop ALL`: the agent keeps the default capabilities inside its own VM".into(),
        "no `--security-opt no-new-privileges`: setuid binaries in the image still work inside the VM".into(),
        "no `--read-only`: the root filesystem is writable inside the VM (changes vanish with --rm)".into(),
        format!("no `--pids-limit {}`: process count is bounded only by the VM's memory", spec.pids_limit),
        format!("no tmpfs size: /tmp is not capped at {}", spec.tmp_size),
    ]
}

/// Arguments to stop a container gracefully, waiting `grace_secs` before the runtime kills it.
pub fn stop_args(kind: RuntimeKind, name: &str, grace_secs: u32) -> Vec<String> {
    let _ = kind; // all three spell it the same way
    vec![
        "stop".into(),
        "-t".into(),
        grace_secs.to_string(),
        name.into(),
    ]
}

/// Arguments to kill a container at once.
pub fn kill_args(kind: RuntimeKind, name: &str) -> Vec<String> {
    let _ = kind; // all three spell it the same way
    vec!["kill".into(), name.into()]
}

/// Arguments to remove a container, running or not.
pub fn rm_args(kind: RuntimeKind, name: &str) -> Vec<String> {
    match kind {
        RuntimeKind::AppleContainer => vec!["delete".into(), "--force".into(), name.into()],
        _ => vec!["rm".into(), "-f".into(), name.into()],
    }
}

/// Arguments listing every container (running or not) by name, one per line.
pub fn list_args(kind: RuntimeKind, prefix: &str) -> Vec<String> {
    match kind {
        // With --name the Apple container id is the name.
        RuntimeKind::AppleContainer => vec!["list".into(), "--all".into(), "--quiet".into()],
        _ => vec![
            "ps".into(),
            "-a".into(),
            "--filter".into(),
            format!("name={prefix}"),
            "--format".into(),
            "{{.Names}}".into(),
        ],
    }
}

/// Picks the names starting with `prefix` out of the list command's output.
pub fn parse_list(output: &str, prefix: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix) && validate_name(n).is_ok())
        .map(String::from)
        .collect()
}

/// The container user: the owner's uid:gid so files the agent writes are theirs; 1000:1000 for root.
pub fn container_user(host_uid: u32, host_gid: u32) -> String {
    if host_uid == 0 {
        "1000:1000".into()
    } else {
        format!("{host_uid}:{host_gid}")
    }
}

/// [`container_user`] for the invoking process.
pub fn current_container_user() -> String {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    container_user(uid, gid)
}

/// Builds `claw-FOLDER-ID` after checking both parts.
pub fn container_name(folder: &str, id: &str) -> Result<String, RuntimeError> {
    let name = format!("claw-{folder}-{id}");
    // Checked alone too: a dash in the id would make the name parse as another folder.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(RuntimeError(format!(
            "container name `{name}` is not allowed: the id must be letters and digits"
        )));
    }
    validate_name(&name)?;
    Ok(name)
}

/// Checks a `claw-FOLDER-ID` name: folder of `[a-z0-9_-]`, id of `[A-Za-z0-9]`, at most 128 chars.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let bad = |why: &str| {
        Err(RuntimeError(format!(
            "container name `{name}` is not allowed: {why}"
        )))
    };
    let Some(rest) = name.strip_prefix("claw-") else {
        return bad("it must start with `claw-`");
    };
    let Some((folder, id)) = rest.rsplit_once('-') else {
        return bad("it must be claw-FOLDER-ID");
    };
    if name.len() > 128 {
        return bad("it is longer than 128 characters");
    }
    if folder.is_empty()
        || !folder
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return bad("the folder must be lowercase letters, digits, `-` or `_`");
    }
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return bad("the id must be letters and digits");
    }
    Ok(())
}

/// Splits a valid `claw-FOLDER-ID` name into folder and id.
pub fn parse_name(name: &str) -> Option<(&str, &str)> {
    validate_name(name).ok()?;
    name.strip_prefix("claw-")?.rsplit_once('-')
}

/// Runs `program args…` quietly and reports whether it exited 0, with its stdout.
fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks that one runtime answers, returning it with its rootless flag.
pub fn check(kind: RuntimeKind) -> Result<Runtime, RuntimeError> {
    let answered = match kind {
        RuntimeKind::Podman => probe(
            "podman",
            &["info", "--format", "{{.Host.Security.Rootless}}"],
        ),
        RuntimeKind::Docker => probe("docker", &["info", "--format", "{{.ServerVersion}}"]),
        RuntimeKind::AppleContainer => probe("container", &["system", "status"]),
    };
    match answered {
        Some(out) => Ok(Runtime {
            kind,
            rootless: kind == RuntimeKind::Podman && out.trim() == "true",
        }),
        None => Err(RuntimeError(match kind {
            RuntimeKind::Podman => {
                "podman does not answer (`podman info` failed): install podman, or run bin/setup-runtime".into()
            }
            RuntimeKind::Docker => {
                "docker does not answer (`docker info` failed): start the docker daemon, or choose podman".into()
            }
            RuntimeKind::AppleContainer => {
                "Apple `container` does not answer: install it from github.com/apple/container and run `container system start`".into()
            }
        })),
    }
}

/// Resolves a `claw.toml` choice without running the runtime (for the hot path of every run):
/// a named runtime is taken as given; `auto` picks the first program found on PATH. Rootless
/// podman is inferred from a non-root user. A runtime that then fails to start is reported by the
/// caller with a pointer to `claw doctor`, which uses [`detect`].
pub fn resolve_fast(choice: &str) -> Result<Runtime, RuntimeError> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let rootless_user = unsafe { libc::geteuid() } != 0;
    let make = |kind: RuntimeKind| Runtime {
        kind,
        rootless: kind == RuntimeKind::Podman && rootless_user,
    };
    if let Some(kind) = RuntimeKind::parse(choice)? {
        return Ok(make(kind));
    }
    let mut order = vec![RuntimeKind::Podman, RuntimeKind::Docker];
    if cfg!(target_os = "macos") {
        order.insert(0, RuntimeKind::AppleContainer);
    }
    for kind in order {
        if on_path(kind.program()) {
            // docker's client is often installed without a daemon: only then is a probe worth it.
            if kind == RuntimeKind::Docker {
                return check(kind);
            }
            return Ok(make(kind));
        }
    }
    detect(choice)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Resolves a `claw.toml` choice: a named runtime must answer; `auto` tries podman, docker, then
/// Apple `container` on macOS.
pub fn detect(choice: &str) -> Result<Runtime, RuntimeError> {
    if let Some(kind) = RuntimeKind::parse(choice)? {
        return check(kind);
    }
    let mut order = vec![RuntimeKind::Podman, RuntimeKind::Docker];
    if cfg!(target_os = "macos") {
        order.push(RuntimeKind::AppleContainer);
    }
    order.into_iter().find_map(|k| check(k).ok()).ok_or_else(|| {
        RuntimeError(if cfg!(target_os = "macos") {
            "no container runtime answers: install Apple `container`, Podman or Docker Desktop and start it".into()
        } else {
            "no container runtime answers: install podman (Debian/Ubuntu: run bin/setup-runtime as root) or start docker".into()
        })
    })
}

/// Why a run could not start, in words for a chat, and what the owner can do about it.
pub fn start_failure(error: &str) -> (&'static str, &'static str) {
    let e = error.to_ascii_lowercase();
    if e.contains("image")
        && (e.contains("not known")
            || e.contains("no such")
            || e.contains("not found")
            || e.contains("missing"))
    {
        (
            "the assistant's container image is missing",
            "The owner can rebuild it with `claw image build`.",
        )
    } else if e.contains("runtime")
        || e.contains("cannot start docker")
        || e.contains("cannot start podman")
        || e.contains("cannot start container")
        || e.contains("could not start the container")
    {
        (
            "the container runtime is not working",
            "The owner can run `claw doctor` to see why.",
        )
    } else if e.contains("proxy") {
        (
            "the model proxy could not be started",
            "The owner can look at `claw logs` for this group.",
        )
    } else {
        (
            "the assistant could not be started",
            "The owner can look at `claw logs` for this group and run `claw doctor`.",
        )
    }
}

#[cfg(test)]
mod tests;
