//! The per-run log under `logs/FOLDER/run-<id>.log`: host-only (an agent cannot edit its own
//! record). Lines are timestamped; nothing written here may contain a secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An append-only, line-buffered run log.
pub struct RunLog {
    file: Option<File>,
    pub path: PathBuf,
    started: Instant,
}

impl RunLog {
    /// Open (append) the log for one run; a log that cannot be opened is reported on stderr only.
    pub fn open(logs: &Path, folder: &str, run_id: i64) -> RunLog {
        let dir = logs.join(folder);
        let path = dir.join(format!("run-{run_id}.log"));
        let file = std::fs::create_dir_all(&dir)
            .and_then(|_| OpenOptions::new().create(true).append(true).open(&path))
            .map_err(|e| eprintln!("claw: cannot open run log {}: {e}", path.display()))
            .ok();
        RunLog {
            file,
            path,
            started: Instant::now(),
        }
    }

    /// Path of the log a run will use (for dispatch to redirect a child's output into).
    pub fn path_for(logs: &Path, folder: &str, run_id: i64) -> PathBuf {
        logs.join(folder).join(format!("run-{run_id}.log"))
    }

    /// Write one line with wall-clock time and seconds since the run started.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let stamp = chrono::Local::now().format("%H:%M:%S%.3f");
        let el = self.started.elapsed().as_secs_f64();
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{stamp} +{el:.3}s {}", text.as_ref());
        }
        tracing::debug!(target: "claw::run", "{}", text.as_ref());
    }
}
