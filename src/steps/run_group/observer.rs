//! `claw chat`'s live view of a run: what run-group passes on of the agent's lines.

use std::sync::mpsc::{SyncSender, TrySendError};

use crate::infra::protocol::AgentLine;

/// `claw chat`'s live view of the agent: a bounded channel that never blocks the run. Progress
/// is dropped when the viewer falls behind; an `idle` that did not fit is retried every tick
/// (the viewer needs it to end a turn). Only what the view shows is sent, clipped.
#[derive(Default)]
pub struct Observer {
    tx: Option<SyncSender<AgentLine>>,
    idle_owed: Option<AgentLine>,
}

impl Observer {
    /// A view, or none.
    pub fn new(tx: Option<SyncSender<AgentLine>>) -> Observer {
        Observer {
            tx,
            idle_owed: None,
        }
    }

    /// Pass on what the view shows of one agent line.
    pub fn see(&mut self, line: &AgentLine) {
        let Some(tx) = &self.tx else { return };
        let shown = match line {
            AgentLine::Progress { tool, detail } => AgentLine::Progress {
                tool: crate::infra::output::clip(tool, 100),
                detail: crate::infra::output::clip(detail, 200),
            },
            AgentLine::Error { message, fatal } => AgentLine::Error {
                message: crate::infra::output::clip(message, 1000),
                fatal: *fatal,
            },
            AgentLine::Idle { usage } => {
                self.idle_owed = Some(AgentLine::Idle { usage: *usage });
                self.retry();
                return;
            }
            // The view reads results from the outbox.
            _ => return,
        };
        if let Err(TrySendError::Disconnected(_)) = tx.try_send(shown) {
            self.tx = None;
        }
    }

    /// Try again to deliver an `idle` that did not fit (called every tick).
    pub fn retry(&mut self) {
        let (Some(tx), Some(idle)) = (&self.tx, self.idle_owed.take()) else {
            return;
        };
        match tx.try_send(idle) {
            Ok(()) => {}
            Err(TrySendError::Full(idle)) => self.idle_owed = Some(idle),
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(n: usize) -> AgentLine {
        AgentLine::Progress {
            tool: "bash".into(),
            detail: format!("{n} {}", "x".repeat(10_000)),
        }
    }

    #[test]
    fn a_lagging_view_loses_progress_not_idle_and_gets_clipped_lines() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut o = Observer::new(Some(tx));
        for n in 0..100 {
            o.see(&progress(n));
        }
        o.see(&AgentLine::Idle { usage: None });
        o.see(&AgentLine::Result {
            text: "not for the view".into(),
        });
        let first: Vec<AgentLine> = rx.try_iter().collect();
        assert_eq!(first.len(), 2, "bounded");
        match &first[0] {
            AgentLine::Progress { detail, .. } => assert!(detail.chars().count() <= 200),
            other => panic!("{other:?}"),
        }
        // The idle that did not fit arrives once there is room.
        o.retry();
        assert_eq!(rx.try_recv().unwrap(), AgentLine::Idle { usage: None });
        o.retry();
        assert!(rx.try_recv().is_err());
    }
}
