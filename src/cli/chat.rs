use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use super::Ctx;
use crate::channels::chat::{Chat, Event};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Type a message and press Enter; the reply appears as soon as the agent has it.\nThe container stays up between lines for limits.idle_secs, so a conversation is quick.\nEnd with Ctrl-D. With -m, one exchange for scripts (exit code 1 if the run failed)."
)]
pub struct Args {
    /// Talk to this group (default: main).
    #[arg(long, value_name = "FOLDER")]
    pub group: Option<String>,
    /// Send one message, print the answer, exit.
    #[arg(short, long, value_name = "TEXT")]
    pub message: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let config = ctx.config()?;
    let secrets = ctx.secrets()?;
    let one_shot = a.message.is_some();
    let mut chat = Chat::open(&ctx.home, config, secrets, a.group.as_deref(), one_shot)?;
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let mut failed = false;
    let mut say = |chat: &mut Chat, text: &str| -> Result<()> {
        let spinner = tty.then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_message("thinking…");
            pb.enable_steady_tick(Duration::from_millis(90));
            pb
        });
        let dim = anstyle::Style::new().dimmed();
        // Replies, tool details and problems come from the agent and the model: only our own
        // styling may put escape sequences on the terminal.
        let mut ui = |e: Event| {
            let line = match e {
                Event::Tool { tool, detail } => format!(
                    "{dim}  ⚙ {} {}{dim:#}",
                    crate::infra::output::clip(&tool, 40),
                    crate::infra::output::clip(&detail, 80)
                ),
                Event::Reply(text) => crate::infra::output::clean(&text).into_owned(),
                Event::Problem(p) => {
                    failed = true;
                    format!("{dim}  ! {}{dim:#}", crate::infra::output::clean(&p))
                }
            };
            match &spinner {
                Some(pb) => pb.suspend(|| anstream::println!("{line}")),
                None => anstream::println!("{line}"),
            }
        };
        let r = chat.exchange(text, &mut ui);
        if let Some(pb) = spinner {
            pb.finish_and_clear();
        }
        r
    };
    if let Some(m) = a.message {
        let r = say(&mut chat, &m);
        chat.finish();
        r?;
        if failed {
            return Err(crate::infra::error::Coded::err(
                crate::infra::error::Code::Failure,
                "the agent reported a problem",
            ));
        }
        return Ok(());
    }
    if tty {
        eprintln!(
            "chatting with `{}` ({}); Ctrl-D to leave",
            chat.group.folder, chat.group.chat_id
        );
    }
    let stdin = std::io::stdin();
    loop {
        if tty {
            eprint!("you› ");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = say(&mut chat, line) {
            eprintln!("claw: {}", crate::infra::output::clean(&format!("{e:#}")));
        }
    }
    chat.finish();
    Ok(())
}
