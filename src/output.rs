//! Printing for people and scripts: tables or JSON (chosen by `--json`), and the rule that text
//! from outside (chats, agents, models, files in group folders) is made harmless before it reaches
//! a terminal.
//!
//! Untrusted text may carry terminal control sequences: ESC/CSI to clear the screen or forge
//! colours, OSC 0 to set the window title, OSC 52 to write the owner's clipboard, OSC 8 to plant
//! links, or a carriage return to overwrite what was printed. Every human-readable line that shows
//! such text passes it through [`clean`] (or a table, which cleans every cell). JSON output is not
//! cleaned: serde escapes control characters, so it stays exact and harmless.

use std::borrow::Cow;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

/// Whether a character must never reach a terminal from untrusted text: C0 and C1 controls and
/// DEL (newline and tab are kept by [`clean`]), and the bidirectional overrides that make text
/// read differently from what it is.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Untrusted text made safe to print: control characters (but newline and tab) and bidi
/// overrides are removed. Borrows when there was nothing to remove.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|c| !is_unsafe(*c)).collect())
}

/// Untrusted text for one line (a cell, a name in a notice): cleaned, with newlines and tabs
/// turned into spaces.
pub fn clean_line(s: &str) -> String {
    clean(s)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect()
}

/// Print `rows` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(rows: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(rows)?);
    Ok(())
}

/// Print a table with a header row; every cell is cleaned (cells may hold untrusted text).
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for r in rows {
        t.add_row(r.iter().map(|c| clean(c).into_owned()).collect::<Vec<_>>());
    }
    println!("{t}");
}

/// Shorten text for a table cell or a log line: one line, cleaned, at most `n` characters.
pub fn clip(s: &str, n: usize) -> String {
    let one_line = clean_line(s);
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut c: String = one_line.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_removed() {
        for (dirty, want) in [
            ("plain text", "plain text"),
            ("a\nb\tc", "a\nb\tc"),
            ("\x1b]0;PWNED\x07title", "]0;PWNEDtitle"),
            ("\x1b[2Jclear", "[2Jclear"),
            ("\x1b]52;c;aGk=\x07clip", "]52;c;aGk=clip"),
            (
                "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
                "]8;;http://x\\link]8;;\\",
            ),
            ("over\rwrite", "overwrite"),
            ("c1\u{9b}31m", "c131m"),
            ("del\u{7f}", "del"),
            ("bidi\u{202E}txt.exe", "biditxt.exe"),
            ("ünïcødé ✨", "ünïcødé ✨"),
        ] {
            assert_eq!(clean(dirty), want, "{dirty:?}");
            assert!(!clean(dirty).contains('\x1b'));
        }
        assert!(matches!(clean("fine"), Cow::Borrowed(_)));
        assert_eq!(clean_line("a\nb\x1b[1m\tc"), "a b[1m c");
        assert_eq!(clip("x\x1b]0;t\x07yz", 4), "x]0…");
    }
}
