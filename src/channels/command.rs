//! The `command` channel: any program that takes one JSON line on stdin and exits 0 once the
//! message was accepted. This is how WhatsApp, Signal, Matrix or email bridges in any language
//! plug in without claw knowing their protocol.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Outcome, Sender};

/// How long one send may take before it is killed and retried.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends by running a configured argv once per message.
pub struct CommandSender {
    argv: Vec<String>,
    /// Relative program paths are resolved against the claw home.
    base: PathBuf,
}

impl CommandSender {
    /// A sender for `argv` (program first).
    pub fn new(argv: Vec<String>, base: PathBuf) -> CommandSender {
        CommandSender { argv, base }
    }
}

impl Sender for CommandSender {
    fn send(&mut self, outbox_id: i64, chat_id: &str, text: &str) -> Outcome {
        let mut line =
            serde_json::json!({"id": outbox_id, "chat": chat_id, "text": text}).to_string();
        line.push('\n');
        let program = {
            let p = PathBuf::from(&self.argv[0]);
            if p.is_relative() && self.argv[0].contains('/') {
                self.base.join(p)
            } else {
                p
            }
        };
        let started = duct::cmd(program, &self.argv[1..])
            .stdin_bytes(line)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start();
        let handle = match started {
            Ok(h) => h,
            Err(e) => return failed(format!("cannot start send command {}: {e}", self.argv[0])),
        };
        let deadline = Instant::now() + SEND_TIMEOUT;
        loop {
            match handle.try_wait() {
                Ok(Some(out)) => {
                    if out.status.success() {
                        let id = String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .next()
                            .map(|l| l.trim().chars().take(200).collect::<String>());
                        return Outcome::Sent(id.filter(|s| !s.is_empty()));
                    }
                    let mut err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    if err.len() > 500 {
                        err = err
                            .chars()
                            .rev()
                            .take(500)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                    }
                    return failed(format!("send command exited with {}: {err}", out.status));
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = handle.kill();
                    return failed(format!(
                        "send command took over {}s and was killed",
                        SEND_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return failed(format!("send command failed: {e}")),
            }
        }
    }
}

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        error,
        retry_after_ms: None,
    }
}
