//! `claw ca`: the per-install CA used to terminate TLS for hosts with a bound credential.

use anyhow::Result;

use super::Ctx;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print where the CA is and its certificate (create it first if there is none).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace the CA with a new key and certificate; runs already going keep the old one.
    Rotate,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    ctx.config()?;
    match cmd {
        Cmd::Show { json } => {
            let ca = crate::infra::ca::ensure(&ctx.home)?;
            let cert = crate::infra::ca::cert_path(&ctx.home);
            let key = crate::infra::ca::key_path(&ctx.home);
            if json {
                return crate::infra::output::json(&serde_json::json!({
                    "certificate": cert, "key": key, "pem": ca.cert_pem,
                    "lifetime_years": crate::infra::ca::CA_YEARS,
                }));
            }
            println!("certificate: {}", cert.display());
            println!("key:         {} (mode 0600, never mounted)", key.display());
            println!(
                "valid for {} years from creation; replace with `claw ca rotate`",
                crate::infra::ca::CA_YEARS
            );
            print!("{}", ca.cert_pem);
            Ok(())
        }
        Cmd::Rotate => {
            crate::infra::ca::generate(&ctx.home)?;
            if let Ok(store) = ctx.store() {
                let _ = crate::infra::store::audit::record(
                    &store.conn,
                    None,
                    None,
                    "ca.rotated",
                    serde_json::json!({"certificate": crate::infra::ca::cert_path(&ctx.home)}),
                );
            }
            println!(
                "new CA in {}; the next run of each group trusts it (runs already going keep the old one)",
                crate::infra::ca::dir(&ctx.home).display()
            );
            Ok(())
        }
    }
}
