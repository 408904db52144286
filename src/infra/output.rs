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

use comfy_table::Table;
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

/// Make a closed stdout (`claw logs --json | head`) end the process quietly instead of with a
/// panic. Rust ignores SIGPIPE so that run-group's sockets and pipes report errors instead of
/// killing it; the price is that `println!` panics when the reader went away. This hook turns
/// that panic on the main thread (from `println!` or a generator writing to stdout) into a silent
/// exit 0 (the reader had what it wanted) and leaves every other panic to the default hook.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // Only the main thread prints results; a helper thread's panic is never silenced.
        if std::thread::current().name() == Some("main") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Print `rows` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(rows: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(rows)?);
    Ok(())
}

/// Whether our own styling may be used on stdout: only on a terminal, never with `NO_COLOR`.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Print a table the way `gh` and `kubectl` do: a header row, plain columns aligned with two
/// spaces, no box drawing; the header is bold only when [`colour`] allows. Every cell is cleaned
/// (cells may hold untrusted text).
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(header, rows, colour()));
}

fn render_table(header: &[&str], rows: Vec<Vec<String>>, styled: bool) -> String {
    use comfy_table::{Attribute, Cell, ContentArrangement, TableComponent, presets::NOTHING};
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for c in [
        TableComponent::LeftBorder,
        TableComponent::RightBorder,
        TableComponent::VerticalLines,
        TableComponent::LeftHeaderIntersection,
        TableComponent::RightHeaderIntersection,
        TableComponent::HeaderLines,
        TableComponent::MiddleHeaderIntersections,
    ] {
        t.remove_style(c);
    }
    if styled {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t.set_header(
        header
            .iter()
            .map(|h| {
                let c = Cell::new(h);
                if styled {
                    c.add_attribute(Attribute::Bold)
                } else {
                    c
                }
            })
            .collect::<Vec<_>>(),
    );
    for r in rows {
        t.add_row(r.iter().map(|c| clean_line(c)).collect::<Vec<_>>());
    }
    let last = header.len().saturating_sub(1);
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 2 }));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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

    #[test]
    fn tables_are_plain_aligned_columns() {
        let t = render_table(
            &["ID", "NAME", "NOTE"],
            vec![
                vec!["1".into(), "ünïcode".into(), "a\nb".into()],
                vec!["22".into(), "x".into(), "\x1b[31mred".into()],
            ],
            false,
        );
        assert_eq!(
            t,
            "ID  NAME     NOTE\n1   ünïcode  a b\n22  x        [31mred\n"
        );
        assert!(!t.contains('\x1b'));
        let styled = render_table(&["ID"], vec![vec!["1".into()]], true);
        assert!(styled.contains("\x1b[1m"), "{styled:?}");
    }
}
