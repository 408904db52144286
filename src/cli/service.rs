use anyhow::Result;
use std::path::PathBuf;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::ops::service::{self, Platform, Spec};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write the timers and services for this user, then enable and start them.
    Install(InstallArgs),
    /// Stop, disable and remove every claw unit of this user.
    Uninstall(CommonArgs),
    /// Show each unit's state and the latest runs.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// systemd or launchd (default: launchd on macOS, systemd elsewhere).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the files and commands instead of writing and running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Channels that get an ingest unit: telegram, signal, whatsapp, comma-separated
    /// (default: those enabled in claw.toml).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub channels: Option<Vec<String>>,
    /// Runtime whose needs decide the hardening: auto, podman, docker, none (default: claw.toml).
    #[arg(long)]
    pub runtime: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn platform(a: &CommonArgs) -> Result<Platform> {
    match &a.platform {
        Some(p) => Platform::parse(p).map_err(|e| Coded::err(Code::Usage, e)),
        None => Ok(Platform::native()),
    }
}

fn user_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Install(a) => install(ctx, a),
        Cmd::Uninstall(a) => {
            let rep = service::uninstall(platform(&a)?, &user_home())?;
            for p in &rep.removed {
                println!("removed {}", p.display());
            }
            finish(&rep)
        }
        Cmd::Status(a) => status(ctx, a),
    }
}

fn install(ctx: &Ctx, a: InstallArgs) -> Result<()> {
    let platform = platform(&a.common)?;
    let config = ctx.config().unwrap_or_default();
    let channels = match &a.channels {
        Some(list) => service::parse_channels(list).map_err(|e| Coded::err(Code::Usage, e))?,
        None => service::CHANNELS
            .iter()
            .filter(|c| config.channels.get(**c).is_some_and(|ch| ch.enabled))
            .map(|c| c.to_string())
            .collect(),
    };
    let choice = a.runtime.unwrap_or_else(|| config.runtime.kind.clone());
    let runtime = if choice == "none" {
        None
    } else {
        crate::infra::runtime::detect(&choice).ok()
    };
    let home = user_home();
    let claw = std::env::current_exe()?;
    let claw = std::fs::canonicalize(&claw).unwrap_or(claw);
    let claw_home = std::path::absolute(&ctx.home.root)?;
    let spec = Spec {
        platform,
        claw,
        claw_home,
        runtime_rw: service::runtime_storage(runtime, &home),
        user_home: home,
        path_env: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        channels,
        runtime,
    };
    if a.dry_run {
        for f in service::render(&spec) {
            println!("# would write {}\n{}", f.path.display(), f.contents);
        }
        for c in service::enable_commands(&spec, service::uid()) {
            println!("# would run: {}", c.join(" "));
        }
        return Ok(());
    }
    let rep = service::install(&spec)?;
    for p in &rep.written {
        println!("wrote {}", p.display());
    }
    finish(&rep)
}

fn finish(rep: &service::Report) -> Result<()> {
    for (cmd, result) in &rep.commands {
        println!("{cmd}: {result}");
    }
    if !rep.manual.is_empty() {
        println!("the service manager is not on PATH here; once it is, run:");
        for m in &rep.manual {
            println!("  {m}");
        }
    }
    if rep.failed {
        return Err(Coded::err(
            Code::Failure,
            "a service-manager command failed (output above); the files are in place: fix the cause \
             (for systemd a user session is needed: `loginctl enable-linger $USER`) and rerun",
        ));
    }
    Ok(())
}

fn status(ctx: &Ctx, a: StatusArgs) -> Result<()> {
    let st = service::status(platform(&a.common)?, &user_home());
    let runs = ctx
        .store()
        .ok()
        .and_then(|s| crate::infra::store::runs::recent(&s.conn, None, 5).ok())
        .unwrap_or_default();
    if a.json {
        return crate::infra::output::json(
            &serde_json::json!({"service": st, "recent_runs": runs}),
        );
    }
    println!("units in {}", st.unit_dir.display());
    crate::infra::output::table(
        &["UNIT", "INSTALLED", "STATE", "DETAIL"],
        st.units
            .iter()
            .map(|u| {
                vec![
                    u.unit.clone(),
                    if u.installed { "yes" } else { "no" }.into(),
                    u.state.clone(),
                    u.detail.clone(),
                ]
            })
            .collect(),
    );
    if runs.is_empty() {
        println!("no runs yet");
    } else {
        crate::infra::output::table(
            &["RUN", "GROUP", "STATUS", "WHEN", "ERROR"],
            runs.iter()
                .map(|r| {
                    vec![
                        format!("#{}", r.id),
                        r.folder.clone(),
                        r.status.clone(),
                        crate::infra::time::ago(r.ended_at.or(r.started_at).unwrap_or(r.queued_at)),
                        crate::infra::output::clip(r.error.as_deref().unwrap_or(""), 50),
                    ]
                })
                .collect(),
        );
    }
    if st.units.iter().any(|u| !u.installed) {
        println!("not installed: run `claw service install`");
    }
    Ok(())
}
