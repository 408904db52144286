use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --run: the recent runs (of one group if given). With --run ID: that run's log."
)]
pub struct Args {
    /// Only this group's runs; with no --run, prints its latest run's log.
    pub folder: Option<String>,
    /// Print the log of this run.
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// List this many runs.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// List runs (do not print a log).
    #[arg(long)]
    pub list: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let runs = crate::infra::store::runs::recent(&store.conn, a.folder.as_deref(), a.limit)?;
    let show = match (a.run, &a.folder, a.list || a.json) {
        (Some(id), _, _) => Some(crate::infra::store::runs::get(&store.conn, id)?.ok_or_else(
            || Coded::err(Code::Usage, format!("no run #{id}; see `claw logs --list`")),
        )?),
        (None, Some(_), false) => runs.first().cloned(),
        _ => None,
    };
    if let Some(r) = show {
        let path =
            crate::steps::run_group::log::RunLog::path_for(&ctx.home.logs(), &r.folder, r.id);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Coded::err(
                Code::Failure,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        // The log quotes the agent; it is host-written but may still carry what the agent sent.
        print!("{}", crate::infra::output::clean(&text));
        return Ok(());
    }
    if a.json {
        return crate::infra::output::json(&runs);
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.folder.clone(),
                r.kind.clone(),
                r.status.clone(),
                r.attempt.to_string(),
                crate::infra::time::ago(r.started_at.unwrap_or(r.queued_at)),
                match (r.started_at, r.ended_at) {
                    (Some(s), Some(e)) => format!("{:.1}s", (e - s) as f64 / 1000.0),
                    _ => String::new(),
                },
                format!("{}/{}", r.input_tokens, r.output_tokens),
                r.error
                    .as_deref()
                    .map(|e| crate::infra::output::clip(e, 50))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    crate::infra::output::table(
        &[
            "RUN",
            "GROUP",
            "KIND",
            "STATUS",
            "TRY",
            "STARTED",
            "TOOK",
            "TOKENS IN/OUT",
            "ERROR",
        ],
        rows,
    );
    Ok(())
}
