use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --problems: everything that dropped or is delaying work (messages waiting with nothing running, failed runs, undelivered messages, rejected agent requests), each with what to do. Exit code 1 when there is any."
)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List problems instead of the per-group table.
    #[arg(long)]
    pub problems: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let store = ctx.store()?;
    let report = crate::ops::status::status(&ctx.home, &store, &config)?;
    if a.problems {
        return problems(&store, &config, &report, a.json);
    }
    if a.json {
        return crate::infra::output::json(&report);
    }
    let prices = crate::rules::cost::pricing::Prices::new(&config.pricing);
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
                        crate::infra::time::ago(r.ended_at.or(r.started_at).unwrap_or(r.queued_at))
                    )
                }),
                g.outbox_backlog.to_string(),
                g.active_tasks.to_string(),
                crate::media::human_size(g.inbox_bytes.max(0) as u64),
                spend(&g.today, &prices),
            ]
        })
        .collect();
    crate::infra::output::table(
        &[
            "GROUP", "PENDING", "RUN NOW", "WHY", "LAST RUN", "OUTBOX", "TASKS", "INBOX", "TODAY",
        ],
        rows,
    );
    println!(
        "home {} · queued runs {} · unsent outbox {} · spent today {}",
        report.home,
        report.queued_runs,
        report.outbox_backlog,
        spend(&report.today, &prices)
    );
    for b in &report.budgets {
        println!(
            "overall {} budget: {:.0}% of {} used{}",
            b.budget.period.name(),
            (b.fraction * 100.0).floor(),
            b.budget.cap_text(&prices),
            if b.fraction >= 1.0 {
                " (spent: no group runs until it resumes)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// A day's spend in a cell: the cost, or the tokens when nothing has a price.
fn spend(
    l: &crate::rules::cost::report::Line,
    prices: &crate::rules::cost::pricing::Prices,
) -> String {
    if l.cost.is_none() && l.tokens() > 0 {
        format!("{} tok", crate::rules::cost::budget::thousands(l.tokens()))
    } else {
        l.cost_text(prices)
    }
}

fn problems(
    store: &crate::infra::store::Store,
    config: &crate::infra::config::Config,
    report: &crate::ops::status::Report,
    json: bool,
) -> Result<()> {
    let list =
        crate::ops::problems::list(&store.conn, config, report, crate::infra::time::now_ms())?;
    if json {
        crate::infra::output::json(&list)?;
    } else if list.is_empty() {
        println!("no problems");
    } else {
        let rows = list
            .iter()
            .map(|p| {
                vec![
                    p.kind.to_string(),
                    p.group.clone().unwrap_or_else(|| "-".into()),
                    crate::infra::time::ago(p.since),
                    crate::infra::output::clip(&p.detail, 100),
                    p.fix.clone(),
                ]
            })
            .collect();
        crate::infra::output::table(&["PROBLEM", "GROUP", "SINCE", "WHAT", "FIX"], rows);
    }
    if !list.is_empty() {
        return Err(crate::infra::error::Coded::err(
            crate::infra::error::Code::Failure,
            format!("{} problem(s)", list.len()),
        ));
    }
    Ok(())
}
