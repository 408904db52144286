//! `claw doctor`: every check of an install, each problem with the exact command that fixes it.
//!
//! Owns the checks and their wording, and the one probe container that proves the sandbox on
//! this machine. It reads the home but never repairs it: a doctor that silently fixes things
//! hides the cause. It never prints a secret's value, only names. The database is opened without
//! migrating it, so a broken or newer file is reported untouched.

use anyhow::Result;
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::paths::Home;
use crate::runtime::{self, ContainerSpec, Mount, Runtime, RuntimeKind};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, but something is worth doing.
    Warn,
    /// Broken: claw will not work (or not safely) until fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short stable name (`runtime`, `image`, `secrets`, …) for scripts.
    pub name: String,
    pub level: Level,
    pub message: String,
    /// The command (or edit) that fixes it, when there is a problem.
    pub fix: Option<String>,
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub home: PathBuf,
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.level != Level::Fail)
    }
    fn push(&mut self, name: &str, level: Level, message: String, fix: Option<String>) {
        self.checks.push(Check {
            name: name.into(),
            level,
            message,
            fix,
        });
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run the probe container (off with `--no-probe`).
    pub probe: bool,
    /// The user's home directory (for the allowlist and the unit folder).
    pub user_home: PathBuf,
}

/// Run every check against a home.
pub fn doctor(home: &Home, opts: &Options) -> Report {
    let mut r = Report {
        home: home.root.clone(),
        checks: vec![],
    };
    let root = home.root.display().to_string();
    if !home.root.is_dir() {
        r.push(
            "home",
            Level::Fail,
            format!("no claw home at {root}"),
            Some("claw init".into()),
        );
    } else {
        r.push("home", Level::Ok, format!("home {root}"), None);
    }
    let config = check_config(home, &mut r);
    let cfg = config.clone().unwrap_or_default();
    check_secrets(home, &cfg, &mut r);
    check_allowlist(&opts.user_home, &mut r);
    check_database(home, &mut r);
    check_timers(&opts.user_home, &mut r);
    check_extra_args(&cfg, &mut r);
    let rt = check_runtime(&cfg, &mut r);
    if let Some(rt) = rt {
        let image_ok = check_image(rt, &cfg, &mut r);
        check_strays(home, rt, &mut r);
        if opts.probe && image_ok {
            check_probe(home, rt, &cfg, &mut r);
        }
    }
    r
}

fn check_config(home: &Home, r: &mut Report) -> Option<Config> {
    let path = home.config();
    if !path.is_file() {
        r.push(
            "config",
            Level::Fail,
            format!("{} is missing", path.display()),
            Some("claw init".into()),
        );
        return None;
    }
    match Config::load(&path) {
        Ok(c) => {
            r.push(
                "config",
                Level::Ok,
                format!("{} parses", path.display()),
                None,
            );
            Some(c)
        }
        Err(e) => {
            r.push(
                "config",
                Level::Fail,
                format!("{e:#} (the rest of these checks use the defaults)"),
                Some(format!(
                    "edit {p} at the line named above, or start over: mv {p} {p}.broken && claw init",
                    p = path.display()
                )),
            );
            None
        }
    }
}

fn check_secrets(home: &Home, cfg: &Config, r: &mut Report) {
    let path = home.secrets();
    let p = path.display();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            r.push(
                "secrets",
                Level::Fail,
                format!("{p} is missing"),
                Some("claw init (it creates the file with mode 0600)".into()),
            );
            return;
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        r.push(
            "secrets",
            Level::Fail,
            format!("{p} has mode {mode:04o}: other users can read your keys, and claw refuses to use it"),
            Some(format!("chmod 600 {p}")),
        );
    } else {
        r.push("secrets", Level::Ok, format!("{p} mode {mode:04o}"), None);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let secrets = crate::secrets::Secrets::parse(&text);
    let provider = &cfg.model.provider;
    let pc = if provider == "openai" {
        &cfg.providers.openai
    } else {
        &cfg.providers.anthropic
    };
    if secrets.get(&pc.key_env).is_some() {
        r.push(
            "provider-key",
            Level::Ok,
            format!("{} is set for provider {provider}", pc.key_env),
            None,
        );
    } else if is_loopback_url(&pc.base_url) {
        r.push(
            "provider-key",
            Level::Warn,
            format!(
                "{} is not set; fine if the local endpoint {} needs no key",
                pc.key_env, pc.base_url
            ),
            None,
        );
    } else {
        r.push(
            "provider-key",
            Level::Fail,
            format!(
                "{} is not set in {p}: provider {provider} will refuse every request",
                pc.key_env
            ),
            Some(format!("echo '{}=<your key>' >> {p}", pc.key_env)),
        );
    }
}

fn is_loopback_url(u: &str) -> bool {
    let rest = u.split("://").nth(1).unwrap_or(u);
    ["localhost", "127.", "[::1]"]
        .iter()
        .any(|h| rest.starts_with(h))
}

fn check_allowlist(user_home: &Path, r: &mut Report) {
    let path = crate::mounts::allowlist_path(user_home);
    match crate::mounts::load_allowlist(&path) {
        Ok(Some(_)) => r.push(
            "allowlist",
            Level::Ok,
            format!("{} parses", path.display()),
            None,
        ),
        Ok(None) => r.push(
            "allowlist",
            Level::Ok,
            format!("no {} (no extra mounts allowed)", path.display()),
            None,
        ),
        Err(e) => r.push(
            "allowlist",
            Level::Fail,
            e,
            Some(format!(
                "fix the JSON in {p} (see docs/SECURITY.md, mount rules), or remove it: rm {p}",
                p = path.display()
            )),
        ),
    }
}

fn check_database(home: &Home, r: &mut Report) {
    let path = home.db();
    let p = path.display();
    if !path.is_file() {
        r.push(
            "database",
            Level::Fail,
            format!("{p} is missing"),
            Some("claw init".into()),
        );
        return;
    }
    let broken_fix = format!(
        "restore the latest backup (docs/OPERATIONS.md), or keep it aside and start fresh: mv {p} {p}.broken && claw init"
    );
    let conn = match rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) {
        Ok(c) => c,
        Err(e) => {
            r.push(
                "database",
                Level::Fail,
                format!("cannot open {p}: {e}"),
                Some(broken_fix),
            );
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(10));
    let integrity: Result<Vec<String>, _> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect());
    match integrity {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            r.push(
                "database",
                Level::Fail,
                format!("{p} fails its integrity check: {}", lines.join("; ")),
                Some(broken_fix),
            );
            return;
        }
        Err(e) => {
            r.push(
                "database",
                Level::Fail,
                format!("{p} is not a usable database: {e}"),
                Some(broken_fix),
            );
            return;
        }
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap_or(-1);
    let known = crate::store::SCHEMA_VERSION;
    if version > known {
        r.push(
            "database",
            Level::Fail,
            format!("{p} has schema {version}, newer than this claw ({known})"),
            Some("install the newer claw that wrote it (git pull && bin/setup)".into()),
        );
    } else if version < known {
        r.push(
            "database",
            Level::Warn,
            format!("{p} has schema {version}; this claw migrates it to {known} on its next write"),
            Some(
                "claw status (any command migrates it; back up first, see docs/OPERATIONS.md)"
                    .into(),
            ),
        );
    } else {
        r.push(
            "database",
            Level::Ok,
            format!("{p} integrity ok, schema {version}"),
            None,
        );
    }
}

fn check_timers(user_home: &Path, r: &mut Report) {
    let platform = crate::service::Platform::native();
    let st = crate::service::status(platform, user_home);
    let tick = st.units.first();
    match tick {
        Some(u) if !u.installed => r.push(
            "timers",
            Level::Warn,
            format!(
                "no claw timers in {} (nothing runs by itself)",
                st.unit_dir.display()
            ),
            Some("claw service install".into()),
        ),
        Some(u) if !st.manager_available => r.push(
            "timers",
            Level::Warn,
            format!(
                "{} is installed but its state cannot be read here ({})",
                u.unit, u.detail
            ),
            None,
        ),
        Some(u) if u.state == "active" || u.state == "running" || u.state == "not running" => r
            .push(
                "timers",
                Level::Ok,
                format!("{} {} ({})", u.unit, u.state, u.detail),
                None,
            ),
        Some(u) => r.push(
            "timers",
            Level::Warn,
            format!("{} is installed but {} ({})", u.unit, u.state, u.detail),
            Some(match platform {
                crate::service::Platform::Systemd => {
                    "systemctl --user enable --now claw-tick.timer".into()
                }
                crate::service::Platform::Launchd => "claw service install".into(),
            }),
        ),
        None => {}
    }
}

/// The `runtime.extra_args` that would weaken the sandbox of every run. Pure.
pub fn weakening_args(args: &[String]) -> Vec<String> {
    let mut bad = vec![];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a, None),
        };
        let takes_value = matches!(
            flag,
            "--network"
                | "--net"
                | "--cap-add"
                | "-v"
                | "--volume"
                | "--mount"
                | "--security-opt"
                | "--pid"
                | "--ipc"
                | "--userns"
                | "--uts"
                | "--device"
                | "--user"
                | "-u"
        );
        let value = if takes_value && inline.is_none() {
            i += 1;
            args.get(i).cloned()
        } else {
            inline
        };
        let v = value.clone().unwrap_or_default();
        let weak = match flag {
            "--privileged" => true,
            "--network" | "--net" => v != "none",
            "--cap-add" | "-v" | "--volume" | "--mount" | "--device" => true,
            "--security-opt" => {
                v.contains("unconfined")
                    || v.contains("no-new-privileges=false")
                    || v.contains("label=disable")
            }
            "--pid" | "--ipc" | "--uts" | "--userns" => v == "host",
            "--user" | "-u" => v == "0" || v.starts_with("0:") || v == "root",
            _ => false,
        };
        if weak {
            bad.push(match value {
                Some(v) => format!("{flag} {v}"),
                None => flag.to_string(),
            });
        }
        i += 1;
    }
    bad
}

fn check_extra_args(cfg: &Config, r: &mut Report) {
    let bad = weakening_args(&cfg.runtime.extra_args);
    if !bad.is_empty() {
        r.push(
            "extra-args",
            Level::Fail,
            format!(
                "runtime.extra_args in claw.toml weaken every container: {}",
                bad.join(", ")
            ),
            Some("remove them from runtime.extra_args in claw.toml (extra mounts go through `claw group set G --mount` and the allowlist; egress through `--egress`)".into()),
        );
    }
}

fn check_runtime(cfg: &Config, r: &mut Report) -> Option<Runtime> {
    match runtime::detect(&cfg.runtime.kind) {
        Ok(rt) => {
            r.push(
                "runtime",
                Level::Ok,
                format!(
                    "{}{} answers",
                    rt.kind.program(),
                    if rt.rootless { " (rootless)" } else { "" }
                ),
                None,
            );
            Some(rt)
        }
        Err(e) => {
            r.push(
                "runtime",
                Level::Fail,
                e.0,
                Some("bin/setup-runtime (as root on Debian/Ubuntu; see docs/RUNTIMES.md)".into()),
            );
            None
        }
    }
}

fn check_image(rt: Runtime, cfg: &Config, r: &mut Report) -> bool {
    let tag = &cfg.runtime.image;
    let kind = rt.kind;
    if !crate::image::image_exists(kind, tag) {
        r.push(
            "image",
            Level::Fail,
            format!("image {tag} is missing in {}", kind.program()),
            Some(format!("claw image build --tag {tag}")),
        );
        return false;
    }
    let created = crate::image::image_created_at(kind, tag);
    let agent = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("claw-agent"))
        .filter(|p| p.is_file());
    let agent_time = agent
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
        .map(chrono::DateTime::<chrono::Utc>::from);
    match (created, agent_time) {
        (Some(img), Some(bin)) if bin > img + chrono::Duration::seconds(5) => r.push(
            "image",
            Level::Warn,
            format!(
                "image {tag} (built {}) is older than {} (modified {}): agents run the old code",
                img.format("%Y-%m-%d %H:%M"),
                agent
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                bin.format("%Y-%m-%d %H:%M")
            ),
            Some(format!("claw image build --tag {tag}")),
        ),
        (Some(img), _) => r.push(
            "image",
            Level::Ok,
            format!("image {tag} built {}", img.format("%Y-%m-%d %H:%M UTC")),
            None,
        ),
        (None, _) => r.push("image", Level::Ok, format!("image {tag} present"), None),
    }
    true
}

/// Containers named for this home that no live run accounts for.
pub fn stray_containers(home: &Home, rt: Runtime) -> Vec<String> {
    let kind = rt.kind;
    let out = Command::new(kind.program())
        .args(runtime::list_args(kind, "claw-"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return vec![] };
    let tag = home.tag();
    let store = crate::store::Store::open(home).ok();
    runtime::parse_list(&String::from_utf8_lossy(&out.stdout), "claw-")
        .into_iter()
        .filter(|name| {
            let ours = runtime::parse_name(name)
                .and_then(|(_, id)| id.rsplit_once('x'))
                .is_some_and(|(_, t)| t == tag);
            if !ours {
                return false;
            }
            // A container of a run that is still running with a live run-group is not a stray.
            let live = crate::run_group::run_id_of(home, name).and_then(|id| {
                let run = crate::store::runs::get(&store.as_ref()?.conn, id).ok()??;
                Some(
                    run.status == "running"
                        && run
                            .pid
                            .is_some_and(|p| crate::dispatch::pid_alive(p as i32)),
                )
            });
            live != Some(true)
        })
        .collect()
}

fn check_strays(home: &Home, rt: Runtime, r: &mut Report) {
    let strays = stray_containers(home, rt);
    if strays.is_empty() {
        r.push(
            "containers",
            Level::Ok,
            "no stray claw containers of this home".into(),
            None,
        );
        return;
    }
    let p = rt.kind.program();
    let rm: Vec<String> = strays
        .iter()
        .map(|n| runtime::rm_args(rt.kind, n).join(" "))
        .collect();
    r.push(
        "containers",
        Level::Fail,
        format!(
            "{} stray container(s) of this home with no live run: {}",
            strays.len(),
            strays.join(", ")
        ),
        Some(
            rm.iter()
                .map(|a| format!("{p} {a}"))
                .collect::<Vec<_>>()
                .join(" && "),
        ),
    );
}

/// The probe's shell script: prints `key=value` lines the host checks.
const PROBE_SCRIPT: &str = r#"
echo "uid=$(id -u)"
echo "routes=$(tail -n +2 /proc/net/route 2>/dev/null | wc -l)"
echo "ifaces=$(ls /sys/class/net 2>/dev/null | tr '\n' ' ')"
if timeout 3 bash -c 'exec 3<>/dev/tcp/1.1.1.1/443' 2>/dev/null; then echo connect=ok; else echo connect=refused; fi
if (echo x > /probe/ro/written) 2>/dev/null; then echo ro_mount=writable; else echo ro_mount=readonly; fi
if (echo x > /probe-rootfs) 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi
if [ "$(cat /probe/ro/marker 2>/dev/null)" = claw-probe ]; then echo mount=visible; else echo mount=missing; fi
"#;

fn check_probe(home: &Home, rt: Runtime, cfg: &Config, r: &mut Report) {
    match run_probe(home, rt, cfg) {
        Ok(facts) => {
            let get = |k: &str| {
                facts
                    .lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            };
            let mut bad = vec![];
            if get("routes") != "0" || get("connect") != "refused" {
                bad.push(format!(
                    "the container has a network (routes {}, outbound connect {})",
                    get("routes"),
                    get("connect")
                ));
            }
            if get("ro_mount") != "readonly" {
                bad.push("a read-only mount was writable".into());
            }
            if get("rootfs") != "readonly" {
                bad.push("the root filesystem was writable".into());
            }
            if get("mount") != "visible" {
                bad.push("the probe's mount was not visible".into());
            }
            if get("uid") == "0" {
                bad.push("the agent ran as root".into());
            }
            if bad.is_empty() {
                r.push(
                    "probe",
                    Level::Ok,
                    format!(
                        "probe container: no network (interfaces: {}), read-only mount and root filesystem hold, uid {}",
                        get("ifaces"),
                        get("uid")
                    ),
                    None,
                );
            } else {
                let gaps = runtime::run_args(rt, &probe_spec(home, cfg, Path::new("/x"), "x")).gaps;
                r.push(
                    "probe",
                    if rt.kind == RuntimeKind::AppleContainer { Level::Warn } else { Level::Fail },
                    format!("the sandbox does not hold: {}{}", bad.join("; "), if gaps.is_empty() { String::new() } else { format!(" (runtime gaps: {})", gaps.join("; ")) }),
                    Some("use podman or docker (docs/RUNTIMES.md), and check runtime.extra_args in claw.toml".into()),
                );
            }
        }
        Err(out) => {
            let (why, mut fix) = explain_runtime_failure(&out);
            if !cfg.runtime.extra_args.is_empty() {
                fix.push_str(&format!(
                    "; also check runtime.extra_args in claw.toml, passed to every run: {}",
                    cfg.runtime.extra_args.join(" ")
                ));
            }
            r.push(
                "probe",
                Level::Fail,
                format!("the probe container did not run: {why}"),
                Some(fix),
            );
        }
    }
}

/// Names this machine's known runtime problems in a failed run's output, with their fix. Pure.
pub fn explain_runtime_failure(output: &str) -> (String, String) {
    let o = output.to_lowercase();
    let last = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if o.contains("cgroups in hybrid mode not supported") {
        (
            "crun cannot run on this host's hybrid cgroups (cgroup v1 with a cgroup2 mount)".into(),
            "sudo bin/setup-runtime (installs runc and sets runtime = \"runc\" under [engine] in /etc/containers/containers.conf)".into(),
        )
    } else if o.contains("rlimit") {
        (
            "podman's default ulimits exceed this host's hard limits (setrlimit not permitted)".into(),
            "sudo bin/setup-runtime (sets default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"] under [containers] in containers.conf)".into(),
        )
    } else if o.contains("timed out") {
        (
            last.to_string(),
            "check `podman ps` / `docker ps` for a hung container and the runtime's own logs"
                .into(),
        )
    } else {
        (
            last.to_string(),
            "run bin/setup-runtime, then see docs/RUNTIMES.md for the runtime's known problems"
                .into(),
        )
    }
}

fn probe_spec(home: &Home, cfg: &Config, dir: &Path, id: &str) -> ContainerSpec {
    let _ = home;
    let mut extra = cfg.runtime.extra_args.clone();
    // The configured entrypoint (the agent) is replaced by a shell for the probe only.
    strip_entrypoint(&mut extra);
    extra.extend(["--entrypoint".to_string(), "/bin/bash".to_string()]);
    ContainerSpec {
        name: runtime::container_name("doctor", id).unwrap_or_else(|_| "claw-doctor-0".into()),
        image: cfg.runtime.image.clone(),
        mounts: vec![Mount {
            host: dir.to_path_buf(),
            container: "/probe/ro".into(),
            readonly: true,
        }],
        user: runtime::current_container_user(),
        memory: cfg.limits.memory.clone(),
        cpus: cfg.limits.cpus.to_string(),
        pids_limit: cfg.limits.pids,
        tmp_size: "16m".into(),
        env: vec![],
        workdir: None,
        extra_args: extra,
        command: vec!["-c".into(), PROBE_SCRIPT.into()],
    }
}

fn strip_entrypoint(args: &mut Vec<String>) {
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--entrypoint" {
            args.drain(i..(i + 2).min(args.len()));
        } else if args[i].starts_with("--entrypoint=") {
            args.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Runs the probe container; Ok with its stdout, Err with the runtime's output on failure.
fn run_probe(home: &Home, rt: Runtime, cfg: &Config) -> Result<String, String> {
    let base = if home.root.is_dir() {
        home.run_dirs()
    } else {
        std::env::temp_dir()
    };
    let id = format!("d{}x{}", std::process::id(), home.tag());
    let dir = base.join(format!("doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    std::fs::write(dir.join("marker"), "claw-probe").map_err(|e| e.to_string())?;
    let spec = probe_spec(home, cfg, &dir, &id);
    let args = runtime::run_args(rt, &spec).args;
    let mut child = Command::new(rt.kind.program())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", rt.kind.program()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > Duration::from_secs(60) => {
                let _ = Command::new(rt.kind.program())
                    .args(runtime::rm_args(rt.kind, &spec.name))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe container timed out after 60 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !stdout.contains("uid=") {
        return Err(format!(
            "{}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_failures_are_explained() {
        let cases = [
            (
                "Error: crun: cgroups in hybrid mode not supported: OCI runtime error",
                "hybrid",
                "runc",
            ),
            (
                "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted",
                "ulimits",
                "default_ulimits",
            ),
            ("Error: something else\n", "something else", "setup-runtime"),
        ];
        for (out, why, fix) in cases {
            let (w, f) = explain_runtime_failure(out);
            assert!(w.contains(why), "{w}");
            assert!(f.contains(fix), "{f}");
        }
    }

    #[test]
    fn entrypoint_is_replaced_not_duplicated() {
        let mut a = vec![
            "--ulimit".to_string(),
            "nofile=1024:1024".into(),
            "--entrypoint".into(),
            "/x.sh".into(),
            "--entrypoint=/y".into(),
        ];
        strip_entrypoint(&mut a);
        assert_eq!(a, ["--ulimit", "nofile=1024:1024"]);
    }

    #[test]
    fn weakening_extra_args_are_named() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let cases = [
            ("--ulimit nofile=1024:1024 --entrypoint /x.sh", vec![]),
            ("--privileged", vec!["--privileged"]),
            ("--network host --network none", vec!["--network host"]),
            ("--network=bridge", vec!["--network bridge"]),
            (
                "-v /:/host --cap-add SYS_ADMIN",
                vec!["-v /:/host", "--cap-add SYS_ADMIN"],
            ),
            (
                "--security-opt seccomp=unconfined --security-opt label=type:x",
                vec!["--security-opt seccomp=unconfined"],
            ),
            (
                "--pid host --userns=keep-id --user 0:0",
                vec!["--pid host", "--user 0:0"],
            ),
        ];
        for (args, want) in cases {
            assert_eq!(weakening_args(&v(args)), want, "{args}");
        }
    }

    #[test]
    fn loopback_urls() {
        for (u, want) in [
            ("http://localhost:11434", true),
            ("http://127.0.0.1:8080/v1", true),
            ("https://api.openai.com", false),
        ] {
            assert_eq!(is_loopback_url(u), want, "{u}");
        }
    }
}
