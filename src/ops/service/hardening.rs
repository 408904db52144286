//! Which systemd sandboxing the units get, per container runtime, and the paths each runtime
//! must keep writable. Pure except for asking rootful podman where its storage is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::systemd_quote;
use crate::infra::runtime::{Runtime, RuntimeKind};

/// The systemd hardening lines for a runtime. Pure.
///
/// Why it differs per runtime: in a user manager, `ProtectSystem=`, `PrivateTmp=` and friends
/// need a user namespace, and systemd 253+ turns on `PrivateUsers=` implicitly for them; that
/// namespace maps only the owner's uid, so rootless podman can no longer map its subordinate
/// ids, and `NoNewPrivileges=` stops the setuid `newuidmap`/`newgidmap` it needs. The docker
/// client only talks to the daemon's socket, and rootful podman needs no setuid helper, so both
/// take the full set with the home and the runtime's storage writable.
///
/// No `PrivateTmp=`: dispatch's run-groups outlive the tick that started them
/// (`KillMode=process`), and systemd deletes a unit's private /tmp and /var/tmp as soon as its
/// main process ends, so every later `podman run` of that run-group failed with
/// `open /var/tmp/…: no such file or directory` (seen under a live systemd). The system's temp
/// folders are writable instead, as they are for any process of the user.
pub fn hardening(rt: Option<Runtime>, claw_home: &Path, runtime_rw: &[PathBuf]) -> Vec<String> {
    let full = |extra: &[PathBuf]| {
        let mut l = vec![];
        if !extra.is_empty() {
            // ProtectSystem=strict skips a ReadWritePaths= folder that does not exist yet and
            // leaves its parent read-only, so the runtime cannot create it: on a fresh boot
            // rootful podman dies on `mkdir /run/runc` or `/var/cache/containers` (seen under a
            // live systemd, tests/service_live.rs). `+` runs this one step outside the sandbox.
            let mut mk = "ExecStartPre=+mkdir -p".to_string();
            for p in extra {
                mk.push(' ');
                mk.push_str(&systemd_quote(&p.display().to_string()));
            }
            l.push(mk);
        }
        l.extend([
            "NoNewPrivileges=yes".to_string(),
            "ProtectSystem=strict".into(),
            format!(
                "ReadWritePaths={}",
                systemd_quote(&claw_home.display().to_string())
            ),
            "ReadWritePaths=/tmp /var/tmp".into(),
        ]);
        for p in extra {
            // `-` : should the folder still be missing, the unit starts and the runtime says why.
            l.push(format!(
                "ReadWritePaths={}",
                systemd_quote(&format!("-{}", p.display()))
            ));
        }
        l
    };
    match rt {
        Some(Runtime {
            kind: RuntimeKind::Docker,
            ..
        }) => full(runtime_rw),
        Some(Runtime {
            kind: RuntimeKind::Podman,
            rootless: false,
        }) => full(runtime_rw),
        Some(Runtime {
            kind: RuntimeKind::Podman,
            rootless: true,
        }) => vec![
            "# No NoNewPrivileges/PrivateTmp/ProtectSystem: rootless podman needs the setuid".into(),
            "# newuidmap and its full subordinate id map, which they take away (docs/OPERATIONS.md).".into(),
            "# The agent containers keep their own hardening (--cap-drop ALL, no-new-privileges, ...).".into(),
        ],
        _ => vec![
            "# No runtime was detected at install time, so no sandboxing that could break it is".into(),
            "# set. Rerun `claw service install` once a runtime works to get the hardened units.".into(),
        ],
    }
}

/// Writable paths a runtime needs besides the claw home (rootful podman's storage and state).
pub fn runtime_storage(rt: Option<Runtime>, user_home: &Path) -> Vec<PathBuf> {
    match rt.map(|r| (r.kind, r.rootless)) {
        Some((RuntimeKind::Podman, false)) => {
            let mut v: Vec<PathBuf> = ["{{.Store.GraphRoot}}", "{{.Store.RunRoot}}"]
                .iter()
                .filter_map(|f| podman_info(f))
                .map(PathBuf::from)
                .collect();
            // Its defaults as root: storage, run state, the OCI runtimes' state and the lock of
            // the short-name alias cache (/var/tmp, for image copies, is writable for all).
            for p in [
                "/var/lib/containers",
                "/run/containers",
                "/run/libpod",
                "/run/runc",
                "/run/crun",
                "/var/cache/containers",
            ] {
                v.push(PathBuf::from(p));
            }
            v.sort();
            v.dedup();
            v
        }
        Some((RuntimeKind::Docker, _)) => vec![user_home.join(".docker")],
        _ => vec![],
    }
}

fn podman_info(format: &str) -> Option<String> {
    let out = Command::new("podman")
        .args(["info", "--format", format])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.starts_with('/')).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_per_runtime() {
        let home = Path::new("/h");
        let rw = [PathBuf::from("/var/lib/containers")];
        let docker = hardening(
            Some(Runtime {
                kind: RuntimeKind::Docker,
                rootless: false,
            }),
            home,
            &rw,
        );
        assert!(docker.contains(&"NoNewPrivileges=yes".to_string()));
        assert!(docker.contains(&"ProtectSystem=strict".to_string()));
        assert!(docker.contains(&"ReadWritePaths=/h".to_string()));
        assert!(docker.contains(&"ReadWritePaths=-/var/lib/containers".to_string()));
        assert_eq!(docker[0], "ExecStartPre=+mkdir -p /var/lib/containers");
        let rootless = hardening(
            Some(Runtime {
                kind: RuntimeKind::Podman,
                rootless: true,
            }),
            home,
            &rw,
        );
        assert!(rootless.iter().all(|l| l.starts_with('#')), "{rootless:?}");
        let rootful = hardening(
            Some(Runtime {
                kind: RuntimeKind::Podman,
                rootless: false,
            }),
            home,
            &rw,
        );
        assert!(rootful.contains(&"ProtectSystem=strict".to_string()));
        assert!(rootful.contains(&"ReadWritePaths=/tmp /var/tmp".to_string()));
        assert!(
            !rootful.iter().any(|l| l.starts_with("PrivateTmp")),
            "{rootful:?}"
        );
        assert!(
            hardening(None, home, &rw)
                .iter()
                .all(|l| l.starts_with('#'))
        );
    }
}
