use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this channel prefix (e.g. `tg`, `wa`).
    #[arg(long, value_name = "PREFIX")]
    pub channel: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let secrets = ctx.secrets()?;
    let mut store = ctx.store()?;
    let report = crate::steps::deliver::deliver(
        &ctx.home,
        &mut store,
        &config,
        &secrets,
        a.channel.as_deref(),
    )?;
    if a.json {
        crate::infra::output::json(&report)?;
    } else {
        println!(
            "sent {}, failed {}, released {}",
            report.sent, report.failed, report.released
        );
        for (ch, why) in &report.skipped {
            println!("skipped {ch}: {}", crate::infra::output::clean(why));
        }
    }
    if report.failed > 0 {
        return Err(Coded::err(
            Code::Failure,
            format!("{} message(s) failed and will be retried", report.failed),
        ));
    }
    Ok(())
}
