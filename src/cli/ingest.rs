use anyhow::Result;
use std::io::BufReader;

use super::Ctx;
use crate::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each stdin line is one message:\n  {\"chat\":\"tg:-100123\",\"id\":\"842\",\"sender\":\"tg:55\",\"sender_name\":\"Ana\",\"text\":\"@Andy hi\",\n   \"time\":\"2026-11-21T10:00:00Z\",\"from_me\":false,\"chat_name\":\"Family\",\"is_group\":true}\nBad lines are reported on stderr with their line number; good lines are stored; exit code 4 if any was rejected."
)]
pub struct Args {
    /// Store one message for this chat instead of reading stdin.
    #[arg(long, value_name = "ID", requires = "text")]
    pub chat: Option<String>,
    /// The text of the one-shot message.
    #[arg(long, requires = "chat")]
    pub text: Option<String>,
    /// Sender name for the one-shot message (default: the owner).
    #[arg(long)]
    pub sender: Option<String>,
    /// Print the summary as JSON.
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let max = config.limits.max_message_bytes;
    let summary = match (&a.chat, &a.text) {
        (Some(chat), Some(text)) => {
            crate::ingest::one_shot(&mut store, chat, text, a.sender.as_deref(), max)?
        }
        _ => crate::ingest::ingest_lines(
            &mut store,
            BufReader::with_capacity(256 * 1024, std::io::stdin().lock()),
            max,
        )?,
    };
    for r in &summary.errors {
        eprintln!("line {}: {}", r.line, r.reason);
    }
    if a.json {
        crate::output::json(&summary)?;
    } else {
        println!("{}", summary.line());
    }
    if summary.rejected > 0 {
        return Err(Coded::err(
            Code::Rejected,
            format!("{} line(s) rejected", summary.rejected),
        ));
    }
    Ok(())
}
