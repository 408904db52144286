use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what would start and why; start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the started runs to finish.
    #[arg(long)]
    pub wait: bool,
    /// Only this group's work (repeatable); `claw ingest` chains dispatch this way.
    #[arg(long = "group", value_name = "FOLDER")]
    pub groups: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let report = crate::steps::dispatch::dispatch(
        &ctx.home,
        &config,
        &crate::steps::dispatch::Options {
            dry_run: a.dry_run,
            wait: a.wait,
            groups: a.groups,
        },
    )?;
    if a.json {
        return crate::infra::output::json(&report);
    }
    for id in &report.recovered_runs {
        println!("recovered run {id}: its run-group had died; marked failed");
    }
    if let Some(why) = &report.swept {
        println!("looked for stray containers: {why}");
    }
    for c in &report.removed_containers {
        println!("removed stray container {c}");
    }
    for d in &report.decisions {
        let verb = match (d.action.as_str(), a.dry_run) {
            ("start", true) => "would start",
            ("start", false) => "started",
            ("wait", _) => "waiting",
            _ => "skipped",
        };
        println!(
            "{verb} `{}` ({}{}): {}",
            d.folder,
            d.kind,
            d.run_id.map(|i| format!(" run {i}")).unwrap_or_default(),
            crate::infra::output::clean(&d.reason)
        );
    }
    for (id, code) in &report.waited {
        println!(
            "run {id} exited with {}",
            code.map_or("a signal".into(), |c| c.to_string())
        );
    }
    for n in &report.notes {
        println!("note: {}", crate::infra::output::clean(n));
    }
    if report.decisions.is_empty() && report.recovered_runs.is_empty() {
        println!("nothing to dispatch");
    }
    Ok(())
}
