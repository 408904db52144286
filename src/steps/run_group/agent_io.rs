//! Talking to the agent: one line at a time to its stdin, and its stdout and stderr read with
//! hard bounds, so nothing the agent prints can grow run-group's memory: a protocol line is kept
//! up to [`MAX_PROTOCOL_LINE`] bytes (a longer one is consumed without being stored and reported
//! once with its length), a stderr line up to [`MAX_STDERR_LINE`] (the rest dropped and counted),
//! and the channel to the session loop holds at most [`SLOTS`] events: when it is full the readers
//! stop reading, the pipes fill, and the agent blocks on its own writes.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::SyncSender;

use super::log::RunLog;
use crate::infra::protocol::{AgentLine, HostLine};

/// Longest stdout line parsed as a protocol line (a result text is at most this).
pub const MAX_PROTOCOL_LINE: usize = 1 << 20;
/// Longest stderr line kept for the run log.
pub const MAX_STDERR_LINE: usize = 8 << 10;
/// Events in flight between the readers and the session loop (at most ~1 MiB each).
pub const SLOTS: usize = 8;
/// How much of a non-protocol line is shown in the run log.
const JUNK_SHOWN: usize = 200;

/// What the container printed.
#[derive(Debug)]
pub enum Output {
    /// A protocol line from stdout.
    Line(AgentLine),
    /// A stdout line that is not a protocol line: its start and full length.
    Junk { head: String, len: u64 },
    /// A stdout line over [`MAX_PROTOCOL_LINE`], consumed and dropped.
    Oversized { len: u64 },
    /// A stderr line, cut to [`MAX_STDERR_LINE`]; `dropped` bytes of it were not kept.
    Stderr { text: String, dropped: u64 },
    /// stdout reached end-of-file (or failed): the agent is done talking.
    StdoutClosed,
    /// Not from the agent: new messages were stored for the group (`crate::steps::wake`).
    Wake,
}

/// Write one protocol line to the agent; a closed pipe is logged, not fatal.
pub fn send(stdin: &mut std::process::ChildStdin, line: &HostLine, log: &mut RunLog) {
    if let Err(e) = std::io::Write::write_all(stdin, line.to_line().as_bytes())
        .and_then(|_| std::io::Write::flush(stdin))
    {
        log.line(format!("could not write to the agent's stdin: {e}"));
    }
}

/// Start one thread per stream; both stop when the session loop drops its receiver.
pub fn spawn_readers<O, E>(stdout: O, stderr: E, tx: SyncSender<Output>)
where
    O: Read + Send + 'static,
    E: Read + Send + 'static,
{
    let t1 = tx.clone();
    std::thread::spawn(move || {
        let _ = each_line(stdout, MAX_PROTOCOL_LINE, |kept, len| {
            if len <= MAX_PROTOCOL_LINE as u64 && kept.trim_ascii().is_empty() {
                return true;
            }
            let ev = if len > MAX_PROTOCOL_LINE as u64 {
                Output::Oversized { len }
            } else {
                match serde_json::from_slice::<AgentLine>(kept) {
                    Ok(l) => Output::Line(l),
                    Err(_) => Output::Junk {
                        head: crate::infra::output::clip(
                            &String::from_utf8_lossy(kept),
                            JUNK_SHOWN,
                        ),
                        len,
                    },
                }
            };
            t1.send(ev).is_ok()
        });
        let _ = t1.send(Output::StdoutClosed);
    });
    std::thread::spawn(move || {
        let _ = each_line(stderr, MAX_STDERR_LINE, |kept, len| {
            let dropped = len - kept.len() as u64;
            let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
            let text = String::from_utf8_lossy(kept).into_owned();
            tx.send(Output::Stderr { text, dropped }).is_ok()
        });
    });
}

/// Split a stream into lines, keeping at most `max` bytes of each, and call `f(kept, len)` per
/// line (`len` counts every byte of it, without the newline). Stops when `f` returns false.
/// Newlines are searched by std's `read_until` (vectorised), so a 3 GB line costs little CPU.
pub fn each_line<R: Read>(
    r: R,
    max: usize,
    mut f: impl FnMut(&[u8], u64) -> bool,
) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut kept: Vec<u8> = Vec::new();
    loop {
        kept.clear();
        let n = r
            .by_ref()
            .take(max as u64 + 1)
            .read_until(b'\n', &mut kept)?;
        if n == 0 {
            return Ok(());
        }
        let len = if kept.last() == Some(&b'\n') {
            kept.pop();
            kept.len() as u64
        } else if kept.len() > max {
            kept.truncate(max);
            max as u64 + 1 + skip_line(&mut r)?
        } else {
            // The last line, without a newline.
            kept.len() as u64
        };
        if !f(&kept, len) {
            return Ok(());
        }
    }
}

/// Consume the rest of a line without keeping it; returns its length without the newline.
fn skip_line<R: BufRead>(r: &mut R) -> io::Result<u64> {
    let mut scratch = Vec::with_capacity(64 << 10);
    let mut total = 0u64;
    loop {
        scratch.clear();
        let n = r.by_ref().take(64 << 10).read_until(b'\n', &mut scratch)?;
        if n == 0 {
            return Ok(total);
        }
        if scratch.last() == Some(&b'\n') {
            return Ok(total + n as u64 - 1);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        each_line(input, max, |k, n| {
            out.push((String::from_utf8_lossy(k).into_owned(), n));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_are_cut_at_the_cap_and_counted_whole() {
        assert_eq!(
            lines(b"ab\n\nabcdefgh\nxyz", 4),
            vec![
                ("ab".into(), 2),
                ("".into(), 0),
                ("abcd".into(), 8),
                ("xyz".into(), 3)
            ]
        );
        // A line far longer than the reader's buffer is never held whole.
        let big = vec![b'x'; 300_000];
        let mut input = big.clone();
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input, 10);
        assert_eq!(got, vec![("x".repeat(10), 300_000), ("ok".into(), 2)]);
    }

    #[test]
    fn readers_report_protocol_junk_oversized_and_stderr() {
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"type\":\"idle\"}\n   \nnot json\n");
        out.extend(std::iter::repeat_n(b'z', MAX_PROTOCOL_LINE + 10));
        out.extend_from_slice(b"\n{\"type\":\"result\",\"text\":\"hi\"}\n");
        let mut err = b"plain\r\n".to_vec();
        err.extend(std::iter::repeat_n(b'e', MAX_STDERR_LINE + 100));
        err.push(b'\n');
        let (tx, rx) = std::sync::mpsc::sync_channel(SLOTS);
        spawn_readers(std::io::Cursor::new(out), std::io::Cursor::new(err), tx);
        let mut stdout_events = Vec::new();
        let mut stderr_events = Vec::new();
        for ev in rx {
            match ev {
                Output::Stderr { text, dropped } => stderr_events.push((text.len(), dropped)),
                other => stdout_events.push(format!("{other:?}")),
            }
        }
        assert_eq!(stdout_events.len(), 5, "{stdout_events:?}");
        assert!(stdout_events[0].starts_with("Line(Idle"));
        assert!(stdout_events[1].contains("Junk { head: \"not json\", len: 8 }"));
        assert!(
            stdout_events[2].contains(&format!("Oversized {{ len: {} }}", MAX_PROTOCOL_LINE + 10))
        );
        assert!(stdout_events[3].starts_with("Line(Result"));
        assert_eq!(stdout_events[4], "StdoutClosed");
        assert_eq!(stderr_events, vec![(5, 0), (MAX_STDERR_LINE, 100)]);
    }
}
