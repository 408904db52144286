//! What the service manager says about claw's units: `systemctl --user show` and
//! `launchctl print`, parsed into one state per unit. Read-only: it never starts or stops anything.

use serde::Serialize;
use std::path::{Path, PathBuf};

use super::{
    Platform, installed_files, installed_instances, on_path, quiet, template_file, uid, unit_dir,
};

/// One unit's state as the service manager reports it.
#[derive(Debug, Clone, Serialize)]
pub struct UnitState {
    pub unit: String,
    /// The unit file exists in the user's unit folder.
    pub installed: bool,
    /// `active`, `inactive`, `failed`, `running`, … or `unknown` without a service manager.
    pub state: String,
    /// Extra facts (last trigger, last exit code), as the manager words them.
    pub detail: String,
}

/// Status of every claw unit plus whether the manager could be asked.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub platform: Platform,
    pub unit_dir: PathBuf,
    pub manager_available: bool,
    pub units: Vec<UnitState>,
}

/// Ask the service manager about claw's units.
pub fn status(platform: Platform, user_home: &Path) -> Status {
    let dir = unit_dir(platform, user_home);
    let files = installed_files(platform, &dir);
    let manager = match platform {
        Platform::Systemd => "systemctl",
        Platform::Launchd => "launchctl",
    };
    let mut st = Status {
        platform,
        unit_dir: dir.clone(),
        manager_available: on_path(manager),
        units: vec![],
    };
    let mut names: Vec<String> = Vec::new();
    match platform {
        Platform::Systemd => {
            names.push("claw-tick.timer".into());
            names.push("claw-tick.service".into());
            // Each timer with the service it starts: a timer stays `active` while every run of
            // its service fails, so the service's own state is the one that tells.
            for c in installed_instances(&dir) {
                names.push(format!("claw-ingest@{c}.timer"));
                names.push(format!("claw-ingest@{c}.service"));
            }
            if dir.join("claw-whatsapp.service").exists() {
                names.push("claw-whatsapp.service".into());
            }
        }
        Platform::Launchd => {
            names.extend(files.iter().map(|f| {
                f.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string()
            }));
            if names.is_empty() {
                names.push("claw.tick".into());
            }
        }
    }
    for unit in names {
        let installed = match platform {
            Platform::Systemd => {
                dir.join(&unit).exists() || dir.join(template_file(&unit)).exists()
            }
            Platform::Launchd => dir.join(format!("{unit}.plist")).exists(),
        };
        let (state, detail) = if !st.manager_available {
            ("unknown".to_string(), format!("{manager} not found"))
        } else {
            match platform {
                Platform::Systemd => systemd_state(&unit),
                Platform::Launchd => launchd_state(&unit),
            }
        };
        st.units.push(UnitState {
            unit,
            installed,
            state,
            detail,
        });
    }
    st
}

fn systemd_state(unit: &str) -> (String, String) {
    let props =
        "LoadState,ActiveState,SubState,UnitFileState,LastTriggerUSec,Result,ExecMainStatus";
    match quiet(&["systemctl", "--user", "show", unit, "--property", props]) {
        Some(out) => parse_systemd_show(&out),
        None => (
            "unknown".into(),
            "systemctl --user show failed (no user session?)".into(),
        ),
    }
}

/// Turns `systemctl show` key=value output into a state and a one-line detail. Pure.
pub fn parse_systemd_show(out: &str) -> (String, String) {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    // A unit whose file is gone (or never loaded) is `inactive` to systemd; say why instead.
    let load = get("LoadState");
    let state = match (get("ActiveState"), get("SubState")) {
        _ if !load.is_empty() && load != "loaded" => (load, String::new()),
        (a, s) if a.is_empty() => ("unknown".to_string(), s),
        (a, s) => (a, s),
    };
    let mut detail = vec![];
    for (k, label) in [
        ("SubState", "sub"),
        ("UnitFileState", "file"),
        ("LastTriggerUSec", "last trigger"),
        ("Result", "result"),
        ("ExecMainStatus", "exit"),
    ] {
        let v = get(k);
        if !v.is_empty() && v != "n/a" {
            detail.push(format!("{label} {v}"));
        }
    }
    (state.0, detail.join(", "))
}

fn launchd_state(label: &str) -> (String, String) {
    match quiet(&["launchctl", "print", &format!("gui/{}/{label}", uid())]) {
        Some(out) => parse_launchctl_print(&out),
        None => ("not loaded".into(), String::new()),
    }
}

/// Picks `state`, `runs` and `last exit code` out of `launchctl print` output. Pure.
pub fn parse_launchctl_print(out: &str) -> (String, String) {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_string())
    };
    let state = get("state").unwrap_or_else(|| "unknown".into());
    let mut detail = vec![];
    if let Some(r) = get("runs") {
        detail.push(format!("runs {r}"));
    }
    if let Some(c) = get("last exit code") {
        detail.push(format!("last exit {c}"));
    }
    (state, detail.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_output_parsing() {
        let (s, d) = parse_systemd_show(
            "LoadState=loaded\nActiveState=active\nSubState=waiting\nUnitFileState=enabled\nLastTriggerUSec=Sat 2026-11-21 10:00:00 UTC\nResult=success\n",
        );
        assert_eq!(s, "active");
        assert!(
            d.contains("sub waiting")
                && d.contains("file enabled")
                && d.contains("last trigger Sat"),
            "{d}"
        );
        let (s, d) = parse_systemd_show(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainStatus=3\n",
        );
        assert_eq!(s, "failed");
        assert!(
            d.contains("result exit-code") && d.contains("exit 3"),
            "{d}"
        );
        let (s, _) =
            parse_systemd_show("LoadState=not-found\nActiveState=inactive\nSubState=dead\n");
        assert_eq!(s, "not-found");
        let (s, d) = parse_launchctl_print(
            "gui/501/claw.tick = {\n\tactive count = 0\n\tstate = not running\n\truns = 14\n\tlast exit code = 0\n}\n",
        );
        assert_eq!(s, "not running");
        assert_eq!(d, "runs 14, last exit 0");
    }
}
