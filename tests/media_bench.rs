//! The media benchmark of issue 13 (run by bin/bench-media; ignored in normal test runs).
//! Prints figures; never fails on them.
//!
//! - ingest of 1,000 Telegram messages each carrying a 64 KiB photo, downloaded from the fake
//!   Bot API on loopback: messages per second and the `claw ingest` process's peak RSS;
//! - the same process's peak RSS for 10 messages carrying 16 MiB documents (streamed to disk, so
//!   it must not grow with the file size);
//! - a voice note from a JSON-lines bridge to its transcript in the stored message, host side,
//!   against a fake transcription endpoint on loopback (median of 5).

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/home.rs"]
mod home;
#[path = "support/rss.rs"]
mod rss;

use fake_telegram::{FakeTelegram, TOKEN};
use home::TestHome;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Instant;

fn setup(fake: &FakeTelegram) -> TestHome {
    let h = TestHome::init().with_log("info");
    h.append_config(&format!(
        "[channels.telegram]\nenabled = true\napi_base = \"{}\"\n",
        fake.base
    ));
    h.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    h.add_group("tg:-100", "family", &[]);
    h
}

fn push_files(fake: &FakeTelegram, n: usize, bytes: usize, field: &str) {
    for i in 0..n {
        let id = format!("f{i}");
        let mut data = vec![0u8; bytes];
        data[..8].copy_from_slice(b"%PDF-1.4");
        fake.add_file(&id, data);
        let file = if field == "photo" {
            json!([{"file_id": id, "width": 640, "height": 480}])
        } else {
            json!({"file_id": id, "file_name": format!("doc{i}.pdf")})
        };
        fake.push(|u| {
            json!({"update_id": u, "message": {"message_id": u, "date": 1_795_255_200 + u,
                "chat": {"id": -100, "type": "supergroup", "title": "Family"},
                "from": {"id": 55, "first_name": "Ana"}, field: file}})
        });
    }
}

fn ingest(h: &TestHome) -> (f64, u64) {
    let t = Instant::now();
    let (code, rss) = rss::run_measured(
        h.claw_std()
            .args(["ingest", "--from", "telegram", "--wait", "0"]),
    );
    assert_eq!(code, Some(0));
    (t.elapsed().as_secs_f64(), rss)
}

#[test]
#[ignore]
fn bench_media() {
    let fake = FakeTelegram::start();
    let h = setup(&fake);
    push_files(&fake, 1000, 64 * 1024, "photo");
    let (secs, rss) = ingest(&h);
    assert_eq!(
        h.count("SELECT count(*) FROM attachments WHERE status = 'ok'"),
        1000
    );
    println!(
        "bench media: 1,000 messages with a 64 KiB photo each: {:.0} msg/s ({:.2} s), peak RSS {:.1} MB",
        1000.0 / secs,
        secs,
        rss as f64 / 1024.0
    );
    drop(fake);

    // Large files come from a server that streams them from disk, so the benchmark process holds
    // no copy (a forked child's peak RSS would otherwise include the parent's pages).
    let dir = tempfile::tempdir().unwrap();
    for (name, mb) in [("small.bin", 0usize), ("large.bin", 64)] {
        let mut f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.write_all(b"%PDF-1.4").unwrap();
        f.set_len((mb * 1024 * 1024).max(64 * 1024) as u64).unwrap();
    }
    let files = dir.path().to_path_buf();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let name = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let Ok(mut f) = std::fs::File::open(files.join(&name)) else {
                continue;
            };
            let len = f.metadata().unwrap().len();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = std::io::copy(&mut f, &mut c);
        }
    });
    let h = TestHome::init().with_log("info");
    h.append_config("[media.max_mb]\ndocument = 100\n");
    h.add_group("sig:+2", "big", &[]);
    for (name, label) in [("small.bin", "64 KiB"), ("large.bin", "64 MiB")] {
        let lines: Vec<String> = (0..5)
            .map(|i| {
                json!({"chat": "sig:+2", "id": format!("{name}{i}"), "sender": "sig:+2", "text": "",
                    "attachments": [{"kind": "document", "url": format!("{base}/{name}")}]})
                .to_string()
            })
            .collect();
        let input = h.path(&format!("{name}.jsonl"));
        std::fs::write(&input, lines.join("\n")).unwrap();
        let t = Instant::now();
        let (code, rss) = rss::run_measured(
            h.claw_std()
                .arg("ingest")
                .stdin(std::fs::File::open(&input).unwrap()),
        );
        assert_eq!(code, Some(0));
        println!(
            "bench media: 5 messages with a {label} document each (streamed download): {:.2} s, peak RSS {:.1} MB",
            t.elapsed().as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
    assert_eq!(
        h.count("SELECT count(*) FROM attachments WHERE status = 'ok'"),
        10
    );

    // Voice note → transcript, host side.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text[..i]
                        .to_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            let body = r#"{"text":"remind me to water the plants"}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let bridge = tempfile::tempdir().unwrap();
    let mut ogg = b"OggS\x00\x02".to_vec();
    ogg.extend_from_slice(&[0u8; 22]);
    ogg.extend_from_slice(b"OpusHead");
    ogg.resize(40 * 1024, 7);
    std::fs::write(bridge.path().join("v.ogg"), &ogg).unwrap();
    let h = TestHome::init().with_log("info");
    h.append_config(&format!(
        "[media]\ningest_roots = [\"{}\"]\n[media.transcription]\nbase_url = \"{base}\"\n",
        bridge.path().display()
    ));
    h.add_group("sig:+1", "v", &[]);
    let mut times = vec![];
    for i in 0..5 {
        let line = json!({"chat": "sig:+1", "id": format!("v{i}"), "sender": "sig:+1", "text": "",
            "attachments": [{"kind": "voice", "path": bridge.path().join("v.ogg")}]});
        let t = Instant::now();
        h.claw()
            .arg("ingest")
            .write_stdin(line.to_string())
            .assert()
            .success();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    assert_eq!(
        h.count("SELECT count(*) FROM messages WHERE text LIKE '[voice transcript]%'"),
        5
    );
    times.sort_by(f64::total_cmp);
    println!(
        "bench media: voice note (40 KiB OGG) to transcript in the stored message: median {:.0} ms per `claw ingest` (whole process)",
        times[2]
    );
}
