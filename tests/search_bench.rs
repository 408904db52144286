//! The history search benchmark of issue 14 (run by bin/bench-search; ignored in normal test
//! runs). Prints figures; never fails on them.
//!
//! - search latency over 1,000,000 messages in 100 groups (median and p99 of many queries), for
//!   rare, middling and common words, scoped to one group (what an agent asks) and to all (main);
//! - `claw ingest` rate of 100,000 lines with the index on and off (the FTS5 table replaced by
//!   a plain one, so the insert costs what an unindexed row would);
//! - database size with and without the index.
//!
//! The million messages are written in one transaction through `store::messages::insert` (what
//! ingest calls, index included), from a synthetic vocabulary whose word frequencies follow Zipf's law
//! like real text. Set SEARCH_BENCH_MESSAGES to use fewer.

#[path = "support/home.rs"]
mod home;

use claw::infra::protocol::SearchRequest;
use claw::search::{self, Scope};
use home::TestHome;
use std::time::Instant;

const GROUPS: usize = 100;
const VOCAB: usize = 30_000;

/// xorshift64*: deterministic, fast, good enough for synthetic text.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A word rank with P(rank) ~ 1/rank (log-uniform over 1..VOCAB).
    fn zipf(&mut self) -> usize {
        ((VOCAB as f64).powf(self.unit()) as usize).clamp(1, VOCAB) - 1
    }
}

/// The word of a rank: pronounceable, 2–4 syllables, unique per rank.
fn word(rank: usize) -> String {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut n = rank;
    let mut w = String::new();
    loop {
        w.push(C[n % C.len()] as char);
        n /= C.len();
        w.push(V[n % V.len()] as char);
        n /= V.len();
        if n == 0 && w.len() >= 4 {
            break;
        }
    }
    w
}

fn text(rng: &mut Rng, words: &[String]) -> String {
    let n = 6 + (rng.next() % 15) as usize;
    let mut t = String::new();
    for i in 0..n {
        if i > 0 {
            t.push(' ');
        }
        t.push_str(&words[rng.zipf()]);
    }
    t
}

/// Picks a word rank for a query.
type Pick = fn(&mut Rng) -> usize;

fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn db_bytes(h: &TestHome) -> u64 {
    let c = h.db();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    std::fs::metadata(h.db_path()).unwrap().len()
}

#[test]
#[ignore = "benchmark: run with bin/bench-search"]
fn search_latency_ingest_rate_and_size() {
    let total: usize = std::env::var("SEARCH_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let words: Vec<String> = (0..VOCAB).map(word).collect();
    let h = TestHome::init();
    {
        let mut db = h.db();
        let tx = db.transaction().unwrap();
        for g in 0..GROUPS {
            let chat = format!("tg:-{}", 1000 + g);
            tx.execute(
                "INSERT INTO chats (id, channel, is_group, first_seen, last_activity) VALUES (?1, 'tg', 1, 0, 0)",
                [&chat],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO groups (folder, chat_id, name, trigger, added_at) VALUES (?1, ?2, ?1, '@Andy', 0)",
                [&format!("g{g}"), &chat],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // One transaction of a million inserts, through the store's own insert (which indexes).
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    {
        let mut db = h.db();
        let tx = db.transaction().unwrap();
        let start = claw::infra::time::parse_rfc3339("2025-12-01T00:00:00Z").unwrap();
        for i in 0..total {
            let (chat, id) = (format!("tg:-{}", 1000 + i % GROUPS), format!("m{i}"));
            let (sender, name) = (format!("tg:{}", i % 500), format!("Sender {}", i % 500));
            let body = text(&mut rng, &words);
            claw::infra::store::messages::insert(
                &tx,
                &claw::infra::store::messages::NewMessage {
                    chat_id: &chat,
                    msg_id: &id,
                    sender: &sender,
                    sender_name: &name,
                    text: &body,
                    sent_at: start + (i as i64) * 30_000,
                    from_me: false,
                    is_bot: false,
                    reply_to_id: None,
                    reply_to_sender: None,
                    reply_to_text: None,
                },
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let fill = t.elapsed().as_secs_f64();
    let with_index = db_bytes(&h);
    println!(
        "history: {total} messages in {GROUPS} groups, vocabulary {VOCAB} words (Zipf), 6-20 words each"
    );
    println!(
        "  bulk insert with the index (one transaction): {:.1} s, {:.0} msg/s",
        fill,
        total as f64 / fill
    );

    let store =
        claw::infra::store::Store::open(&claw::infra::paths::Home::new(h.root.clone())).unwrap();
    let conn = &store.conn;
    let group = |g: usize| Scope::Group {
        folder: format!("g{g}"),
        chat_id: format!("tg:-{}", 1000 + g),
    };
    let mut qrng = Rng(42);
    let kinds: [(&str, Pick); 3] = [
        ("rare word (rank 5,000-30,000)", |r| {
            5_000 + (r.next() % 25_000) as usize
        }),
        ("middling word (rank 100-1,000)", |r| {
            100 + (r.next() % 900) as usize
        }),
        ("common word (rank 1-10)", |r| (r.next() % 10) as usize),
    ];
    println!("  search latency (200 queries each, 10 hits with snippets):");
    for (label, pick) in kinds {
        for (scope_label, all) in [("one group", false), ("all groups", true)] {
            let mut times = Vec::new();
            let mut hits = 0;
            for _ in 0..200 {
                let q = words[pick(&mut qrng)].clone();
                let scope = if all {
                    Scope::All
                } else {
                    group((qrng.next() % GROUPS as u64) as usize)
                };
                let req = SearchRequest {
                    query: q,
                    ..Default::default()
                };
                let t = Instant::now();
                let (h, _) = search::run(conn, &scope, &req).unwrap_or_else(|_| panic!("search"));
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                hits += h.len();
            }
            let (med, p99) = median_p99(times);
            println!(
                "    {label:32} {scope_label:10}  median {med:6.2} ms  p99 {p99:7.2} ms  ({:.1} hits/query)",
                hits as f64 / 200.0
            );
        }
    }
    // Two words, as people search: one middling and one rare.
    let mut times = Vec::new();
    for _ in 0..200 {
        let q = format!(
            "{} {}",
            words[100 + (qrng.next() % 900) as usize],
            words[5_000 + (qrng.next() % 25_000) as usize]
        );
        let scope = group((qrng.next() % GROUPS as u64) as usize);
        let t = Instant::now();
        let _ = search::run(
            conn,
            &scope,
            &SearchRequest {
                query: q,
                ..Default::default()
            },
        );
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (med, p99) = median_p99(times);
    println!(
        "    {:32} {:10}  median {med:6.2} ms  p99 {p99:7.2} ms",
        "two words (middling + rare)", "one group"
    );
    drop(store);

    // Size: the same database without the index.
    let without = {
        let copy = h.dir.path().join("noindex.db");
        let c = h.db();
        c.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        let c2 = rusqlite::Connection::open(&copy).unwrap();
        c2.execute_batch(
            "DROP TABLE messages_fts; DROP TABLE outbox_fts; DROP TABLE archives_fts; VACUUM;",
        )
        .unwrap();
        std::fs::metadata(&copy).unwrap().len()
    };
    println!(
        "  database size: {:.0} MiB with the index, {:.0} MiB without: the index adds {:.0}%",
        mib(with_index),
        mib(without),
        (with_index as f64 / without as f64 - 1.0) * 100.0
    );

    // Ingest through `claw ingest`, the index on and off, 100,000 lines into 100 groups.
    let lines: String = (0..100_000)
        .map(|i| {
            format!(
                "{{\"chat\":\"tg:-{}\",\"id\":\"i{i}\",\"sender\":\"tg:{}\",\"sender_name\":\"S\",\"text\":\"{}\",\"time\":\"2026-11-21T10:00:00Z\"}}\n",
                1000 + i % GROUPS,
                i % 97,
                text(&mut rng, &words)
            )
        })
        .collect();
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (k, index) in [true, false].into_iter().enumerate() {
            let fresh = TestHome::init();
            for g in 0..GROUPS {
                let chat = format!("tg:-{}", 1000 + g);
                let db = fresh.db();
                db.execute(
                    "INSERT INTO chats (id, channel, is_group, first_seen, last_activity) VALUES (?1, 'tg', 1, 0, 0)",
                    [&chat],
                )
                .unwrap();
                db.execute(
                    "INSERT INTO groups (folder, chat_id, name, trigger, added_at) VALUES (?1, ?2, ?1, '@Andy', 0)",
                    [&format!("g{g}"), &chat],
                )
                .unwrap();
            }
            if !index {
                fresh
                    .db()
                    .execute_batch(
                        "DROP TABLE messages_fts; CREATE TABLE messages_fts (messages_fts, rowid, text);",
                    )
                    .unwrap();
            }
            let t = Instant::now();
            fresh.ingest(&lines).success();
            let secs = t.elapsed().as_secs_f64();
            rates[k].push(100_000.0 / secs);
            let _ = round;
        }
    }
    let med = |v: &Vec<f64>| median_p99(v.clone()).0;
    println!(
        "  claw ingest, 100,000 lines, median of 3: index on {:.0} msg/s, off {:.0} msg/s (target >= 50000 with the index)",
        med(&rates[0]),
        med(&rates[1])
    );
}
