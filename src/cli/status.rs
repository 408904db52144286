use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let store = ctx.store()?;
    let report = crate::status::status(&ctx.home, &store, &config)?;
    if a.json {
        return crate::output::json(&report);
    }
    let rows = report
        .groups
        .iter()
        .map(|g| {
            vec![
                g.folder.clone(),
                g.pending.to_string(),
                if g.running {
                    "running".into()
                } else if g.would_run {
                    "yes".into()
                } else {
                    "no".into()
                },
                g.reason.clone(),
                g.last_run.as_ref().map_or("never".into(), |r| {
                    format!(
                        "#{} {} {}",
                        r.id,
                        r.status,
                        crate::time::ago(r.ended_at.or(r.started_at).unwrap_or(r.queued_at))
                    )
                }),
                g.outbox_backlog.to_string(),
                g.active_tasks.to_string(),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "GROUP", "PENDING", "RUN NOW", "WHY", "LAST RUN", "OUTBOX", "TASKS",
        ],
        rows,
    );
    println!(
        "home {} · queued runs {} · unsent outbox {}",
        report.home, report.queued_runs, report.outbox_backlog
    );
    Ok(())
}
