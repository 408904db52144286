//! `secrets.env`: API keys and bot tokens, read by the host only and never mounted.
//!
//! Values are returned to the proxy and channel senders; nothing here may log a value.

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
}
