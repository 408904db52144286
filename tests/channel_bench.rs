//! The Telegram benchmark (run by bin/bench-telegram; ignored in normal test runs): ingest of
//! 10,000 updates from the fake Bot API and delivery of 1,000 outbox rows, as rows per second
//! and the claw process's peak memory. Prints figures; never fails on them.

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/home.rs"]
mod home;

use fake_telegram::{FakeTelegram, TOKEN};
use home::TestHome;
use serde_json::json;
use std::time::Instant;

/// Run claw to completion; wall time in seconds, peak RSS in MiB, and stdout.
// The child is reaped with wait4 (to read its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn measure(h: &TestHome, args: &[&str]) -> (f64, f64, String) {
    let started = Instant::now();
    let child = h
        .claw_std()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; both pointers are valid for the call.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    // ru_maxrss is KiB on Linux, bytes on macOS.
    let kib = if cfg!(target_os = "macos") {
        usage.ru_maxrss as f64 / 1024.0
    } else {
        usage.ru_maxrss as f64
    };
    (secs, kib / 1024.0, out)
}

#[test]
#[ignore = "benchmark: run bin/bench-telegram"]
fn bench_telegram_ingest_and_delivery() {
    let fake = FakeTelegram::start();
    let h = TestHome::init().with_log("info");
    h.append_config(&format!(
        "[channels.telegram]\nenabled = true\napi_base = \"{}\"\n",
        fake.base
    ));
    h.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    let chats = 20;
    for c in 0..chats {
        h.add_group(&format!("tg:-{}", 1000 + c), &format!("g{c}"), &[]);
    }
    let n = 10_000;
    for i in 0..n {
        let chat = json!({"id": -(1000 + (i % chats)), "type": "supergroup", "title": format!("Group {}", i % chats)});
        fake.push_message(
            chat,
            json!({"id": 500 + i % 37, "first_name": "Ana"}),
            &format!("message number {i} with some ordinary text in it"),
        );
    }
    let (secs, mib, out) = measure(&h, &["ingest", "--from", "telegram", "--wait", "0"]);
    let stored = h.count("SELECT count(*) FROM messages");
    println!(
        "bench telegram ingest: {n} updates in {secs:.2} s = {:.0} rows/s, peak RSS {mib:.1} MiB (stored {stored}; {})",
        n as f64 / secs,
        out.trim()
    );

    let rows = 1_000;
    {
        let home = claw::infra::paths::Home::new(&h.root);
        let store = claw::infra::store::Store::open(&home).unwrap();
        for i in 0..rows {
            claw::infra::store::outbox::enqueue(
                &store.conn,
                &format!("tg:-{}", 1000 + i % chats),
                &format!("**Reply {i}**: the answer is `{i}` & more"),
                "bench",
            )
            .unwrap();
        }
    }
    let (secs, mib, out) = measure(&h, &["deliver", "--channel", "tg"]);
    println!(
        "bench telegram deliver: {rows} rows in {secs:.2} s = {:.0} rows/s, peak RSS {mib:.1} MiB (fake API got {}; {})",
        rows as f64 / secs,
        fake.sent().len(),
        out.trim()
    );
}
