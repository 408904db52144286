use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this group's requests (default every registered group).
    #[arg(long, value_name = "FOLDER")]
    pub group: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let report = match &a.group {
        Some(f) => crate::steps::ipc::apply_group(&ctx.home, &mut store, &config, f)?,
        None => crate::steps::ipc::apply_all(&ctx.home, &mut store, &config)?,
    };
    if a.json {
        crate::infra::output::json(&report)?;
    } else {
        for e in report.entries.iter().filter(|e| !e.ok) {
            println!(
                "rejected ipc/{}/{}: {}{}",
                e.folder,
                crate::infra::output::clean_line(&e.file),
                crate::infra::output::clean(e.reason.as_deref().unwrap_or("")),
                e.moved_to
                    .as_deref()
                    .map(|m| format!(" (moved to ipc/errors/{m})"))
                    .unwrap_or_default()
            );
        }
        if report.omitted > 0 {
            println!("({} more files not listed)", report.omitted);
        }
        for d in &report.deferred {
            println!("group `{}`: {}", d.folder, d.reason);
        }
        println!(
            "applied {} request(s), rejected {}",
            report.applied, report.rejected
        );
    }
    if report.rejected > 0 {
        return Err(Coded::err(
            Code::Rejected,
            format!(
                "{} request(s) rejected; reasons are in {}",
                report.rejected,
                ctx.home.ipc_errors().display()
            ),
        ));
    }
    Ok(())
}
