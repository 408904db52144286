use anyhow::Result;

use super::Ctx;
use crate::steps::housekeeping::{self, Options, Report};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Deletes audit rows older than retention.audit_days and prunes ipc/errors/ by age \
(retention.ipc_errors_days) and size (retention.ipc_errors_mb, oldest first); 0 turns a rule off.\n\
`claw tick` does this by itself at most once an hour."
)]
pub struct Args {
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let opts = Options {
        dry_run: a.dry_run,
        now: crate::infra::time::now_ms(),
    };
    let r = housekeeping::run(&ctx.home, &mut store, &config, &opts)?;
    if a.json {
        return crate::infra::output::json(&r);
    }
    print(&r);
    Ok(())
}

/// The text report (also used by `claw tick` when housekeeping ran).
pub fn print(r: &Report) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    match &r.audit.before {
        None => println!("audit: kept (retention.audit_days = 0)"),
        Some(before) => println!(
            "audit: {verb} {} row(s) from before {before}{}",
            r.audit.deleted,
            if r.audit.more {
                "; more remain for the next run"
            } else {
                ""
            }
        ),
    }
    let m = &r.media;
    println!(
        "media: {verb} {} inbox file(s) ({} KiB) older than media.inbox_max_age_days, {} sent file copie(s)",
        m.inbox_files,
        m.inbox_bytes.div_ceil(1024),
        m.sent_copies
    );
    let e = &r.ipc_errors;
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for x in &e.removed {
        let why = match x.why {
            "age" => "older than retention.ipc_errors_days",
            _ => "over retention.ipc_errors_mb, oldest first",
        };
        println!(
            "ipc/errors: {verb} {} ({} KiB, from {}; {why})",
            x.files.join(" + "),
            x.bytes.div_ceil(1024),
            x.at
        );
    }
    if e.removed_entries as usize > e.removed.len() {
        println!(
            "ipc/errors: … and {} more",
            e.removed_entries as usize - e.removed.len()
        );
    }
    println!(
        "ipc/errors: {verb} {} entr{} ({} KiB); {} kept ({} KiB){}",
        e.removed_entries,
        if e.removed_entries == 1 { "y" } else { "ies" },
        e.removed_bytes.div_ceil(1024),
        e.kept_entries,
        e.kept_bytes.div_ceil(1024),
        if e.truncated {
            "; only part of the folder was looked at, run again"
        } else {
            ""
        }
    );
}
