use anyhow::Result;
use std::path::PathBuf;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::ops::doctor::{self, Level};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit code 1 when any check fails; warnings alone exit 0.")]
pub struct Args {
    /// Print the checks as JSON.
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip the probe container (faster; proves less).
    #[arg(long)]
    pub no_probe: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let report = doctor::doctor(
        &ctx.home,
        &doctor::Options {
            probe: !a.no_probe,
            user_home,
        },
    );
    if a.json {
        crate::infra::output::json(&report)?;
    } else {
        for c in &report.checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!(
                "{mark} {:<13} {}",
                c.name,
                crate::infra::output::clean(&c.message)
            );
            if let Some(fix) = &c.fix {
                println!("     {:<13} fix: {}", "", crate::infra::output::clean(fix));
            }
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .count();
    if failed > 0 {
        return Err(Coded::err(
            Code::Failure,
            format!(
                "{failed} check(s) failed; run the fix shown for each, then `claw doctor` again"
            ),
        ));
    }
    Ok(())
}
