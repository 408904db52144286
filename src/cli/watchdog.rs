use anyhow::Result;
use std::os::fd::AsFd;

use super::Ctx;
use crate::infra::error::{Code, Coded};

/// `claw watchdog --help`: what the internal subcommand does and why it exists.
pub const LONG_ABOUT: &str = "Internal: started by `claw run-group` for each container it starts, \
detached in its own session, with a pipe from run-group on stdin.\n\n\
It waits. When run-group writes `done` (it saw the container gone) it exits without calling the \
runtime. When the pipe closes without `done` (run-group died, even by SIGKILL) or the deadline \
passes (run-group hung), it force-removes the container (`rm -f`), twice more a few seconds later \
in case the runtime client was still creating it, reports on stderr (the run log), and exits.\n\n\
So no container outlives its run-group or its wall clock. Only `claw-FOLDER-ID` names are accepted.";

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 once it has acted or was told `done`; 2 bad arguments.")]
pub struct Args {
    /// The runtime that started the container: podman, docker or container.
    #[arg(long)]
    pub runtime: String,
    /// The container's name (`claw-FOLDER-ID`).
    #[arg(long)]
    pub name: String,
    /// Unix time in milliseconds after which the container is removed whatever run-group says.
    #[arg(long, value_name = "UNIX_MS")]
    pub deadline_ms: i64,
}

/// Guard one container until run-group says `done`, dies, or the deadline passes.
pub fn run(_ctx: &Ctx, a: Args) -> Result<()> {
    let kind = crate::infra::runtime::RuntimeKind::parse(&a.runtime)
        .map_err(|e| Coded::err(Code::Usage, e.to_string()))?
        .ok_or_else(|| {
            Coded::err(
                Code::Usage,
                "--runtime must name one: podman, docker or container",
            )
        })?;
    crate::infra::runtime::validate_name(&a.name)
        .map_err(|e| Coded::err(Code::Usage, e.to_string()))?;
    let watch = crate::steps::watchdog::Watch {
        program: kind.program().to_string(),
        kind,
        name: a.name,
        deadline_ms: a.deadline_ms,
    };
    let stdin = std::io::stdin();
    crate::steps::watchdog::run(&watch, stdin.as_fd(), &mut std::io::stderr());
    Ok(())
}
