use clap::Parser;

fn main() {
    claw::infra::logging::init();
    claw::infra::output::quiet_on_closed_stdout();
    let cli = claw::cli::Cli::parse();
    if let Err(e) = claw::cli::run(cli) {
        // Errors can quote untrusted text (an agent's message, a file name): never raw on a terminal.
        eprintln!("claw: {}", claw::infra::output::clean(&format!("{e:#}")));
        std::process::exit(claw::infra::error::exit_code(&e));
    }
}
