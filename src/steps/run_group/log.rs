//! The per-run log under `logs/FOLDER/run-<id>.log`: host-only (an agent cannot edit its own
//! record). Lines are timestamped; nothing written here may contain a secret.
//!
//! Much of what is logged comes from the agent (its stderr, protocol errors, tool details), so the
//! log is bounded and cannot be forged. Every line has its control characters escaped: no `\n` or
//! `\r` can start a line that looks like the host's, and no terminal escape reaches whoever `cat`s
//! the file. And the file stops growing at `limits.run_log_kb`: the head is written up to the cap
//! minus a tail window, the newest lines are then kept in memory within that window, and on close a
//! line says how many lines and bytes were dropped before the tail is written.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The longest line written; longer ones are cut (agent lines are already capped upstream).
pub const MAX_LINE: usize = 16 << 10;

/// An append-only, size-capped run log.
pub struct RunLog {
    file: Option<File>,
    pub path: PathBuf,
    started: Instant,
    /// Bytes the file may reach (the dropped-line and the tail included).
    cap: u64,
    /// Bytes kept for the tail once the head is full.
    tail_window: u64,
    written: u64,
    tail: VecDeque<String>,
    tail_bytes: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// The head is full: new lines go to the tail.
    heading_done: bool,
}

impl RunLog {
    /// Open (append) the log for one run, capped at `cap_bytes`; a log that cannot be opened is
    /// reported on stderr only.
    pub fn open(logs: &Path, folder: &str, run_id: i64, cap_bytes: u64) -> RunLog {
        let dir = logs.join(folder);
        let path = dir.join(format!("run-{run_id}.log"));
        let file = std::fs::create_dir_all(&dir)
            .and_then(|_| OpenOptions::new().create(true).append(true).open(&path))
            .map_err(|e| eprintln!("claw: cannot open run log {}: {e}", path.display()))
            .ok();
        RunLog::with_file(file, path, cap_bytes)
    }

    fn with_file(file: Option<File>, path: PathBuf, cap_bytes: u64) -> RunLog {
        // Dispatch points run-group's own stdout and stderr at this file too: count what is there.
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let cap = cap_bytes.max(4 * MAX_LINE as u64);
        RunLog {
            file,
            path,
            started: Instant::now(),
            cap,
            tail_window: (cap / 4).clamp(2 * MAX_LINE as u64, 256 << 10),
            written,
            tail: VecDeque::new(),
            tail_bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            heading_done: false,
        }
    }

    /// Path of the log a run will use (for dispatch to redirect a child's output into).
    pub fn path_for(logs: &Path, folder: &str, run_id: i64) -> PathBuf {
        logs.join(folder).join(format!("run-{run_id}.log"))
    }

    /// Write one line with wall-clock time and seconds since the run started; control characters
    /// in `text` are escaped.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let text = escape(text.as_ref());
        let mut line = self.stamped(&text);
        if line.len() > MAX_LINE {
            let cut = floor_char_boundary(&line, MAX_LINE);
            let extra = line.len() - cut;
            line.truncate(cut);
            let _ = write!(line, "… ({extra} more bytes cut)");
        }
        line.push('\n');
        tracing::debug!(target: "claw::run", "{}", text);
        self.push(line);
    }

    fn stamped(&self, text: &str) -> String {
        let stamp = chrono::Local::now().format("%H:%M:%S%.3f");
        let el = self.started.elapsed().as_secs_f64();
        format!("{stamp} +{el:.3}s {text}")
    }

    fn push(&mut self, line: String) {
        let n = line.len() as u64;
        if !self.heading_done && self.written + n <= self.cap - self.tail_window {
            if let Some(f) = &mut self.file {
                let _ = f.write_all(line.as_bytes());
            }
            self.written += n;
            return;
        }
        self.heading_done = true;
        self.tail_bytes += n;
        self.tail.push_back(line);
        while self.tail_bytes > self.tail_window {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.len() as u64;
            self.dropped_lines += 1;
            self.dropped_bytes += old.len() as u64;
        }
    }

    /// Write the kept tail (after a line saying what was dropped). Later lines start a new tail.
    pub fn close(&mut self) {
        let note = (self.dropped_lines > 0).then(|| {
            self.stamped(&format!(
                "[claw] … {} lines ({} bytes) dropped here to keep this log under {} KiB; the last {} lines follow\n",
                self.dropped_lines,
                self.dropped_bytes,
                self.cap >> 10,
                self.tail.len()
            ))
        });
        let Some(f) = &mut self.file else {
            self.tail.clear();
            return;
        };
        if let Some(note) = note {
            let _ = f.write_all(note.as_bytes());
            self.written += note.len() as u64;
            self.dropped_lines = 0;
            self.dropped_bytes = 0;
        }
        for l in self.tail.drain(..) {
            let _ = f.write_all(l.as_bytes());
            self.written += l.len() as u64;
        }
        self.tail_bytes = 0;
    }
}

impl Drop for RunLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Escape what could forge a line or drive a terminal: C0 and C1 controls and DEL (`\n`, `\r`,
/// `\t`, `\e` as `\x1b`, …), and the Unicode line separators and bidirectional overrides.
/// Backslashes stay as they are: a literal `\n` typed by the agent starts no line.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let cases = [
            ("plain text", "plain text"),
            ("a\nb", "a\\nb"),
            (
                "a\r12:00:00.000 +0.1s finished",
                "a\\r12:00:00.000 +0.1s finished",
            ),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            ("\x1b[2J", "\\x1b[2J"),
            ("tab\there", "tab\\there"),
            ("del\x7f c1\u{9b}", "del\\x7f c1\\x9b"),
            ("bidi\u{202e}x\u{2028}y", "bidi\\u{202e}x\\u{2028}y"),
            ("literal \\n stays", "literal \\n stays"),
            ("unicode é ✓", "unicode é ✓"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    fn read(log: &RunLog) -> String {
        std::fs::read_to_string(&log.path).unwrap()
    }

    #[test]
    fn small_logs_are_written_whole() {
        let t = tempfile::tempdir().unwrap();
        let mut log = RunLog::open(t.path(), "g", 1, 1 << 20);
        log.line("one");
        log.line("two\nforged");
        drop(log);
        let text = std::fs::read_to_string(t.path().join("g/run-1.log")).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(" two\\nforged\n"));
        assert!(!text.contains("dropped"));
    }

    #[test]
    fn big_logs_keep_head_and_tail_and_say_what_was_dropped() {
        let t = tempfile::tempdir().unwrap();
        let cap = 256 << 10;
        let mut log = RunLog::open(t.path(), "g", 2, cap);
        log.line("first line");
        for i in 0..100_000 {
            log.line(format!("agent: noise {i} {}", "x".repeat(100)));
        }
        log.line("finished: last line");
        log.close();
        let text = read(&log);
        assert!(text.len() as u64 <= cap + 256, "{} > {cap}", text.len());
        assert!(text.len() as u64 > cap / 2);
        assert!(text.lines().next().unwrap().ends_with("first line"));
        assert!(text.trim_end().ends_with("finished: last line"));
        let note = text.lines().find(|l| l.contains("dropped here")).unwrap();
        assert!(
            note.contains("lines (") && note.contains("bytes) dropped"),
            "{note}"
        );
        assert!(text.contains("agent: noise 99999 "));
        // A line larger than MAX_LINE is cut, not dropped whole.
        let huge = "y".repeat(100_000);
        let mut log = RunLog::open(t.path(), "g", 3, cap);
        log.line(&huge);
        drop(log);
        let text = std::fs::read_to_string(t.path().join("g/run-3.log")).unwrap();
        assert!(
            text.len() <= MAX_LINE + 64 && text.contains("more bytes cut"),
            "{}",
            text.len()
        );
    }
}
