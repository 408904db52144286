//! The group's disk limit: how much the folders its agent can write (`groups/F`, `sessions/F`,
//! `ipc/F`, and `groups/global` for main) may hold. `limits.group_disk_mb` (or the group's
//! `--disk-mb`) bounds the bytes, `limits.group_max_files` the files and folders.
//!
//! The trees are measured only through `untrusted::usage` (descriptor-relative, never following a
//! link, bounded). A walk that stops early (more entries than the file limit, or nesting deeper
//! than the walk follows) counts as over the file limit, and a walk that fails (an agent can
//! `chmod 000` its own folder) counts as over too: an agent must not escape the limit by making its
//! tree unmeasurable.
//!
//! When: once before the container starts (over: the run does not start), then in a thread of its
//! own while it runs, every [`interval`] after the last walk (at least 0.25 s, at most 10% of one
//! core). The check bounds time, not bytes: a writer at W MB/s passes the limit by up to about
//! W × (interval + walk + the removal, ~0.3 s with podman) before it is stopped. The same check
//! works for podman, docker and Apple `container`, since it looks at the host side of the mounts.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::groups::Group;
use crate::infra::untrusted::{Dir, Usage, usage};

const MIB: u64 = 1 << 20;

/// The limit for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub mb: u64,
    pub files: u64,
}

impl Limit {
    /// The group's own `disk_mb` if set, else the global limits.
    pub fn for_group(config: &Config, group: &Group) -> Limit {
        Limit {
            mb: group.config.disk_mb.unwrap_or(config.limits.group_disk_mb),
            files: config.limits.group_max_files,
        }
    }
}

/// The folders that count against a group's limit.
pub fn dirs(home: &Home, group: &Group) -> Vec<PathBuf> {
    let mut d = vec![
        home.group_dir(&group.folder),
        home.session_dir(&group.folder),
        home.ipc_dir(&group.folder),
    ];
    if group.is_main {
        d.push(home.global_dir());
    }
    d
}

/// One measurement of all of a group's folders.
#[derive(Debug, Clone)]
pub struct Measured {
    pub usage: Usage,
    /// Why the walk failed, if it did.
    pub error: Option<String>,
    pub took: Duration,
}

/// Walk the folders, visiting at most `limit.files + 1` entries in all.
pub fn measure(dirs: &[PathBuf], limit: &Limit) -> Measured {
    let started = Instant::now();
    let mut total = Usage::default();
    let mut error = None;
    for path in dirs {
        let dir = match Dir::open(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                error = Some(format!("{}: {e}", path.display()));
                break;
            }
        };
        // One past the limit, so a tree of exactly the limit is not "truncated".
        let budget = (limit.files + 1).saturating_sub(total.entries);
        match usage(&dir, budget) {
            Ok(u) => {
                total.bytes = total.bytes.saturating_add(u.bytes);
                total.entries += u.entries;
                total.truncated |= u.truncated;
            }
            Err(e) => {
                error = Some(format!("{}: {e}", path.display()));
                break;
            }
        }
        if total.truncated {
            break;
        }
    }
    Measured {
        usage: total,
        error,
        took: started.elapsed(),
    }
}

/// How a group is over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Over {
    Bytes { used_mb: u64, limit_mb: u64 },
    Files { limit: u64 },
    Unmeasurable(String),
}

/// Whether a measurement is over the limit, and how.
pub fn over(m: &Measured, limit: &Limit) -> Option<Over> {
    if let Some(e) = &m.error {
        return Some(Over::Unmeasurable(e.clone()));
    }
    if m.usage.bytes > limit.mb.saturating_mul(MIB) {
        return Some(Over::Bytes {
            used_mb: m.usage.bytes.div_ceil(MIB),
            limit_mb: limit.mb,
        });
    }
    if m.usage.truncated || m.usage.entries > limit.files {
        return Some(Over::Files { limit: limit.files });
    }
    None
}

impl Over {
    /// What happened, for the run log and the run's error.
    pub fn describe(&self) -> String {
        match self {
            Over::Bytes { used_mb, limit_mb } => {
                format!("used more than {limit_mb} MiB of disk ({used_mb} MiB)")
            }
            Over::Files { limit } => format!(
                "holds more than {limit} files and folders (or nests them deeper than claw measures)"
            ),
            Over::Unmeasurable(e) => {
                format!("could not be measured ({e}), which counts as over its disk limit")
            }
        }
    }

    /// How the owner lifts it.
    fn remedy(&self, group: &Group) -> String {
        let f = &group.folder;
        let mut places = format!("groups/{f}, sessions/{f} or ipc/{f}");
        if group.is_main {
            places.push_str(" or groups/global");
        }
        let raise = match self {
            Over::Files { .. } => "raise `limits.group_max_files` in claw.toml".to_string(),
            _ => format!("raise it with `claw group set {f} --disk-mb …`"),
        };
        format!("The owner can free space in {places} of the claw home or {raise}.")
    }
}

/// The chat's notice when a running agent passed the limit.
pub fn stopped_notice(o: &Over, group: &Group) -> String {
    format!(
        "This group's agent {}; the run was stopped. {}",
        o.describe(),
        o.remedy(group)
    )
}

/// The chat's notice when a run is refused because the folders are still over the limit.
pub fn refused_notice(o: &Over, group: &Group) -> String {
    format!(
        "I can't start: this group's folders {}. {} (I say this at most every {} hours.)",
        o.describe(),
        o.remedy(group),
        NOTICE_WINDOW.as_secs() / 3600
    )
}

/// A chat hears about a refused run at most once in this window.
pub const NOTICE_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// Time to the next walk: ten times the last walk, so the check never takes more than a tenth of
/// a core (100,000 entries take about 0.25 s to walk here, so 2.5 s between walks), but at least
/// [`MIN_INTERVAL`] (a typical group of a few thousand files is walked in a few ms) and at most 10 s.
pub fn interval(last_walk: Duration) -> Duration {
    (last_walk * 10).clamp(MIN_INTERVAL, Duration::from_secs(10))
}

/// The shortest time between two walks: what a fast writer gets before the first check.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// A thread measuring the folders while the container runs; dropping it stops the thread.
pub struct Watch {
    _stop: Sender<()>,
    over: Receiver<Over>,
}

impl Watch {
    /// Start measuring, first after `first` (the pre-run walk's interval).
    pub fn start(dirs: Vec<PathBuf>, limit: Limit, first: Duration) -> Watch {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (over_tx, over_rx) = mpsc::sync_channel::<Over>(1);
        std::thread::spawn(move || {
            let mut wait = first;
            loop {
                match stop_rx.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let m = measure(&dirs, &limit);
                if let Some(o) = over(&m, &limit) {
                    let _ = over_tx.send(o);
                    return;
                }
                wait = interval(m.took);
            }
        });
        Watch {
            _stop: stop_tx,
            over: over_rx,
        }
    }

    /// The limit was passed (reported once).
    pub fn passed(&self) -> Option<Over> {
        self.over.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(bytes: u64, entries: u64, truncated: bool, error: Option<&str>) -> Measured {
        Measured {
            usage: Usage {
                bytes,
                entries,
                truncated,
            },
            error: error.map(String::from),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn over_table() {
        let l = Limit { mb: 20, files: 100 };
        let cases = [
            (measured(0, 0, false, None), None),
            (measured(20 * MIB, 100, false, None), None),
            (
                measured(20 * MIB + 1, 1, false, None),
                Some(Over::Bytes {
                    used_mb: 21,
                    limit_mb: 20,
                }),
            ),
            (
                measured(0, 101, false, None),
                Some(Over::Files { limit: 100 }),
            ),
            (
                measured(0, 50, true, None),
                Some(Over::Files { limit: 100 }),
            ),
            (
                measured(0, 0, false, Some("x: denied")),
                Some(Over::Unmeasurable("x: denied".into())),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(over(&m, &l), want, "{m:?}");
        }
    }

    #[test]
    fn measure_sums_folders_and_stops_past_the_file_limit() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("sub/f"), vec![1u8; 3 * MIB as usize]).unwrap();
        for i in 0..5 {
            std::fs::write(b.join(i.to_string()), b"x").unwrap();
        }
        let dirs = vec![a, b, t.path().join("missing")];
        let m = measure(&dirs, &Limit { mb: 1, files: 7 });
        assert_eq!(
            (m.usage.entries, m.usage.truncated, &m.error),
            (7, false, &None)
        );
        assert!(m.usage.bytes >= 3 * MIB);
        assert_eq!(
            over(&m, &Limit { mb: 1, files: 7 }),
            Some(Over::Bytes {
                used_mb: m.usage.bytes.div_ceil(MIB),
                limit_mb: 1
            })
        );
        let m = measure(&dirs, &Limit { mb: 100, files: 6 });
        assert_eq!(m.usage.entries, 7, "stops one past the limit");
        assert_eq!(
            over(&m, &Limit { mb: 100, files: 6 }),
            Some(Over::Files { limit: 6 })
        );
    }

    #[test]
    fn interval_is_bounded() {
        assert_eq!(interval(Duration::from_millis(2)), MIN_INTERVAL);
        assert_eq!(
            interval(Duration::from_millis(250)),
            Duration::from_millis(2500)
        );
        assert_eq!(interval(Duration::from_secs(5)), Duration::from_secs(10));
    }

    #[test]
    fn watch_reports_once_the_limit_is_passed() {
        let t = tempfile::tempdir().unwrap();
        let w = Watch::start(
            vec![t.path().to_path_buf()],
            Limit { mb: 1, files: 1000 },
            Duration::from_millis(10),
        );
        assert!(w.passed().is_none());
        std::fs::write(t.path().join("big"), vec![1u8; 2 * MIB as usize]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(o) = w.passed() {
                assert!(matches!(o, Over::Bytes { limit_mb: 1, .. }), "{o:?}");
                break;
            }
            assert!(Instant::now() < deadline, "limit never reported");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
