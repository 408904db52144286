use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::infra::protocol::SearchRequest;
use crate::search::{self, Asker, Refusal};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every word must occur (if no entry has them all, any word may); a trailing * \
matches a prefix (garden*). Quotes and operators are searched as words.\n\
--since/--until take YYYY-MM-DD, an RFC 3339 time, or a duration back from now (12h, 30d, 8w).\n\
Examples:\n  claw search tomato seeds\n  claw search passport --group family --since 90d\n  \
claw search --reindex"
)]
pub struct Args {
    /// Words to look for in messages, the assistant's replies and compaction archives.
    #[arg(value_name = "QUERY", required_unless_present_any = ["reindex", "check"])]
    pub query: Vec<String>,
    /// Only this group's history (default: every group's).
    #[arg(long, value_name = "FOLDER")]
    pub group: Option<String>,
    /// Only entries from this time on.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only entries before this time (a date includes that whole day).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only entries from this sender (id or name; `assistant` for replies, `archive` for archives).
    #[arg(long)]
    pub sender: Option<String>,
    /// Show at most this many hits (at most 50).
    #[arg(long, default_value_t = search::DEFAULT_LIMIT)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Rebuild the index from the stored rows and re-read every group's archives (idempotent).
    #[arg(long, conflicts_with = "query")]
    pub reindex: bool,
    /// Check that the index matches the stored rows exactly (exit 1 if not).
    #[arg(long, conflicts_with = "query")]
    pub check: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let mut store = ctx.store()?;
    if a.reindex || a.check {
        if a.reindex {
            let r = search::reindex(&mut store, &ctx.home)?;
            if a.json {
                crate::infra::output::json(&r)?;
            } else {
                println!(
                    "reindexed {} messages, {} replies, {} archives",
                    r.messages, r.replies, r.archives
                );
                for (folder, rep) in &r.folders {
                    for s in &rep.skipped {
                        println!(
                            "  {folder}: skipped {}",
                            crate::infra::output::clean_line(s)
                        );
                    }
                }
            }
        }
        if a.check {
            crate::infra::store::history::integrity_check(&store.conn)?;
            if !a.json {
                println!("the search index matches the stored rows");
            }
        }
        return Ok(());
    }
    let req = SearchRequest {
        query: a.query.join(" "),
        since: a.since,
        until: a.until,
        sender: a.sender,
        group: a.group.clone(),
        limit: Some(a.limit),
    };
    let scope = search::scope(&store.conn, &Asker::Owner, a.group.as_deref())
        .map_err(|e| Coded::err(Code::Usage, e))?;
    let (hits, note) = match search::run(&store.conn, &scope, &req) {
        Ok(r) => r,
        Err(Refusal::Bad(why)) => return Err(Coded::err(Code::Usage, why)),
        Err(Refusal::Failed(e)) => return Err(e),
    };
    if a.json {
        return crate::infra::output::json(&hits);
    }
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    let rows = hits
        .iter()
        .map(|h| {
            vec![
                crate::infra::time::local_short(h.at),
                h.group
                    .clone()
                    .unwrap_or_else(|| h.chat_id.clone().unwrap_or_default()),
                serde_json::to_value(h.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                crate::infra::output::clip(&h.sender, 24),
                crate::infra::output::clip(&h.id, 24),
                crate::infra::output::clip(&h.snippet.replace('\n', " "), 100),
            ]
        })
        .collect();
    crate::infra::output::table(&["WHEN", "GROUP", "KIND", "SENDER", "ID", "MATCH"], rows);
    Ok(())
}
