//! Timers and services for the current user: systemd user units on Linux, launchd agents on
//! macOS. Owns rendering the templates in `systemd/` and `launchd/` with real paths, the
//! hardening each runtime tolerates, and the `systemctl --user` / `launchctl` calls that enable,
//! disable and inspect them.
//!
//! It must never write outside the user's unit folder, never need root, and never start the
//! service manager through a shell string: every call is an argument vector.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::infra::runtime::Runtime;

mod hardening;
mod status;
pub use hardening::{hardening, runtime_storage};
pub use status::{Status, UnitState, parse_launchctl_print, parse_systemd_show, status};

/// Which service manager the units are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Systemd,
    Launchd,
}

impl Platform {
    /// launchd on macOS, systemd everywhere else.
    pub fn native() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }

    /// Parses `systemd` or `launchd`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        match s {
            "systemd" => Ok(Platform::Systemd),
            "launchd" => Ok(Platform::Launchd),
            o => Err(format!("platform `{o}` is unknown: use systemd or launchd")),
        }
    }
}

/// Channels that get their own unit: polled ones get an ingest timer, WhatsApp a kept-alive bridge.
pub const CHANNELS: &[&str] = &["telegram", "signal", "whatsapp"];

/// Everything the templates need, resolved to real values.
#[derive(Debug, Clone)]
pub struct Spec {
    pub platform: Platform,
    /// Absolute path of the `claw` binary the units run.
    pub claw: PathBuf,
    pub claw_home: PathBuf,
    /// The user's home directory.
    pub user_home: PathBuf,
    /// PATH for the units, so the runtime (and newuidmap for rootless podman) is found.
    pub path_env: String,
    /// Channels from [`CHANNELS`] to install units for.
    pub channels: Vec<String>,
    /// The runtime the units will drive, if known; decides the hardening.
    pub runtime: Option<Runtime>,
    /// Extra writable paths the runtime needs (its storage), from [`runtime_storage`].
    pub runtime_rw: Vec<PathBuf>,
}

/// One file to write.
#[derive(Debug, Clone, Serialize)]
pub struct UnitFile {
    /// File name, e.g. `claw-tick.timer` or `claw.tick.plist`.
    pub name: String,
    pub path: PathBuf,
    pub contents: String,
}

/// The folder units are written to: `$XDG_CONFIG_HOME/systemd/user` or `~/Library/LaunchAgents`.
pub fn unit_dir(platform: Platform, user_home: &Path) -> PathBuf {
    match platform {
        Platform::Systemd => match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) if !x.is_empty() => PathBuf::from(x).join("systemd/user"),
            _ => user_home.join(".config/systemd/user"),
        },
        Platform::Launchd => user_home.join("Library/LaunchAgents"),
    }
}

const TICK_SERVICE: &str = include_str!("../../../systemd/claw-tick.service");
const TICK_TIMER: &str = include_str!("../../../systemd/claw-tick.timer");
const INGEST_SERVICE: &str = include_str!("../../../systemd/claw-ingest@.service");
const INGEST_TIMER: &str = include_str!("../../../systemd/claw-ingest@.timer");
const WHATSAPP_SERVICE: &str = include_str!("../../../systemd/claw-whatsapp.service");
const TICK_PLIST: &str = include_str!("../../../launchd/claw.tick.plist");
const INGEST_PLIST: &str = include_str!("../../../launchd/claw.ingest.plist");
const WHATSAPP_PLIST: &str = include_str!("../../../launchd/claw.whatsapp.plist");

/// Quote a value for a systemd unit: `%` doubled (specifiers), `"`/`\` escaped, whole value quoted
/// when it has whitespace or quotes.
pub fn systemd_quote(s: &str) -> String {
    let esc = s
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{esc}\"")
    } else {
        esc
    }
}

/// Escape text for XML character data.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Render every file for the spec. Pure.
pub fn render(spec: &Spec) -> Vec<UnitFile> {
    let dir = unit_dir(spec.platform, &spec.user_home);
    let file = |name: String, contents: String| UnitFile {
        path: dir.join(&name),
        name,
        contents,
    };
    let mut out = Vec::new();
    match spec.platform {
        Platform::Systemd => {
            let hard = hardening(spec.runtime, &spec.claw_home, &spec.runtime_rw).join("\n");
            let fill = |t: &str| {
                t.replace("@CLAW@", &systemd_quote(&spec.claw.display().to_string()))
                    .replace(
                        "@ENV_CLAW_HOME@",
                        &systemd_quote(&format!("CLAW_HOME={}", spec.claw_home.display())),
                    )
                    .replace(
                        "@ENV_PATH@",
                        &systemd_quote(&format!("PATH={}", spec.path_env)),
                    )
                    .replace("@HARDENING@", &hard)
            };
            out.push(file("claw-tick.service".into(), fill(TICK_SERVICE)));
            out.push(file("claw-tick.timer".into(), fill(TICK_TIMER)));
            if spec.channels.iter().any(|c| c != "whatsapp") {
                out.push(file("claw-ingest@.service".into(), fill(INGEST_SERVICE)));
                out.push(file("claw-ingest@.timer".into(), fill(INGEST_TIMER)));
            }
            if spec.channels.iter().any(|c| c == "whatsapp") {
                out.push(file("claw-whatsapp.service".into(), fill(WHATSAPP_SERVICE)));
            }
        }
        Platform::Launchd => {
            let fill = |t: &str, channel: &str| {
                t.replace("@CLAW@", &xml_escape(&spec.claw.display().to_string()))
                    .replace(
                        "@CLAW_HOME@",
                        &xml_escape(&spec.claw_home.display().to_string()),
                    )
                    .replace("@PATH@", &xml_escape(&spec.path_env))
                    .replace(
                        "@LOG_DIR@",
                        &xml_escape(&spec.claw_home.join("logs").display().to_string()),
                    )
                    .replace("@CHANNEL@", &xml_escape(channel))
            };
            out.push(file("claw.tick.plist".into(), fill(TICK_PLIST, "")));
            for c in &spec.channels {
                if c == "whatsapp" {
                    out.push(file("claw.whatsapp.plist".into(), fill(WHATSAPP_PLIST, "")));
                } else {
                    out.push(file(
                        format!("claw.ingest.{c}.plist"),
                        fill(INGEST_PLIST, c),
                    ));
                }
            }
        }
    }
    out
}

/// The units to enable for a spec: timers (and the WhatsApp service) or launchd labels.
pub fn enable_targets(spec: &Spec) -> Vec<String> {
    let mut v = Vec::new();
    match spec.platform {
        Platform::Systemd => {
            v.push("claw-tick.timer".to_string());
            for c in &spec.channels {
                v.push(if c == "whatsapp" {
                    "claw-whatsapp.service".into()
                } else {
                    format!("claw-ingest@{c}.timer")
                });
            }
        }
        Platform::Launchd => {
            v.push("claw.tick".to_string());
            for c in &spec.channels {
                v.push(if c == "whatsapp" {
                    "claw.whatsapp".into()
                } else {
                    format!("claw.ingest.{c}")
                });
            }
        }
    }
    v
}

/// Check a `--channels` list against [`CHANNELS`].
pub fn parse_channels(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for c in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if c.is_empty() {
            continue;
        }
        if !CHANNELS.contains(&c) {
            return Err(format!(
                "channel `{c}` has no service unit: choose from {}",
                CHANNELS.join(", ")
            ));
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    Ok(out)
}

/// What an install or uninstall did, step by step.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    /// Service-manager commands run, each with `ok` or its error.
    pub commands: Vec<(String, String)>,
    /// Set when the service manager is absent: what to run once it is there.
    pub manual: Vec<String>,
    /// True when a service-manager command failed.
    pub failed: bool,
}

/// The service-manager commands that enable the spec's units. Pure.
pub fn enable_commands(spec: &Spec, uid: u32) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match spec.platform {
        Platform::Systemd => {
            let mut en = s(&["systemctl", "--user", "enable", "--now"]);
            en.extend(enable_targets(spec));
            vec![s(&["systemctl", "--user", "daemon-reload"]), en]
        }
        Platform::Launchd => render(spec)
            .into_iter()
            .map(|f| {
                vec![
                    "launchctl".into(),
                    "bootstrap".into(),
                    format!("gui/{uid}"),
                    f.path.display().to_string(),
                ]
            })
            .collect(),
    }
}

/// Write the units and enable them. A missing service manager is not an error: the report
/// lists the commands to run later.
pub fn install(spec: &Spec) -> Result<Report> {
    let mut rep = Report::default();
    let files = render(spec);
    if let Some(dir) = files.first().and_then(|f| f.path.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::create_dir_all(spec.claw_home.join("logs")).ok();
    for f in &files {
        let tmp = f.path.with_extension("claw-tmp");
        std::fs::write(&tmp, &f.contents)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &f.path)
            .with_context(|| format!("cannot write {}", f.path.display()))?;
        rep.written.push(f.path.clone());
    }
    if spec.platform == Platform::Launchd {
        // bootstrap fails on an already-loaded label: unload first so a reinstall picks up changes.
        for label in enable_targets(spec) {
            let _ = quiet(&["launchctl", "bootout", &format!("gui/{}/{label}", uid())]);
        }
    }
    run_all(&mut rep, enable_commands(spec, uid()));
    Ok(rep)
}

/// Disable and remove every claw unit in the user's unit folder (all channels, not only the
/// configured ones, so nothing is left behind).
pub fn uninstall(platform: Platform, user_home: &Path) -> Result<Report> {
    let mut rep = Report::default();
    let dir = unit_dir(platform, user_home);
    let ours = installed_files(platform, &dir);
    let mut cmds: Vec<Vec<String>> = Vec::new();
    match platform {
        Platform::Systemd => {
            let mut dis: Vec<String> =
                ["systemctl", "--user", "disable", "--now", "claw-tick.timer"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            dis.extend(
                installed_instances(&dir)
                    .into_iter()
                    .map(|c| format!("claw-ingest@{c}.timer")),
            );
            if dir.join("claw-whatsapp.service").exists() {
                dis.push("claw-whatsapp.service".into());
            }
            cmds.push(dis);
            // Disabling a timer leaves its service running (a tick, a long poll): stop those too.
            cmds.push(systemctl_patterns("stop"));
        }
        Platform::Launchd => {
            for f in &ours {
                let label = f
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                cmds.push(vec![
                    "launchctl".into(),
                    "bootout".into(),
                    format!("gui/{}/{label}", uid()),
                ]);
            }
        }
    }
    run_all(&mut rep, cmds);
    for f in ours {
        std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
        rep.removed.push(f);
    }
    if platform == Platform::Systemd {
        // A unit that failed stays loaded as `not-found failed` after its file is gone (seen
        // under a live systemd); reset-failed unloads it, so nothing of claw stays listed.
        run_all(
            &mut rep,
            vec![
                vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
                systemctl_patterns("reset-failed"),
            ],
        );
    }
    Ok(rep)
}

/// `systemctl --user VERB` over every unit claw may have loaded. Globs only: a glob that matches
/// no loaded unit is not an error, where a plain name that is not loaded is.
fn systemctl_patterns(verb: &str) -> Vec<String> {
    [
        "systemctl",
        "--user",
        verb,
        "claw-tick.*",
        "claw-ingest@*",
        "claw-whatsapp.*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// claw's unit files present in `dir`.
pub fn installed_files(platform: Platform, dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            match platform {
                Platform::Systemd => {
                    n.starts_with("claw-") && (n.ends_with(".service") || n.ends_with(".timer"))
                }
                Platform::Launchd => n.starts_with("claw.") && n.ends_with(".plist"),
            }
        })
        .collect();
    v.sort();
    v
}

/// Channels whose ingest timer is enabled (from the `timers.target.wants` links).
pub fn installed_instances(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("timers.target.wants")) else {
        return vec![];
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            Some(
                n.strip_prefix("claw-ingest@")?
                    .strip_suffix(".timer")?
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn run_all(rep: &mut Report, cmds: Vec<Vec<String>>) {
    for argv in cmds {
        let line = argv.join(" ");
        if !on_path(&argv[0]) {
            rep.manual.push(line);
            continue;
        }
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output();
        let result = match out {
            Ok(o) if o.status.success() => "ok".to_string(),
            Ok(o) => {
                rep.failed = true;
                String::from_utf8_lossy(&o.stderr).trim().to_string()
            }
            Err(e) => {
                rep.failed = true;
                e.to_string()
            }
        };
        rep.commands.push((line, result));
    }
}

/// `claw-ingest@telegram.timer` → `claw-ingest@.timer`: the template an instance comes from.
fn template_file(unit: &str) -> String {
    match (unit.split_once('@'), unit.rsplit_once('.')) {
        (Some((base, _)), Some((_, ext))) => format!("{base}@.{ext}"),
        _ => unit.to_string(),
    }
}

/// Whether an executable named `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn quiet(argv: &[&str]) -> Option<String> {
    if !on_path(argv[0]) {
        return None;
    }
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The invoking user's uid.
pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn spec(platform: Platform, rt: Option<Runtime>) -> Spec {
        Spec {
            platform,
            claw: "/opt/my tools/claw".into(),
            claw_home: "/home/ana/.local/share/claw".into(),
            user_home: "/home/ana".into(),
            path_env: "/usr/bin:/bin".into(),
            channels: vec!["telegram".into(), "whatsapp".into()],
            runtime: rt,
            runtime_rw: vec!["/var/lib/containers".into()],
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(systemd_quote("/usr/bin/claw"), "/usr/bin/claw");
        assert_eq!(systemd_quote("/a b/claw"), "\"/a b/claw\"");
        assert_eq!(systemd_quote("50%"), "50%%");
        assert_eq!(systemd_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(xml_escape("a<&>b"), "a&lt;&amp;&gt;b");
    }

    #[test]
    fn systemd_render_fills_every_placeholder() {
        let files = render(&spec(Platform::Systemd, None));
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "claw-tick.service",
                "claw-tick.timer",
                "claw-ingest@.service",
                "claw-ingest@.timer",
                "claw-whatsapp.service"
            ]
        );
        for f in &files {
            assert!(!f.contents.contains("@CLAW"), "{}: {}", f.name, f.contents);
            assert!(!f.contents.contains("@HARDENING@"));
        }
        let tick = &files[0].contents;
        assert!(
            tick.contains("ExecStart=\"/opt/my tools/claw\" tick"),
            "{tick}"
        );
        assert!(tick.contains("Environment=CLAW_HOME=/home/ana/.local/share/claw"));
        assert!(tick.contains("KillMode=process"));
        assert!(files[1].contents.contains("OnUnitActiveSec=2s"));
        assert!(files[1].contents.contains("AccuracySec=1s"));
        assert!(files[4].contents.contains("Restart=always"));
        assert_eq!(
            enable_targets(&spec(Platform::Systemd, None)),
            [
                "claw-tick.timer",
                "claw-ingest@telegram.timer",
                "claw-whatsapp.service"
            ]
        );
    }

    #[test]
    fn launchd_render_escapes_and_names_labels() {
        let mut s = spec(Platform::Launchd, None);
        s.claw_home = "/Users/ana/Library/Application Support/claw & co".into();
        let files = render(&s);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "claw.tick.plist",
                "claw.ingest.telegram.plist",
                "claw.whatsapp.plist"
            ]
        );
        assert!(files[0].contents.contains("claw &amp; co"));
        assert!(
            files[1]
                .contents
                .contains("<string>claw.ingest.telegram</string>")
        );
        assert!(files[2].contents.contains("<key>KeepAlive</key>"));
        for f in &files {
            assert!(!f.contents.contains("@CLAW") && !f.contents.contains("@CHANNEL@"));
        }
        let cmds = enable_commands(&s, 501);
        assert_eq!(cmds[0][..3], ["launchctl", "bootstrap", "gui/501"]);
    }

    #[test]
    fn channels_are_checked() {
        assert_eq!(
            parse_channels(&["telegram,signal".into(), "telegram".into()]).unwrap(),
            ["telegram", "signal"]
        );
        assert!(parse_channels(&["irc".into()]).unwrap_err().contains("irc"));
    }
}
