//! `claw whatsapp pair|run`: link this machine as a WhatsApp device, then stay connected.

use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Link claw as a WhatsApp device: scan the QR code, or use --phone for a pairing code.
    Pair {
        /// Your number in international form without `+` (e.g. 4915112345678) to get a code
        /// to type on the phone instead of a QR code.
        #[arg(long)]
        phone: Option<String>,
    },
    /// Stay connected: store inbound messages and send the `wa:` outbox rows (run it as a service).
    Run,
}

#[cfg(feature = "whatsapp")]
pub fn run(ctx: &Ctx, c: Cmd) -> Result<()> {
    use crate::channels::whatsapp::client;
    match c {
        Cmd::Pair { phone } => client::pair(&ctx.home, phone),
        Cmd::Run => {
            let config = ctx.config()?;
            // The transcription key, if any; WhatsApp itself needs no secret from the file.
            let secrets = ctx.secrets().unwrap_or_default();
            client::run(&ctx.home, &config, &secrets)
        }
    }
}

#[cfg(not(feature = "whatsapp"))]
pub fn run(_ctx: &Ctx, _c: Cmd) -> Result<()> {
    Err(crate::infra::error::Coded::err(
        crate::infra::error::Code::Usage,
        "this claw was built without WhatsApp: rebuild with `cargo install --path . --features whatsapp` (docs/channels/whatsapp.md)",
    ))
}
