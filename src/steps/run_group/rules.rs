//! What a finished run means for the cursor and for retries, as a pure function
//! (docs/ARCHITECTURE.md, "A run, from message to reply", step 6).
//!
//! The cursor only moves past messages the agent finished with: a run that failed before saying
//! anything leaves it where it was and is retried with backoff; output already sent is never
//! repeated; after the last attempt the chat is told, and the messages are let go. A run whose
//! container never started did not fail the messages (the agent never saw them): it is retried,
//! with the delay capped, until the host is fixed, and the messages are never let go.

/// How a run ended, as the container loop observed it.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// The container exited 0 and the agent reported no fatal error.
    pub clean_exit: bool,
    /// Highest seq handed to the agent (None when it got no messages).
    pub handed: Option<i64>,
    /// Highest seq handed before the agent's last result or completed turn.
    pub acked: Option<i64>,
    /// Attempt number of this run (1-based).
    pub attempt: u32,
    /// No container ran (runtime or image missing, preparation failed).
    pub not_started: bool,
}

/// Longest wait between retries of a run that could not start.
pub const NOT_STARTED_MAX_DELAY_MS: i64 = 10 * 60 * 1000;

/// What to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub succeeded: bool,
    /// Move the cursor to this seq (never backwards; the store enforces that too).
    pub cursor_to: Option<i64>,
    /// Failed runs: retry the remaining messages not before this time.
    pub retry_at: Option<i64>,
    /// Give up: tell the chat the request failed.
    pub notify_failure: bool,
}

/// Apply the rules. `base_ms` is the first retry delay; it doubles per attempt.
pub fn verdict(e: &Ending, max_attempts: u32, base_ms: i64, now: i64) -> Verdict {
    if e.clean_exit {
        return Verdict {
            succeeded: true,
            cursor_to: e.handed,
            retry_at: None,
            notify_failure: false,
        };
    }
    let unanswered = match (e.handed, e.acked) {
        (Some(h), Some(a)) => h > a,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !unanswered {
        return Verdict {
            succeeded: false,
            cursor_to: e.acked,
            retry_at: None,
            notify_failure: false,
        };
    }
    if e.not_started {
        let delay = base_ms
            .saturating_mul(1i64 << (e.attempt.saturating_sub(1)).min(20))
            .min(NOT_STARTED_MAX_DELAY_MS);
        return Verdict {
            succeeded: false,
            cursor_to: e.acked,
            retry_at: Some(now + delay),
            notify_failure: false,
        };
    }
    if e.attempt >= max_attempts {
        return Verdict {
            succeeded: false,
            cursor_to: e.handed,
            retry_at: None,
            notify_failure: true,
        };
    }
    let delay = base_ms.saturating_mul(1i64 << (e.attempt.saturating_sub(1)).min(20));
    Verdict {
        succeeded: false,
        cursor_to: e.acked,
        retry_at: Some(now + delay),
        notify_failure: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(clean: bool, handed: Option<i64>, acked: Option<i64>, attempt: u32) -> Ending {
        Ending {
            clean_exit: clean,
            handed,
            acked,
            attempt,
            not_started: false,
        }
    }

    #[test]
    fn success_moves_the_cursor_to_everything_handed() {
        let v = verdict(&ending(true, Some(9), None, 1), 4, 5000, 0);
        assert_eq!(
            v,
            Verdict {
                succeeded: true,
                cursor_to: Some(9),
                retry_at: None,
                notify_failure: false
            }
        );
    }

    #[test]
    fn failure_before_output_keeps_the_cursor_and_backs_off() {
        let v = verdict(&ending(false, Some(9), None, 1), 4, 5000, 100);
        assert_eq!(v.cursor_to, None);
        assert_eq!(v.retry_at, Some(5100));
        assert_eq!(
            verdict(&ending(false, Some(9), None, 3), 4, 5000, 0).retry_at,
            Some(20_000)
        );
    }

    #[test]
    fn failure_after_output_never_repeats_it() {
        let v = verdict(&ending(false, Some(9), Some(9), 1), 4, 5000, 0);
        assert_eq!(v.cursor_to, Some(9));
        assert_eq!(v.retry_at, None);
        // A follow-up handed after the last answer is retried, the answered part is not.
        let v = verdict(&ending(false, Some(12), Some(9), 1), 4, 5000, 0);
        assert_eq!(v.cursor_to, Some(9));
        assert!(v.retry_at.is_some());
    }

    #[test]
    fn last_attempt_gives_up_and_tells_the_chat() {
        let v = verdict(&ending(false, Some(9), None, 4), 4, 5000, 0);
        assert!(v.notify_failure);
        assert_eq!(v.cursor_to, Some(9));
    }

    #[test]
    fn a_run_that_never_started_is_retried_without_giving_up() {
        let mut e = ending(false, Some(7), None, 40);
        e.not_started = true;
        let v = verdict(&e, 4, 5_000, 0);
        assert!(!v.notify_failure && !v.succeeded);
        assert_eq!(v.cursor_to, None, "the messages are kept");
        assert_eq!(v.retry_at, Some(NOT_STARTED_MAX_DELAY_MS));
        e.attempt = 1;
        assert_eq!(verdict(&e, 4, 5_000, 0).retry_at, Some(5_000));
    }
}
