use anyhow::Result;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  claw completions bash > ~/.local/share/bash-completion/completions/claw\n  claw completions zsh > ~/.zfunc/_claw\n  claw completions fish > ~/.config/fish/completions/claw.fish\nbin/setup installs them for you."
)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the completion script for one shell on stdout.
pub fn run(a: Args) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "claw", &mut std::io::stdout());
    Ok(())
}
