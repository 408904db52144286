use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::rules::cost::budget::thousands;
use crate::rules::cost::pricing::Prices;
use crate::rules::cost::report::{self, By, Line, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this group's use.
    #[arg(long, value_name = "FOLDER")]
    pub group: Option<String>,
    /// From when: `7d` (the last 7 days, today included), `today`, `month`, or a date `2026-12-01`.
    #[arg(long, default_value = "7d", value_name = "WHEN")]
    pub since: String,
    /// One line per day, group or model.
    #[arg(long, value_enum, default_value = "day")]
    pub by: By,
    /// Print JSON (exact numbers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let store = ctx.store()?;
    let now = crate::infra::time::now_ms();
    let from = report::parse_since(&a.since, now).map_err(|e| Coded::err(Code::Usage, e))?;
    if let Some(g) = &a.group
        && crate::infra::store::groups::get(&store.conn, g)?.is_none()
        && !crate::infra::store::usage::has_folder(&store.conn, g)?
    {
        return Err(Coded::err(
            Code::Usage,
            format!("no group `{g}` and no usage recorded for it; see `claw group list`"),
        ));
    }
    let prices = Prices::new(&config.pricing);
    let r = report::usage(
        &store.conn,
        &prices,
        &Options {
            group: a.group,
            from,
            by: a.by,
        },
        now,
    )?;
    if a.json {
        return crate::infra::output::json(&r);
    }
    let head = match r.by {
        By::Day => "DAY",
        By::Group => "GROUP",
        By::Model => "MODEL",
    };
    let cells = |l: &Line| {
        vec![
            l.key.clone(),
            thousands(l.requests),
            thousands(l.input_tokens),
            thousands(l.output_tokens),
            thousands(l.cache_read_tokens),
            thousands(l.cache_write_tokens),
            l.cost_text(&prices),
        ]
    };
    let mut rows: Vec<Vec<String>> = r.lines.iter().map(cells).collect();
    rows.push(cells(&r.total));
    crate::infra::output::table(
        &[
            head,
            "REQUESTS",
            "INPUT",
            "OUTPUT",
            "CACHE READ",
            "CACHE WRITE",
            "COST",
        ],
        rows,
    );
    println!(
        "{} to {}{} · {}",
        r.from,
        r.to,
        r.group
            .as_ref()
            .map(|g| format!(" · group {g}"))
            .unwrap_or_default(),
        r.currency
    );
    if !r.unpriced_models.is_empty() {
        println!(
            "— no price for {}: tokens only (add [pricing.models.\"NAME\"] to claw.toml)",
            crate::infra::output::clean_line(&r.unpriced_models.join(", "))
        );
    }
    Ok(())
}
