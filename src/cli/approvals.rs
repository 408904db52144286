//! `claw approve ID`, `claw deny ID`, `claw approvals`: answering and listing approvals at the
//! terminal (the same rows `yes ID` / `no ID` answer in the main chat).

use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The id is on the card in the main chat and in `claw approvals`. Exit codes: 0 decided, 2 no such approval, 1 already decided or expired."
)]
pub struct DecideArgs {
    /// The approval's id.
    pub id: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Open approvals wait for `claw approve ID` or `claw deny ID` (or `yes ID` / `no ID` in the main chat)."
)]
pub struct ListArgs {
    /// Show decided and expired approvals too, not only open ones.
    #[arg(long)]
    pub all: bool,
    /// Show at most this many (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Approve (`approve` true) or deny one approval.
pub fn decide(ctx: &Ctx, a: DecideArgs, approve: bool) -> Result<()> {
    let mut store = ctx.store()?;
    let tx = store.write()?;
    let now = crate::infra::time::now_ms();
    crate::infra::store::approvals::expire_due(&tx, now)?;
    let r = crate::rules::approvals::answer::answer(&tx, a.id, approve, None, "cli", now)?;
    tx.commit()?;
    if a.json {
        crate::infra::output::json(&serde_json::json!({
            "decided": r.decided, "message": r.message, "approval": r.row,
        }))?;
    } else {
        println!("{}", r.message);
    }
    match (r.decided, &r.row) {
        (true, _) => Ok(()),
        (false, None) => Err(Coded::err(Code::Usage, r.message)),
        (false, Some(_)) => Err(Coded::err(Code::Failure, r.message)),
    }
}

/// List approvals.
pub fn list(ctx: &Ctx, a: ListArgs) -> Result<()> {
    let mut store = ctx.store()?;
    {
        // Rows past their deadline show as what they are: expired.
        let tx = store.write()?;
        let now = crate::infra::time::now_ms();
        crate::infra::store::approvals::expire_due(&tx, now)?;
        crate::rules::approvals::answer::expire_orphans(&tx, now)?;
        tx.commit()?;
    }
    let rows = crate::infra::store::approvals::list(&store.conn, a.all, a.limit)?;
    if a.json {
        return crate::infra::output::json(&rows);
    }
    if rows.is_empty() {
        println!(
            "{}",
            if a.all {
                "no approvals yet"
            } else {
                "no open approvals (--all shows decided ones)"
            }
        );
        return Ok(());
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                crate::infra::time::local_short(r.requested_at),
                r.folder.clone(),
                r.status.clone(),
                crate::infra::output::clip(
                    &crate::rules::approvals::describe(&r.kind, &r.detail),
                    60,
                ),
                crate::infra::output::clip(r.reason.as_deref().unwrap_or("-"), 40),
                r.decided_by.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::infra::output::table(
        &["ID", "ASKED", "GROUP", "STATUS", "WHAT", "REASON", "BY"],
        table,
    );
    Ok(())
}
