use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {
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

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let rows = crate::store::outbox::list(&store.conn, a.status.as_deref(), a.limit)?;
    if a.json {
        return crate::output::json(&rows);
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.chat_id.clone(),
                r.status.clone(),
                r.attempts.to_string(),
                crate::output::clip(&r.text, 40),
                r.last_error
                    .as_deref()
                    .map(|e| crate::output::clip(e, 40))
                    .unwrap_or_default(),
                crate::time::ago(r.sent_at.unwrap_or(r.created_at)),
            ]
        })
        .collect();
    crate::output::table(
        &["ID", "CHAT", "STATE", "TRIES", "TEXT", "LAST ERROR", "WHEN"],
        table,
    );
    Ok(())
}
