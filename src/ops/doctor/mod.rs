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
use std::time::Duration;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::runtime::{self, Runtime};

mod sandbox;
mod work;
use sandbox::{check_extra_args, check_probe};
pub use sandbox::{explain_runtime_failure, weakening_args};
use work::check_work;

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
    if config.is_some() {
        check_work(home, &cfg, &mut r);
    }
    check_timers(&opts.user_home, &mut r);
    check_extra_args(&cfg, &mut r);
    check_media(&cfg, &mut r);
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

/// Voice transcription: whether it is on, and whether ffmpeg is there to convert audio the
/// endpoint does not take (only needed then; a warning, since text still works without it).
fn check_media(cfg: &Config, r: &mut Report) {
    let t = &cfg.media.transcription;
    if t.base_url.trim().is_empty() {
        r.push(
            "transcription",
            Level::Ok,
            "voice transcription is off: agents get the voice note's file and a note saying so"
                .into(),
            None,
        );
        return;
    }
    r.push(
        "transcription",
        Level::Ok,
        format!(
            "voice notes are transcribed by {} ({})",
            t.base_url, t.model
        ),
        None,
    );
    if crate::media::transcribe::ffmpeg_available() {
        r.push(
            "ffmpeg",
            Level::Ok,
            "ffmpeg found (converts audio the endpoint does not take)".into(),
            None,
        );
    } else {
        r.push(
            "ffmpeg",
            Level::Warn,
            format!(
                "ffmpeg is not installed: voice notes in types outside media.transcription.accepts ({}) cannot be transcribed",
                t.accepts.join(", ")
            ),
            Some("install ffmpeg (apt-get install ffmpeg, brew install ffmpeg)".into()),
        );
    }
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
    let secrets = crate::infra::secrets::Secrets::parse(&text);
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
    let path = crate::rules::mounts::allowlist_path(user_home);
    match crate::rules::mounts::load_allowlist(&path) {
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
    let known = crate::infra::store::SCHEMA_VERSION;
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
    let platform = crate::ops::service::Platform::native();
    let st = crate::ops::service::status(platform, user_home);
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
                crate::ops::service::Platform::Systemd => {
                    "systemctl --user enable --now claw-tick.timer".into()
                }
                crate::ops::service::Platform::Launchd => "claw service install".into(),
            }),
        ),
        None => {}
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
    if !crate::ops::image::image_exists(kind, tag) {
        r.push(
            "image",
            Level::Fail,
            format!("image {tag} is missing in {}", kind.program()),
            Some(format!("claw image build --tag {tag}")),
        );
        return false;
    }
    let created = crate::ops::image::image_created_at(kind, tag);
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
    let store = crate::infra::store::Store::open(home).ok();
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
            let live = crate::steps::run_group::run_id_of(home, name).and_then(|id| {
                let run = crate::infra::store::runs::get(&store.as_ref()?.conn, id).ok()??;
                Some(
                    run.status == "running"
                        && run
                            .pid
                            .is_some_and(|p| crate::steps::dispatch::pid_alive(p as i32)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
