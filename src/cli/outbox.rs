//! `claw outbox`: list rows, and the claim protocol for long-running bridges in any language
//! (`claim` → send → `done` or `fail`). A claim never reported back is released by the next
//! claim after the timeout, so a crashed bridge loses nothing.

use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::infra::store::outbox;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Only rows in this state (pending, sending, sent, failed).
    #[arg(long, value_parser = ["pending", "sending", "sent", "failed"])]
    pub status: Option<String>,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Claim due rows of one channel for a bridge; prints one JSON object per line.
    Claim(ClaimArgs),
    /// Report a claimed row as sent.
    Done(DoneArgs),
    /// Report a claimed row as failed; it is retried later (or after --retry-after).
    Fail(FailArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClaimArgs {
    /// The chat-id prefix of the channel, e.g. `wa`.
    #[arg(long, value_name = "PREFIX")]
    pub channel: String,
    /// The bridge's name; `done`/`fail` must give the same one.
    #[arg(long = "as", value_name = "NAME")]
    pub claimer: String,
    /// At most this many rows.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Release claims older than this first (default `claim_timeout_secs` of the channel, 300).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print JSON lines (the default and only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DoneArgs {
    pub id: i64,
    #[arg(long = "as", value_name = "NAME")]
    pub claimer: String,
    /// The channel's id for the sent message.
    #[arg(long, value_name = "X")]
    pub msg_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct FailArgs {
    pub id: i64,
    #[arg(long = "as", value_name = "NAME")]
    pub claimer: String,
    /// What went wrong (kept on the row).
    #[arg(long)]
    pub error: String,
    /// Do not retry before this many seconds (e.g. the channel's rate limit).
    #[arg(long, value_name = "SECS")]
    pub retry_after: Option<u64>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    match a.cmd {
        Some(Cmd::Claim(c)) => claim(ctx, c),
        Some(Cmd::Done(d)) => {
            let store = ctx.store()?;
            if !outbox::mark_sent(&store.conn, d.id, &d.claimer, d.msg_id.as_deref())? {
                return Err(not_claimed(d.id, &d.claimer));
            }
            Ok(())
        }
        Some(Cmd::Fail(f)) => {
            let store = ctx.store()?;
            let retry = f.retry_after.map(|s| s.saturating_mul(1000) as i64);
            if !outbox::mark_failed(&store.conn, f.id, &f.claimer, &f.error, retry)? {
                return Err(not_claimed(f.id, &f.claimer));
            }
            Ok(())
        }
        None => list(ctx, a),
    }
}

fn not_claimed(id: i64, claimer: &str) -> anyhow::Error {
    Coded::err(
        Code::Failure,
        format!(
            "outbox row {id} is not claimed by `{claimer}` (it may have been released after the claim timeout and sent by someone else); claim again"
        ),
    )
}

fn claim(ctx: &Ctx, c: ClaimArgs) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let rows = crate::steps::deliver::claim_for_bridge(
        &mut store, &config, &c.channel, &c.claimer, c.limit, c.timeout,
    )?;
    let mut out = std::io::stdout().lock();
    for r in rows {
        use std::io::Write;
        let file = crate::infra::store::attachments::outbox_file(&store.conn, r.id)?;
        writeln!(out, "{}", claim_line(&r, file.as_ref()))?;
    }
    Ok(())
}

/// One claimed row for a bridge. A `send_file` row adds `file`: the host-owned copy made at
/// ipc-apply time (absolute path, the name the recipient sees, MIME type from the content, size,
/// kind); its `text` is the caption. A copy already removed by `claw prune` has an empty path.
pub fn claim_line(
    r: &outbox::Row,
    file: Option<&crate::media::outfile::OutFile>,
) -> serde_json::Value {
    let mut line =
        serde_json::json!({"id": r.id, "chat": r.chat_id, "text": r.text, "attempts": r.attempts});
    if let Some(f) = file {
        line["file"] = serde_json::json!({
            "path": f.path.to_string_lossy(),
            "name": f.name,
            "mime": f.mime,
            "size": f.size,
            "kind": f.kind.as_str(),
        });
    }
    line
}

fn list(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let rows = outbox::list(&store.conn, a.status.as_deref(), a.limit)?;
    if a.json {
        return crate::infra::output::json(&rows);
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.chat_id.clone(),
                r.status.clone(),
                r.attempts.to_string(),
                crate::infra::output::clip(&r.text, 40),
                r.last_error
                    .as_deref()
                    .map(|e| crate::infra::output::clip(e, 40))
                    .unwrap_or_default(),
                crate::infra::time::ago(r.sent_at.unwrap_or(r.created_at)),
            ]
        })
        .collect();
    crate::infra::output::table(
        &["ID", "CHAT", "STATE", "TRIES", "TEXT", "LAST ERROR", "WHEN"],
        table,
    );
    Ok(())
}
