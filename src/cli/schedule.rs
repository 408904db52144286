use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Pretend it is this time (RFC 3339); for tests and catching up by hand.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let now = crate::steps::schedule::now_from(a.now.as_deref())
        .map_err(|e| Coded::err(Code::Usage, e))?;
    let mut store = ctx.store()?;
    let report = crate::steps::schedule::claim_due(&mut store, now)?;
    if a.json {
        return crate::infra::output::json(&report);
    }
    for c in &report.claimed {
        println!(
            "queued task {} for group `{}` (run {}), next {}",
            c.task_id,
            c.folder,
            c.run_id,
            c.next_run
                .map_or("never (once)".into(), crate::infra::time::local_short)
        );
    }
    for id in &report.skipped_busy {
        println!("task {id} is still running from its last slot; this slot is skipped");
    }
    for (id, e) in &report.broken {
        println!("task {id} paused: {}", crate::infra::output::clean(e));
    }
    if report.claimed.is_empty() && report.skipped_busy.is_empty() && report.broken.is_empty() {
        println!("no task is due");
    }
    Ok(())
}
