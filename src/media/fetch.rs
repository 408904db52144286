//! Where attachment bytes come from: a channel's own download (Telegram, Signal: see
//! `crate::channels`), or for JSON-lines bridges a local path under `media.ingest_roots` or an
//! http(s) URL. Every source hands back a reader; the caller caps what it copies.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AttachmentIn, MediaConfig};

/// Why an attachment could not be opened.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// Known to be over the cap before reading it.
    TooLarge(String),
    Failed(String),
}

/// Something that can open an attachment's bytes.
pub trait Source {
    /// Open the bytes of `a` (the caller stops reading past `cap` bytes).
    fn open(&self, a: &AttachmentIn, cap: u64) -> Result<Box<dyn Read>, Fail>;
}

/// The source for JSON-lines attachments: `path` under an ingest root, or `url`.
pub struct LineSource {
    roots: Vec<PathBuf>,
    home: PathBuf,
    agent: ureq::Agent,
}

impl LineSource {
    /// From `[media]`; `home` is the claw home, from which no file is ever taken.
    pub fn new(cfg: &MediaConfig, home: &Path) -> LineSource {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(cfg.download_timeout_secs.max(1))))
            .max_redirects(3)
            .build()
            .into();
        LineSource {
            roots: cfg
                .ingest_roots
                .iter()
                .filter_map(|r| std::fs::canonicalize(r).ok())
                .collect(),
            home: std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf()),
            agent,
        }
    }
}

impl Source for LineSource {
    fn open(&self, a: &AttachmentIn, cap: u64) -> Result<Box<dyn Read>, Fail> {
        match (&a.path, &a.url) {
            (Some(p), None) => open_path(Path::new(p), &self.roots, &self.home, cap),
            (None, Some(u)) => open_url(&self.agent, u, cap),
            _ => Err(Fail::Failed(
                "an attachment needs exactly one of `path` or `url`".into(),
            )),
        }
    }
}

/// Decide whether a bridge may hand claw the file at `path`: absolute, resolved (symlinks
/// followed) to a place under one of `roots`, and not inside the claw home (which holds the
/// secrets, the database and every agent-writable tree). The reason says what to configure.
pub fn check_path(path: &Path, roots: &[PathBuf], home: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!(
            "attachment path {} must be absolute",
            path.display()
        ));
    }
    if roots.is_empty() {
        return Err(
            "path attachments are off: list the bridge's download folder in media.ingest_roots (claw.toml)"
                .into(),
        );
    }
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("attachment path {}: {e}", path.display()))?;
    if real.starts_with(home) {
        return Err(format!(
            "attachment path {} is inside the claw home; bridges must keep files elsewhere",
            path.display()
        ));
    }
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(format!(
            "attachment path {} is not under any of media.ingest_roots",
            path.display()
        ));
    }
    Ok(real)
}

/// Open a regular file by path after [`check_path`]; refuses FIFOs and devices without
/// blocking, and files already known to be over `cap`.
pub fn open_path(
    path: &Path,
    roots: &[PathBuf],
    home: &Path,
    cap: u64,
) -> Result<Box<dyn Read>, Fail> {
    let real = check_path(path, roots, home).map_err(Fail::Failed)?;
    open_regular_path(&real, cap)
}

/// Open a regular file (never a FIFO or device: `O_NONBLOCK`, then checked on the descriptor).
pub fn open_regular_path(path: &Path, cap: u64) -> Result<Box<dyn Read>, Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Fail::Failed(format!("cannot open {}: {e}", path.display())))?;
    let meta = f
        .metadata()
        .map_err(|e| Fail::Failed(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Fail::Failed(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > cap {
        return Err(Fail::TooLarge(format!(
            "{} is {}, over the {} limit",
            path.display(),
            super::human_size(meta.len()),
            super::human_size(cap)
        )));
    }
    Ok(Box::new(f))
}

/// GET an http(s) URL and return the body as a stream; a `Content-Length` over `cap` is refused
/// before reading. The caller still caps the copy (a server may lie or send no length).
pub fn open_url(agent: &ureq::Agent, url: &str, cap: u64) -> Result<Box<dyn Read>, Fail> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Fail::Failed(format!(
            "attachment URL must be http or https, not {:?}",
            url.chars().take(60).collect::<String>()
        )));
    }
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| Fail::Failed(format!("download failed: {e}")))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(Fail::Failed(format!("download answered HTTP {status}")));
    }
    if let Some(len) = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > cap
    {
        return Err(Fail::TooLarge(format!(
            "the file is {}, over the {} limit",
            super::human_size(len),
            super::human_size(cap)
        )));
    }
    Ok(Box::new(
        resp.into_body()
            .into_with_config()
            .limit(cap.saturating_add(1))
            .reader(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_sit_under_a_root_and_outside_the_home() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("bridge");
        let home = d.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(root.join("a.jpg"), b"x").unwrap();
        std::fs::write(home.join("secrets.env"), b"K=v").unwrap();
        std::os::unix::fs::symlink(home.join("secrets.env"), root.join("link")).unwrap();
        let roots = vec![root.canonicalize().unwrap()];
        let home = home.canonicalize().unwrap();
        assert!(check_path(&root.join("a.jpg"), &roots, &home).is_ok());
        assert!(
            check_path(Path::new("a.jpg"), &roots, &home)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            check_path(&root.join("link"), &roots, &home)
                .unwrap_err()
                .contains("claw home")
        );
        assert!(
            check_path(Path::new("/etc/passwd"), &roots, &home)
                .unwrap_err()
                .contains("not under")
        );
        assert!(
            check_path(&root.join("a.jpg"), &[], &home)
                .unwrap_err()
                .contains("ingest_roots")
        );
        assert!(matches!(
            open_regular_path(&root.join("a.jpg"), 0),
            Err(Fail::TooLarge(_))
        ));
    }
}
