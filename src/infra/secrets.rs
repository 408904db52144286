//! `secrets.env`: API keys and bot tokens, read by the host only and never mounted.
//!
//! Values are returned to the proxy and channel senders; nothing here may log a value.
//! `claw secret set|rm` rewrite the file through [`set`] and [`remove`]: other lines and comments
//! are kept, the new file is written under a temporary name with mode 0600 and renamed over.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Parsed `KEY=VALUE` lines. Debug output shows names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Read the secrets file; a missing file is empty, a group/world-readable one is refused.
    pub fn load(path: &Path) -> Result<Secrets> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Secrets::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {:o}); fix it with: chmod 600 {}",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Secrets::parse(&text))
    }

    /// Parse `KEY=VALUE` lines; `#` comments, blank lines, `export ` prefixes and quotes allowed.
    pub fn parse(text: &str) -> Secrets {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                if !v.is_empty() {
                    values.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        Secrets { values }
    }

    /// The value of one secret, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Names of the secrets that are set (never values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// Largest secret value accepted (tokens are far smaller; this bounds what stdin can make us hold).
pub const MAX_VALUE: usize = 16 * 1024;

/// Whether a line of the file sets `name`.
fn line_sets(line: &str, name: &str) -> bool {
    let t = line.trim();
    let t = t.strip_prefix("export ").unwrap_or(t);
    t.split_once('=').is_some_and(|(k, _)| k.trim() == name)
}

/// Sets `name` to `value` in the secrets file (created 0600 if missing), replacing earlier lines
/// for it. The value must be one line; it is written single-quoted so [`Secrets::parse`] reads
/// it back exactly.
pub fn set(path: &Path, name: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        bail!("the value for `{name}` is empty; nothing was stored");
    }
    if value.len() > MAX_VALUE {
        bail!("the value for `{name}` is longer than {MAX_VALUE} bytes");
    }
    if value.contains(['\n', '\r', '\0']) {
        bail!("the value for `{name}` must be one line");
    }
    let text = existing(path)?;
    let mut out: String = text
        .lines()
        .filter(|l| !line_sets(l, name))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{name}='{value}'\n"));
    write(path, &out)
}

/// Removes `name` from the secrets file; false if it was not there.
pub fn remove(path: &Path, name: &str) -> Result<bool> {
    let text = existing(path)?;
    if !text.lines().any(|l| line_sets(l, name)) {
        return Ok(false);
    }
    let out: String = text
        .lines()
        .filter(|l| !line_sets(l, name))
        .map(|l| format!("{l}\n"))
        .collect();
    write(path, &out)?;
    Ok(true)
}

/// The current file text, after the same mode check as [`Secrets::load`].
fn existing(path: &Path) -> Result<String> {
    Secrets::load(path)?;
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_quotes_and_export() {
        let s = Secrets::parse("# c\nA=1\nexport B=\"two\"\nC='3'\nEMPTY=\n  D = x \n");
        assert_eq!(s.get("A"), Some("1"));
        assert_eq!(s.get("B"), Some("two"));
        assert_eq!(s.get("C"), Some("3"));
        assert_eq!(s.get("D"), Some("x"));
        assert_eq!(s.get("EMPTY"), None);
        assert!(!format!("{s:?}").contains("two"));
    }

    #[test]
    fn set_and_remove_keep_other_lines_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets.env");
        std::fs::write(&p, "# keys\nA=1\ngithub=old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        set(&p, "github", " 'quoted' \"x\" ").unwrap();
        let s = Secrets::load(&p).unwrap();
        assert_eq!(s.get("github"), Some(" 'quoted' \"x\" "));
        assert_eq!(s.get("A"), Some("1"));
        assert!(std::fs::read_to_string(&p).unwrap().starts_with("# keys\n"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(set(&p, "x", "a\nb").is_err());
        assert!(remove(&p, "github").unwrap());
        assert!(!remove(&p, "github").unwrap());
        assert_eq!(Secrets::load(&p).unwrap().get("github"), None);
    }
}
