//! Counted limits shared by the proxy's connection threads: a [`Gate`] hands out units of a fixed
//! capacity (bytes of buffered request bodies, model requests in flight) and takes them back when
//! the [`Permit`] is dropped, so every exit path of a request returns what it held.
//!
//! Waiting is bounded: a request that cannot get its units in time is answered 503 by the caller
//! instead of holding a thread forever.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A capacity of `total` units shared by threads.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Units taken from a [`Gate`]; given back on drop.
pub struct Permit {
    inner: Arc<Inner>,
    held: u64,
}

impl Gate {
    /// A gate of `total` units.
    pub fn new(total: u64) -> Gate {
        Gate {
            inner: Arc::new(Inner {
                total,
                used: Mutex::new(0),
                freed: Condvar::new(),
            }),
        }
    }

    /// Takes `n` units, waiting up to `wait` for others to give them back. `None` if they did not
    /// come in time, or if `n` is more than the whole gate (waiting could never help).
    pub fn acquire(&self, n: u64, wait: Duration) -> Option<Permit> {
        let mut permit = Permit {
            inner: Arc::clone(&self.inner),
            held: 0,
        };
        permit.grow(n, wait).then_some(permit)
    }

    /// Units currently taken.
    #[cfg(test)]
    pub fn in_use(&self) -> u64 {
        self.inner.used.lock().map(|u| *u).unwrap_or(0)
    }
}

impl Permit {
    /// Takes `n` more units for this permit, waiting up to `wait`; false if they did not come.
    pub fn grow(&mut self, n: u64, wait: Duration) -> bool {
        let inner = &self.inner;
        if n > inner.total.saturating_sub(self.held) {
            return false;
        }
        let deadline = Instant::now() + wait;
        let Ok(mut used) = inner.used.lock() else {
            return false;
        };
        while *used + n > inner.total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            used = match inner.freed.wait_timeout(used, left) {
                Ok((u, _)) => u,
                Err(_) => return false,
            };
        }
        *used += n;
        self.held += n;
        true
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        if let Ok(mut used) = self.inner.used.lock() {
            *used -= self.held;
        }
        self.inner.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn units_come_back_on_drop() {
        let g = Gate::new(10);
        let a = g.acquire(6, SHORT).expect("6 of 10");
        assert!(g.acquire(5, SHORT).is_none(), "only 4 left");
        let mut b = g.acquire(4, SHORT).expect("4 of 10");
        assert!(!b.grow(1, SHORT), "gate is full");
        drop(a);
        assert!(b.grow(6, SHORT));
        assert_eq!(g.in_use(), 10);
        drop(b);
        assert_eq!(g.in_use(), 0);
    }

    #[test]
    fn more_than_the_gate_is_refused_at_once() {
        let g = Gate::new(10);
        let t = Instant::now();
        assert!(g.acquire(11, Duration::from_secs(30)).is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_waiter_gets_units_when_they_are_freed() {
        let g = Gate::new(1);
        let held = g.acquire(1, SHORT).unwrap();
        let g2 = g.clone();
        let waiter = thread::spawn(move || g2.acquire(1, Duration::from_secs(30)).is_some());
        thread::sleep(SHORT);
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
