//! The proxy's resource bounds, against a real proxy on a Unix socket: a fixed pool of connection
//! threads whatever the number of clients, a cap on tunnels, trailers refused after `MAX_HEAD`,
//! and (in a child process measured with wait4) peak memory under floods of heads, trailers and
//! parallel large bodies. Tests here count this process's threads, so they run one at a time.

#[path = "support/proxy_harness.rs"]
mod harness;
// run_measured waits with wait4 (for the rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
#[path = "support/rss.rs"]
mod rss;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use claw::infra::proxy::{MAX_HEAD, MAX_TUNNELS, POOL_SIZE, ProxyEvent};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads of this process whose name says they belong to a proxy.
fn proxy_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("claw-proxy"))
        .count()
}

/// Polls until `f` holds, for up to WAIT.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Shuts the proxy down and checks its threads end (no leak from one run-group to the next).
fn finish(mut h: Harness) {
    h.proxy.shutdown();
    drop(h);
    eventually("proxy threads to end", || proxy_threads() == 0);
}

#[test]
fn two_hundred_connections_are_served_by_a_fixed_pool() {
    let _one = serial();
    let h = Harness::start("http://127.0.0.1:9", true, &[]);
    eventually("the pool to start", || proxy_threads() == POOL_SIZE);
    // Every client holds its connection open with half a head, so the pool is fully busy.
    let mut clients: Vec<UnixStream> = (0..200)
        .map(|_| {
            let mut s = h.connect();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        proxy_threads(),
        POOL_SIZE,
        "200 clients changed the thread count"
    );
    // Then each finishes its request; all are answered, in turn.
    for s in &mut clients {
        s.write_all(b"\r\n").unwrap();
    }
    for s in clients {
        let (status, _, body) = read_response(s);
        assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    }
    for _ in 0..200 {
        assert!(matches!(h.event(), ProxyEvent::Local { status: 200, .. }));
    }
    assert!(proxy_threads() <= POOL_SIZE + MAX_TUNNELS);
    finish(h);
}

#[test]
fn tunnels_are_capped_and_each_holds_one_helper_thread() {
    let _one = serial();
    let port = echo_server();
    let h = Harness::start("http://127.0.0.1:9", true, &[format!("127.0.0.1:{port}")]);
    let mut open = vec![];
    let mut refused = 0;
    for _ in 0..MAX_TUNNELS + 4 {
        let mut s = h.connect();
        s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply).unwrap();
        match &reply[9..12] {
            b"200" => open.push(s),
            b"503" => {
                let (_, _, body) = read_response_rest(s);
                assert!(body.contains("tunnels are already open"), "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {}", String::from_utf8_lossy(other)),
        }
    }
    assert_eq!((open.len(), refused), (MAX_TUNNELS, 4));
    eventually("helper threads", || {
        proxy_threads() == POOL_SIZE + MAX_TUNNELS
    });
    // The open tunnels still work.
    for s in &mut open {
        let mut back = [0u8; 39 - 12 + 4];
        s.read_exact(&mut back[..39 - 12]).unwrap();
        s.write_all(b"ping").unwrap();
        s.read_exact(&mut back[..4]).unwrap();
        assert_eq!(&back[..4], b"ping");
    }
    drop(open);
    finish(h);
}

/// The rest of a response whose first 12 bytes were read: (status, head, body as text).
fn read_response_rest(mut s: UnixStream) -> (u16, String, String) {
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((&rest, ""));
    (0, head.to_string(), body.to_string())
}

#[test]
fn a_trailer_flood_is_cut_off_after_max_head() {
    let _one = serial();
    let up = Recorder::start();
    let h = Setup::new(&up.url).start();
    let mut s = h.connect();
    let writer = s.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut w = writer;
        let mut sent = 0usize;
        let head =
            b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
            f\r\n{\"messages\":[]}\r\n0\r\n";
        let line = b"x-flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            .repeat(100);
        let mut ok = w.write_all(head).is_ok();
        // Try to push 1 GiB of trailers; the proxy must stop reading long before.
        while ok && sent < 1 << 30 {
            ok = w.write_all(&line).is_ok();
            sent += line.len();
        }
        tx.send((sent, ok)).unwrap();
    });
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 431");
    let (sent, finished) = rx.recv_timeout(WAIT).unwrap();
    assert!(!finished, "the proxy read 1 GiB of trailers");
    assert!(
        sent < MAX_HEAD + (4 << 20),
        "{sent} bytes of trailers accepted before the proxy cut the connection"
    );
    assert!(matches!(h.event(), ProxyEvent::Llm { status: 431, .. }));
    assert!(up.requests().is_empty());
    finish(h);
}

/// Env var that makes `flood_child` run (it is the child of `floods_stay_under_64_mib`).
const CHILD: &str = "CLAW_PROXY_FLOOD_CHILD";

#[test]
fn floods_stay_under_64_mib() {
    let _one = serial();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "flood_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1");
    let (code, peak_kb) = rss::run_measured(&mut cmd);
    assert_eq!(
        code,
        Some(0),
        "the flood child failed; run it alone to see why"
    );
    println!("flood child (proxy, fake upstream and attackers): peak RSS {peak_kb} KiB");
    assert!(
        peak_kb < 64 * 1024,
        "peak RSS {peak_kb} KiB with the proxy under floods"
    );
}

/// An upstream that reads and discards request bodies and answers 200.
fn sink_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let mut left = len - (head.len() - end - 4).min(len);
                    while left > 0 {
                        let want = left.min(buf.len());
                        match s.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                    head.clear();
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// The flood itself, run in a child process so its peak RSS is its own.
#[test]
#[ignore = "child of floods_stay_under_64_mib"]
fn flood_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut h = Setup {
        concurrency: 16,
        requests_per_run: 100_000,
        ..Setup::new(&sink_upstream())
    }
    .start();
    // Drain events as run-group would, so the channel never grows.
    let events = std::mem::replace(&mut h.events, mpsc::channel().1);
    thread::spawn(move || while events.recv().is_ok() {});
    let path = h.proxy.socket_path().to_path_buf();
    let connect = move || UnixStream::connect(&path).unwrap();

    // (a) Trailers: connections that each try to send 64 MiB of trailer lines.
    let line =
        b"x-flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(1000);
    let mut trailer_bytes = 0usize;
    for _ in 0..16 {
        let mut s = connect();
        let _ = s.write_all(
            b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n",
        );
        let mut n = 0;
        while n < 64 << 20 && s.write_all(&line).is_ok() {
            n += line.len();
        }
        trailer_bytes += n;
    }

    // (b) 150 parallel connections, each with a valid 4 MiB body: 600 MiB through the proxy.
    let text = "y".repeat(4 << 20);
    let body: Arc<Vec<u8>> =
        Arc::new(format!(r#"{{"messages":[{{"role":"user","content":"{text}"}}]}}"#).into_bytes());
    drop(text);
    let (tx, rx) = mpsc::channel();
    for _ in 0..150 {
        let (body, tx, mut s) = (Arc::clone(&body), tx.clone(), connect());
        thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let head = format!(
                    "POST /llm/anthropic/v1/messages HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let sent = s.write_all(head.as_bytes()).is_ok() && s.write_all(&body).is_ok();
                let mut status = [0u8; 12];
                let ok = sent && s.read_exact(&mut status).is_ok();
                tx.send(if ok {
                    status[9..12].to_vec()
                } else {
                    b"---".to_vec()
                })
                .unwrap();
            })
            .unwrap();
    }
    drop(tx);
    let statuses: Vec<Vec<u8>> = rx.iter().collect();
    let served = statuses.iter().filter(|s| s.as_slice() == b"200").count();

    // (c) Huge heads: 200 connections each trying to send 1 MiB of header lines.
    let mut head_bytes = 0usize;
    for _ in 0..200 {
        let mut s = connect();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\n");
        let mut n = 0;
        while n < 1 << 20 && s.write_all(&line[..64 * 1024]).is_ok() {
            n += 64 * 1024;
        }
        head_bytes += n;
    }
    println!(
        "flood child: trailers accepted {} KiB over 16 connections; bodies {served}/150 served \
         (others: {:?}); heads accepted {} KiB over 200 connections",
        trailer_bytes >> 10,
        statuses
            .iter()
            .filter(|s| s.as_slice() != b"200")
            .map(|s| String::from_utf8_lossy(s).to_string())
            .collect::<Vec<_>>(),
        head_bytes >> 10
    );
    assert!(
        served >= 100,
        "only {served} of 150 large bodies were served"
    );
}
