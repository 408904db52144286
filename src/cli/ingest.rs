use anyhow::Result;
use std::io::BufReader;

use super::Ctx;
use crate::infra::error::{Code, Coded};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each stdin line is one message:\n  {\"chat\":\"tg:-100123\",\"id\":\"842\",\"sender\":\"tg:55\",\"sender_name\":\"Ana\",\"text\":\"@Andy hi\",\n   \"time\":\"2026-11-21T10:00:00Z\",\"from_me\":false,\"chat_name\":\"Family\",\"is_group\":true}\nAttachments: \"attachments\":[{\"kind\":\"photo\",\"url\":\"https://…\"}] or {\"path\":\"/abs/file\"} under media.ingest_roots.\nBad lines are reported on stderr with their line number; good lines are stored; exit code 4 if any was rejected."
)]
pub struct Args {
    /// Poll a built-in channel once instead of reading stdin (telegram: long-poll then drain the
    /// backlog; signal: one `signal-cli receive`).
    #[arg(long, value_name = "CHANNEL", value_parser = clap::builder::PossibleValuesParser::new(crate::channels::POLLABLE), conflicts_with = "chat")]
    pub from: Option<String>,
    /// With --from telegram: seconds to wait for the first update (default poll_timeout_secs, 25).
    #[arg(long, value_name = "SECS", requires = "from")]
    pub wait: Option<u64>,
    /// Store one message for this chat instead of reading stdin.
    #[arg(long, value_name = "ID", requires = "text")]
    pub chat: Option<String>,
    /// The text of the one-shot message.
    #[arg(long, requires = "chat")]
    pub text: Option<String>,
    /// Sender name for the one-shot message (default: the owner).
    #[arg(long)]
    pub sender: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let max = config.limits.max_message_bytes;
    if let Some(from) = &a.from {
        return poll(ctx, &config, &mut store, from, a.wait, a.json);
    }
    let summary = match (&a.chat, &a.text) {
        (Some(chat), Some(text)) => {
            crate::steps::ingest::one_shot(&mut store, chat, text, a.sender.as_deref(), max)?
        }
        _ => {
            // Attachments in the lines are fetched (path or URL) and voice notes transcribed.
            let secrets = ctx.secrets().unwrap_or_default();
            let source = crate::media::fetch::LineSource::new(&config.media, &ctx.home.root);
            let transcriber = crate::media::transcribe::Transcriber::from_config(
                &config.media.transcription,
                &secrets,
            );
            let media = crate::media::save::Ctx::new(
                &store.conn,
                &ctx.home,
                &config.media,
                &source,
                transcriber.as_ref(),
            )?;
            crate::steps::ingest::ingest_lines_with(
                &mut store,
                BufReader::with_capacity(256 * 1024, std::io::stdin().lock()),
                max,
                Some(&media),
            )?
        }
    };
    chain(ctx, &config, &store, &summary);
    if summary.notices > 0 {
        eprintln!(
            "{} unknown chat(s) wrote; main was told how to register them",
            summary.notices
        );
    }
    for r in &summary.errors {
        eprintln!(
            "line {}: {}",
            r.line,
            crate::infra::output::clean(&r.reason)
        );
    }
    if a.json {
        crate::infra::output::json(&summary)?;
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

fn poll(
    ctx: &Ctx,
    config: &crate::infra::config::Config,
    store: &mut crate::infra::store::Store,
    from: &str,
    wait: Option<u64>,
    json: bool,
) -> Result<()> {
    let secrets = ctx.secrets()?;
    let polled = crate::channels::poll(&ctx.home, store, config, &secrets, from, wait)?;
    let summary = polled.summary;
    if json {
        crate::infra::output::json(&polled.report)?;
    }
    chain(ctx, config, store, &summary);
    if !json {
        println!("{}", polled.line);
    }
    if summary.rejected > 0 {
        return Err(Coded::err(
            Code::Rejected,
            format!("{} message(s) rejected (see the log)", summary.rejected),
        ));
    }
    Ok(())
}

/// Start the next step for what was stored (`crate::steps::chain`). What it cannot start, the timer
/// does: a failure here is logged, never the ingest's failure.
fn chain(
    ctx: &Ctx,
    config: &crate::infra::config::Config,
    store: &crate::infra::store::Store,
    summary: &crate::steps::ingest::Summary,
) {
    if let Err(e) =
        crate::steps::chain::after_ingest(&ctx.home, store, config, &summary.stored_chats)
    {
        tracing::warn!(error = %format!("{e:#}"), "could not chain dispatch; the timer will dispatch");
    }
    // Answers to approvals queued an acknowledgement in the main chat: send it now.
    if summary.answers > 0
        && let Ok(secrets) = ctx.secrets()
        && let Ok(prefixes) = crate::steps::chain::channels_due(store)
    {
        for p in prefixes {
            crate::steps::chain::deliver(&ctx.home, config, &secrets, &p);
        }
    }
}
