use clap::Parser;

fn main() {
    claw::logging::init();
    let cli = claw::cli::Cli::parse();
    if let Err(e) = claw::cli::run(cli) {
        eprintln!("claw: {e:#}");
        std::process::exit(claw::error::exit_code(&e));
    }
}
