//! Host logging: human-readable on a terminal, JSON lines otherwise (journald, files); level from
//! `CLAW_LOG` (e.g. `info`, `claw=debug`). Logs go to stderr so stdout stays for results.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber once at start.
pub fn init() {
    let filter = EnvFilter::try_from_env("CLAW_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn"))
        // ureq logs request URLs at debug, and Telegram's carry the bot token: never below warn.
        .add_directive("ureq=warn".parse().expect("static directive"))
        .add_directive("ureq_proto=warn".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.with_target(false).try_init();
    } else {
        let _ = builder.json().with_current_span(false).try_init();
    }
}
