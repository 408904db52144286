use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The assistant's name; `@Name` becomes the trigger in groups.
    #[arg(long, default_value = "Andy")]
    pub assistant_name: String,
    /// The chat id of the owner's main chat.
    #[arg(long, default_value = "cli:local", value_name = "ID")]
    pub main_chat: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let created = crate::ops::init::init(
        &ctx.home,
        &crate::ops::init::Options {
            assistant_name: a.assistant_name,
            main_chat: a.main_chat,
        },
    )?;
    if created.is_empty() {
        println!(
            "claw home {} is already initialised; nothing changed",
            ctx.home.root.display()
        );
    } else {
        for c in &created {
            println!("created {c}");
        }
        println!(
            "next: put your model key in {} and build the agent image with `claw image build`",
            ctx.home.secrets().display()
        );
    }
    Ok(())
}
