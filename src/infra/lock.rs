//! Lockfiles (flock via std's `File::lock`). The OS releases them when the holder dies, so a
//! killed step never leaves a stuck lock; that is why no lock is ever kept in the database.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Held {
    _file: File,
    pub path: PathBuf,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lockfile {}", path.display()))
}

/// Take the lock, waiting for it if another process holds it.
pub fn acquire(path: &Path) -> Result<Held> {
    let file = open(path)?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(Held {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Take the lock if it is free right now; `None` when someone else holds it.
pub fn try_acquire(path: &Path) -> Result<Option<Held>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held {
            _file: file,
            path: path.to_path_buf(),
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// True if some process holds the lock now (probes by taking and dropping it).
pub fn is_held(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    Ok(try_acquire(path)?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_try_fails_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = try_acquire(&p).unwrap().expect("free");
        assert!(try_acquire(&p).unwrap().is_none());
        assert!(is_held(&p).unwrap());
        drop(a);
        assert!(try_acquire(&p).unwrap().is_some());
    }
}
