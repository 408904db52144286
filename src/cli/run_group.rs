use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Normally started by `claw dispatch`; run it by hand to watch one group's run.\nExit codes: 0 finished (or nothing to do), 1 the run failed, 5 the group or all slots are busy, 6 runtime problem."
)]
pub struct Args {
    /// The group's folder.
    pub folder: String,
    /// Run this scheduled task now.
    #[arg(long, value_name = "ID", conflicts_with = "run")]
    pub task: Option<i64>,
    /// Run this queued run (used by dispatch).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let secrets = ctx.secrets()?;
    let outcome = crate::steps::run_group::run_group(
        &ctx.home,
        &config,
        &secrets,
        &a.folder,
        &crate::steps::run_group::Options {
            run_id: a.run,
            task_id: a.task,
            ..Default::default()
        },
    )?;
    if a.json {
        crate::infra::output::json(&outcome)?;
    } else {
        match outcome.run_id {
            Some(id) => println!(
                "run {id} of `{}`: {} — {}",
                a.folder,
                outcome.status,
                crate::infra::output::clean(&outcome.detail)
            ),
            None => println!(
                "`{}`: {}",
                a.folder,
                crate::infra::output::clean(&outcome.detail)
            ),
        }
        if let Some(l) = &outcome.log {
            println!("log: {l}");
        }
    }
    if outcome.status == "failed" {
        let code = if outcome.runtime_problem {
            Code::Runtime
        } else {
            Code::Failure
        };
        return Err(Coded::err(code, format!("run failed: {}", outcome.detail)));
    }
    Ok(())
}
