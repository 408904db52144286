//! Counted limits shared by the proxy's connection threads: a [`Gate`] hands out units of a fixed
//! capacity (bytes of buffered request bodies, model requests in flight) and takes them back when
//! the [`Permit`] is dropped, so every exit path of a request returns what it held.
//!
//! Waiting is bounded: a request that cannot get its units in time is answered 503 by the caller
//! instead of holding a thread forever.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` requests per second on average, `burst` at once after a quiet spell.
/// [`Pace::wait`] sleeps the caller until its turn, so a client sending faster is slowed down
/// instead of refused, and whatever each request costs downstream (an audit row, a log line)
/// arrives no faster than it can be written.
pub struct Pace {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pace {
    /// A bucket that starts full.
    pub fn new(rate: f64, burst: f64) -> Pace {
        Pace {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, sleeping first if none is left.
    pub fn wait(&self) {
        let delay = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let (tokens, last) = *st;
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            // Going negative books a future token; the sleep below waits for it.
            *st = (refilled - 1.0, now);
            if refilled >= 1.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - refilled) / self.rate)
            }
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

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
    fn pace_allows_a_burst_then_the_rate() {
        let p = Pace::new(100.0, 10.0);
        let t = Instant::now();
        for _ in 0..10 {
            p.wait();
        }
        assert!(t.elapsed() < Duration::from_millis(50), "burst was slowed");
        let t = Instant::now();
        for _ in 0..20 {
            p.wait();
        }
        // 20 more at 100/s take about 200 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
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
