//! Finding the `claw` executable to start helper processes with.

use std::path::{Path, PathBuf};

/// The `claw` executable to start helpers with (dispatch's run-groups, run-group's watchdog).
/// When the binary was replaced while this process runs (an upgrade, a rebuild), Linux reports
/// the old one as `PATH (deleted)`; the new file at the same path is the one to start.
pub fn claw_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.exists() {
        return Ok(exe);
    }
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(p) if Path::new(p).exists() => Ok(PathBuf::from(p)),
        _ => Ok(exe),
    }
}
