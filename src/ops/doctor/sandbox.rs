//! The doctor's sandbox checks: config flags that would weaken every container, and the one probe
//! container, started with a run's hardening, that proves `--network none` and read-only mounts
//! hold on this machine. It never leaves a container or a folder behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Level, Report};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::runtime::{self, ContainerSpec, Mount, Runtime, RuntimeKind};

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

pub(super) fn check_extra_args(cfg: &Config, r: &mut Report) {
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

pub(super) fn check_probe(home: &Home, rt: Runtime, cfg: &Config, r: &mut Report) {
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
    let name = runtime::container_name("doctor", id).unwrap_or_else(|_| "claw-doctor-0".into());
    let ro = Mount {
        host: dir.to_path_buf(),
        container: "/probe/ro".into(),
        readonly: true,
    };
    ContainerSpec {
        command: vec!["-c".into(), PROBE_SCRIPT.into()],
        ..ContainerSpec::configured(cfg, name, vec![ro], extra)
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
}
