use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs ipc-apply, schedule, dispatch and deliver in that order. Install it on a timer with `claw service install` (every 2 s).\nExit code 1 if any step failed; the other steps still ran."
)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let secrets = ctx.secrets()?;
    let r = crate::steps::tick::tick(&ctx.home, &config, &secrets)?;
    if a.json {
        crate::infra::output::json(&r)?;
    } else {
        println!(
            "ipc applied {} rejected {} · tasks queued {} · runs started {} recovered {} · delivered {} failed {}",
            r.ipc_applied,
            r.ipc_rejected,
            r.tasks_queued,
            r.runs_started,
            r.runs_recovered,
            r.delivered,
            r.delivery_failures
        );
        for f in &r.ipc_deferred {
            println!("ipc: group `{f}` had more than one pass's worth of requests; the rest wait");
        }
        if let Some(h) = &r.housekeeping {
            super::prune::print(h);
        }
        for (step, e) in &r.errors {
            eprintln!("claw: {step} failed: {}", crate::infra::output::clean(e));
        }
    }
    if !r.errors.is_empty() {
        return Err(Coded::err(
            Code::Failure,
            format!("{} step(s) failed", r.errors.len()),
        ));
    }
    Ok(())
}
