use anyhow::Result;
use std::io::IsTerminal;
use std::path::PathBuf;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Build the agent image from container/Dockerfile and the claw-agent binary.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Image tag (default: runtime.image from claw.toml, else claw-agent:latest).
    #[arg(long)]
    pub tag: Option<String>,
    /// The claw-agent binary to bake in (default: the one beside this claw).
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// Folder holding the Dockerfile (default: this checkout's container/).
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// Runtime to build with (default: runtime.kind from claw.toml, else auto).
    #[arg(long)]
    pub runtime: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let Cmd::Build(a) = cmd;
    // Building needs no home: fall back to defaults when there is none yet.
    let config = ctx.config().unwrap_or_default();
    let tag = a.tag.unwrap_or_else(|| config.runtime.image.clone());
    let choice = a.runtime.unwrap_or_else(|| config.runtime.kind.clone());
    let rt = crate::infra::runtime::detect(&choice)
        .map_err(|e| Coded::err(Code::Runtime, e.to_string()))?;
    let agent = match a.agent_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("claw-agent"),
    };
    if !agent.is_file() {
        return Err(Coded::err(
            Code::Usage,
            format!(
                "no claw-agent binary at {}: build it with `cargo build --bin claw-agent` or pass --agent-bin",
                agent.display()
            ),
        ));
    }
    let context = a
        .context
        .unwrap_or_else(crate::ops::image::default_context_dir);
    eprintln!(
        "building {tag} with {} from {} and {}",
        rt.kind.program(),
        context.display(),
        agent.display()
    );
    let report = crate::ops::image::build(
        rt.kind,
        &tag,
        &agent,
        &context,
        std::io::stderr().is_terminal(),
    )
    .map_err(|e| Coded::err(Code::Runtime, e.to_string()))?;
    println!(
        "built {} in {:.1}s{}",
        report.tag,
        report.duration.as_secs_f64(),
        report
            .size_bytes
            .map(|b| format!(", {:.1} MB", b as f64 / 1e6))
            .unwrap_or_default()
    );
    Ok(())
}
