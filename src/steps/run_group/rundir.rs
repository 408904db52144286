//! The per-run folder (`run/<run id>/`) that holds the proxy socket, and the skills folder: both
//! host-owned and mounted read-only, so plain path calls are right here. Kept apart from
//! `sandbox`, which names the agent-writable trees and so must not touch the disk by path
//! (`tests/untrusted_boundary.rs`).

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::infra::paths::Home;

/// A fresh, empty per-run folder (a leftover of the same run id is replaced), mode 0755 so the
/// container user can reach the socket.
pub fn create(home: &Home, run_id: i64) -> Result<PathBuf> {
    let dir = home.run_dirs().join(run_id.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    Ok(dir)
}

/// Writes the claw CA (`ca.pem`) and the trust bundle (`ca-bundle.pem`, Mozilla's roots plus the
/// CA) into the per-run folder, readable by the container user; returns the bundle's path.
pub fn write_trust(dir: &Path, ca_cert_pem: &str) -> Result<PathBuf> {
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        Ok(p)
    };
    write("ca.pem", ca_cert_pem)?;
    write("ca-bundle.pem", &crate::infra::ca::bundle(ca_cert_pem))
}

/// Remove a per-run folder and what is in it.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir)
}

/// The skills folder mounted read-only: the home's copy if present, else an empty folder.
pub fn skills(home: &Home) -> PathBuf {
    let d = home.skills();
    let _ = std::fs::create_dir_all(&d);
    d
}
