//! Proxy audit rows, aggregated per run. An agent can make thousands of proxy requests, most of
//! them alike (the same model route, the same refused host); a row each would grow the audit table
//! without bound. So each distinct event gets one row: its kind and its detail without the counters
//! (provider or host, port, status, allowed or denied, the LLM path and model, the reason, …) are
//! the key; the row is written when the event first happens (at the session loop's next tick),
//! and its `count` and summed counters (`bytes_*`, `*_tokens`, `*_ms`) are brought up to date
//! every [`FLUSH_EVERY`] and when the run ends. Past [`MAX_KEYS`] distinct events in one run, one
//! `"other": true` row per kind counts the rest.
//!
//! The events are merged by the thread that receives them from the proxy, so they never queue up
//! behind a busy session loop: memory is bounded by the key cap, whatever the agent does. Events
//! are taken as `sandbox::proxy_audit` renders them (kind, detail JSON), not by their enum shape.

use anyhow::Result;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::log::RunLog;
use crate::infra::proxy::ProxyEvent;
use crate::infra::store::audit;

/// Distinct events with a row of their own per run.
pub const MAX_KEYS: usize = 256;
/// Kinds with an "other" row of their own; any further kind shares one.
const MAX_OTHER_KINDS: usize = 16;
/// How often counts reach the rows while the run goes on.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// The run's aggregated proxy events; clones share them.
#[derive(Clone)]
pub struct Rows {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    index: HashMap<String, usize>,
    buckets: Vec<Bucket>,
    last_flush: Instant,
}

struct Bucket {
    kind: String,
    /// The first event's detail without its counters.
    base: Map<String, Value>,
    count: u64,
    sums: BTreeMap<String, u64>,
    row: Option<i64>,
    /// Counted since the row was last written.
    dirty: bool,
    last_at: i64,
}

impl Bucket {
    fn detail(&self) -> Value {
        let mut d = self.base.clone();
        for (k, v) in &self.sums {
            d.insert(k.clone(), Value::from(*v));
        }
        d.insert("count".into(), Value::from(self.count));
        if self.count > 1 {
            d.insert("last_at".into(), Value::from(self.last_at));
        }
        Value::Object(d)
    }
}

/// A field that adds up over requests rather than telling them apart.
fn is_counter(name: &str, v: &Value) -> bool {
    v.is_u64()
        && (name.starts_with("bytes")
            || name.ends_with("_ms")
            || (name.ends_with("tokens") && !name.starts_with("max_")))
}

impl Default for Rows {
    fn default() -> Self {
        Rows::new()
    }
}

impl Rows {
    /// No events yet.
    pub fn new() -> Rows {
        Rows {
            inner: Arc::new(Mutex::new(Inner {
                index: HashMap::new(),
                buckets: Vec::new(),
                last_flush: Instant::now(),
            })),
        }
    }

    /// Merge the proxy's events as they come, on a thread of their own, until the proxy's side of
    /// the channel closes; the returned channel then says so.
    pub fn merge_from(&self, events: Receiver<ProxyEvent>) -> Receiver<()> {
        let rows = self.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for e in events {
                let (kind, detail) = super::sandbox::proxy_audit(&e);
                rows.add(kind, detail);
            }
            let _ = done_tx.send(());
        });
        done_rx
    }

    /// Count one event.
    pub fn add(&self, kind: &str, detail: Value) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let mut base = match detail {
            Value::Object(m) => m,
            other => Map::from_iter([("detail".to_string(), other)]),
        };
        let mut counters = BTreeMap::new();
        base.retain(|k, v| {
            if is_counter(k, v) {
                counters.insert(k.clone(), v.as_u64().unwrap_or(0));
                false
            } else {
                true
            }
        });
        // serde_json's map is ordered, so equal details print equally.
        let mut key = format!("{kind} {}", Value::Object(base.clone()));
        let mut kind = kind;
        if !inner.index.contains_key(&key) && inner.index.len() >= MAX_KEYS {
            let other_kinds = inner
                .buckets
                .iter()
                .filter(|b| b.base.contains_key("other"))
                .count();
            if !inner.index.contains_key(&format!("other {kind}")) && other_kinds >= MAX_OTHER_KINDS
            {
                kind = "proxy.other";
            }
            key = format!("other {kind}");
            base = Map::from_iter([
                ("other".to_string(), Value::Bool(true)),
                (
                    "note".to_string(),
                    Value::from(format!(
                        "more than {MAX_KEYS} distinct proxy events in this run; the rest are counted here"
                    )),
                ),
            ]);
        }
        let now = crate::infra::time::now_ms();
        let i = match inner.index.get(&key) {
            Some(i) => *i,
            None => {
                let i = inner.buckets.len();
                inner.buckets.push(Bucket {
                    kind: kind.to_string(),
                    base,
                    count: 0,
                    sums: BTreeMap::new(),
                    row: None,
                    dirty: false,
                    last_at: now,
                });
                inner.index.insert(key, i);
                i
            }
        };
        let b = &mut inner.buckets[i];
        b.count += 1;
        b.last_at = now;
        b.dirty = true;
        for (k, v) in counters {
            let s = b.sums.entry(k).or_insert(0);
            *s = s.saturating_add(v);
        }
    }

    /// Write rows for new events, and the totals of counted ones when [`FLUSH_EVERY`] has passed
    /// or `flush` is set (the run's end).
    pub fn write(
        &self,
        conn: &rusqlite::Connection,
        folder: &str,
        run_id: i64,
        log: &mut RunLog,
        flush: bool,
    ) -> Result<()> {
        // Collect under the lock, write outside it: the proxy side never waits on SQLite.
        let (fresh, totals) = {
            let Ok(mut inner) = self.inner.lock() else {
                return Ok(());
            };
            let flush = flush || inner.last_flush.elapsed() >= FLUSH_EVERY;
            if flush {
                inner.last_flush = Instant::now();
            }
            let mut fresh = Vec::new();
            let mut totals = Vec::new();
            for (i, b) in inner.buckets.iter_mut().enumerate() {
                match b.row {
                    None => fresh.push((i, b.kind.clone(), b.detail())),
                    Some(row) if flush && b.dirty => totals.push((row, b.kind.clone(), b.detail())),
                    _ => continue,
                }
                b.dirty = false;
            }
            (fresh, totals)
        };
        for (i, kind, detail) in fresh {
            log.line(format!("proxy: {kind} {detail}"));
            let row = audit::insert(conn, Some(folder), Some(run_id), &kind, &detail)?;
            if let Ok(mut inner) = self.inner.lock() {
                inner.buckets[i].row = Some(row);
            }
        }
        for (row, kind, detail) in totals {
            if flush {
                log.line(format!("proxy: {kind} so far {detail}"));
            }
            audit::set_detail(conn, row, &detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, folder TEXT,
             run_id INTEGER, kind TEXT NOT NULL, detail TEXT NOT NULL);",
        )
        .unwrap();
        c
    }

    fn rows(c: &rusqlite::Connection) -> Vec<(String, Value)> {
        let mut st = c
            .prepare("SELECT kind, detail FROM audit ORDER BY id")
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                serde_json::from_str(&r.get::<_, String>(1)?).unwrap(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn repeated_events_share_a_row_with_counts_and_bytes() {
        let c = db();
        let t = tempfile::tempdir().unwrap();
        let mut log = RunLog::open(t.path(), "g", 1, 1 << 20);
        let r = Rows::new();
        let llm = |status: u16, up: u64| {
            json!({"provider": "anthropic", "method": "POST", "path": "/v1/messages", "model": "m",
                   "status": status, "bytes_up": up, "bytes_down": 10, "max_tokens": 4096})
        };
        r.add("llm.request", llm(200, 100));
        r.write(&c, "g", 1, &mut log, false).unwrap();
        let got = rows(&c);
        assert_eq!(got.len(), 1, "first occurrence written at once");
        assert_eq!(got[0].1["bytes_up"], 100);
        assert_eq!(got[0].1["count"], 1);
        for _ in 0..999 {
            r.add("llm.request", llm(200, 100));
        }
        r.add("llm.request", llm(429, 5));
        r.add("egress.denied", json!({"host": "10.0.0.1", "port": 443, "reason": "private", "bytes_up": 0, "bytes_down": 0}));
        r.write(&c, "g", 1, &mut log, false).unwrap();
        assert_eq!(
            rows(&c).len(),
            3,
            "new keys written, counts not yet flushed"
        );
        assert_eq!(rows(&c)[0].1["count"], 1);
        r.write(&c, "g", 1, &mut log, true).unwrap();
        let got = rows(&c);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1["count"], 1000);
        assert_eq!(got[0].1["bytes_up"], 100_000);
        assert_eq!(got[0].1["max_tokens"], 4096, "not a counter");
        assert_eq!(got[0].1["status"], 200);
        assert_eq!(
            (got[1].1["status"].clone(), got[1].1["count"].clone()),
            (json!(429), json!(1))
        );
        assert_eq!(got[2].0, "egress.denied");
        assert_eq!(got[2].1["port"], 443);
    }

    #[test]
    fn distinct_keys_are_capped_with_an_other_row_per_kind() {
        let c = db();
        let t = tempfile::tempdir().unwrap();
        let mut log = RunLog::open(t.path(), "g", 1, 1 << 20);
        let r = Rows::new();
        for i in 0..10_000 {
            r.add(
                "egress.denied",
                json!({"host": format!("h{i}.example"), "port": 443, "bytes_up": 1}),
            );
        }
        r.add("llm.request", json!({"path": "/v1/new", "status": 200}));
        r.write(&c, "g", 1, &mut log, true).unwrap();
        let got = rows(&c);
        assert_eq!(got.len(), MAX_KEYS + 2);
        let others: Vec<_> = got.iter().filter(|(_, d)| d["other"] == true).collect();
        assert_eq!(others.len(), 2);
        assert_eq!(others[0].0, "egress.denied");
        assert_eq!(others[0].1["count"], 10_000 - MAX_KEYS as u64);
        assert_eq!(others[0].1["bytes_up"], 10_000 - MAX_KEYS as u64);
        assert_eq!(others[1].0, "llm.request");
    }
}
