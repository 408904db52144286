use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes claw.1 and one page per subcommand (claw-group.1, claw-group-add.1, …).\nExample: claw man --out ~/.local/share/man/man1 && man claw-run-group"
)]
pub struct Args {
    /// Folder to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Write a man page for claw and for every subcommand into `out`.
pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let cmd = super::Cli::command();
    let mut written = 0;
    write_pages(&cmd, "claw", "claw", &a.out, &mut written)?;
    println!("wrote {written} man pages to {}", a.out.display());
    Ok(())
}

/// `name` is the page's file name (`claw-run-group`), `usage` how it is typed (`claw run-group`).
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    usage: &str,
    out: &std::path::Path,
    n: &mut usize,
) -> Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(usage.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    let path = out.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    *n += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = sub.get_name();
        write_pages(
            sub,
            &format!("{name}-{sub_name}"),
            &format!("{usage} {sub_name}"),
            out,
            n,
        )?;
    }
    Ok(())
}
