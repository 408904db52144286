use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(after_help = "--since takes an RFC 3339 time or a duration like 30m, 2h, 7d.")]
pub struct Args {
    /// Only this group's entries.
    #[arg(long, value_name = "FOLDER")]
    pub group: Option<String>,
    /// Only entries since this time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only entries of this kind (e.g. egress.denied, ipc.rejected).
    #[arg(long)]
    pub kind: Option<String>,
    /// Show at most this many entries (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parse `30m`, `2h`, `7d`, `45s` or an RFC 3339 time into epoch milliseconds.
pub fn parse_since(s: &str) -> Option<i64> {
    if let Some(t) = crate::infra::time::parse_rfc3339(s) {
        return Some(t);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(crate::infra::time::now_ms() - secs * 1000)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let since = match &a.since {
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            Coded::err(
                Code::Usage,
                format!("--since `{s}`: use an RFC 3339 time or a duration like 30m, 2h, 7d"),
            )
        })?),
        None => None,
    };
    let mut rows =
        crate::infra::store::audit::list(&store.conn, a.group.as_deref(), since, a.limit)?;
    if let Some(k) = &a.kind {
        rows.retain(|r| &r.kind == k);
    }
    if a.json {
        return crate::infra::output::json(&rows);
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                crate::infra::time::local_short(r.at),
                r.folder.clone().unwrap_or_default(),
                r.run_id.map(|i| i.to_string()).unwrap_or_default(),
                r.kind.clone(),
                crate::infra::output::clip(&r.detail.to_string(), 90),
            ]
        })
        .collect();
    crate::infra::output::table(&["WHEN", "GROUP", "RUN", "WHAT", "DETAIL"], table);
    Ok(())
}
