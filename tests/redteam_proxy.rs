//! Red team, end to end: a probe in a non-main group's real container attacks the proxy socket
//! the way a prompt-injected agent would, through the real `claw run-group`, and the host is
//! checked afterwards: run-group's peak RSS (from its run log), what reached the fake upstream,
//! what the audit table says, and which CONNECTs got through.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{Env, PROBE_HEAD, probe_report};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// run-group's own peak RSS, as its run log's `finished:` line states it.
fn run_group_peak_kib(env: &Env) -> u64 {
    let logs = env.all_logs();
    let marker = "peak RSS of this run-group ";
    let at = logs
        .rfind(marker)
        .unwrap_or_else(|| panic!("no finished line in the run log:\n{logs}"));
    logs[at + marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of KiB")
}

/// What a fake upstream received.
#[derive(Default)]
struct Seen {
    /// (method, path, JSON body) of each request small enough to keep.
    requests: Mutex<Vec<(String, String, serde_json::Value)>>,
    /// Body bytes received in all.
    bytes: AtomicU64,
    /// Requests being answered now, and the most at once.
    now: AtomicUsize,
    most: AtomicUsize,
}

/// A fake model upstream on loopback: reads each request (keeping bodies under 64 KiB), holds
/// it for `hold`, answers a small JSON message. Serves any number of connections.
fn upstream(hold: Duration) -> (String, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let seen = Arc::clone(&keep);
            std::thread::spawn(move || serve(s, &seen, hold));
        }
    });
    (url, seen)
}

fn serve(s: TcpStream, seen: &Seen, hold: Duration) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut first = String::new();
        if r.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = match r.read(&mut buf[..left.min(64 * 1024)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if body.len() < 64 * 1024 {
                body.extend_from_slice(&buf[..n]);
            }
            left -= n;
        }
        seen.bytes.fetch_add(len as u64, Ordering::SeqCst);
        let n = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most.fetch_max(n, Ordering::SeqCst);
        let mut parts = first.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        seen.requests
            .lock()
            .unwrap()
            .push((method.to_string(), path.to_string(), json));
        std::thread::sleep(hold);
        seen.now.fetch_sub(1, Ordering::SeqCst);
        let reply = br#"{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(reply).is_err() {
            return;
        }
    }
}

/// A non-main group `alpha` whose model upstream is `url`, with keys for both providers.
fn env_for(url: &str) -> Env {
    let mut env = Env::new();
    env.anthropic_base = url.to_string();
    env.openai_base = url.to_string();
    env.timeout_secs = 600;
    env.extra_config = "[model]\nname = \"claude-owner-choice\"\nmax_tokens = 1000\n".into();
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-REDTEAM-k1");
    env.set_secret("OPENAI_API_KEY", "sk-oai-REDTEAM-k2");
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    env
}

/// Runs the probe `body` in alpha's container through `claw run-group` and returns its report.
fn run_probe(env: &mut Env, body: &str) -> serde_json::Value {
    env.install_probe("alpha", &format!("{PROBE_HEAD}{body}\nfinish\n"));
    env.say("tg:1", "probe");
    env.claw().args(["run-group", "alpha"]).assert().success();
    probe_report(env, "tg:1")
}

const FLOOD: &str = r#"
report flood "$(python3 - <<'PY'
import json, selectors, socket, time
SOCK = "/run/claw/proxy.sock"
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(120)
    s.connect(SOCK)
    return s
out = {}
line = b"x-flood: " + b"a" * 60 + b"\r\n"
blob = line * 1000
# (a) chunked trailers: 64 connections each trying to send 16 MiB of trailer lines (1 GiB).
acc = 0
for i in range(64):
    s = conn(); n = 0
    try:
        s.sendall(b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n")
        while n < 16 << 20:
            s.sendall(blob); n += len(blob)
    except OSError:
        pass
    acc += n; s.close()
out["trailer_bytes"] = acc
# (b) 150 parallel connections, each with a valid 4 MiB body (600 MiB in all), one thread.
body = json.dumps({"messages": [{"role": "user", "content": "y" * (4 << 20)}]}).encode()
payload = memoryview(b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
del body
sel = selectors.DefaultSelector()
for i in range(150):
    s = conn(); s.setblocking(False)
    sel.register(s, selectors.EVENT_WRITE, [0, b""])
codes = {}
def done(s, code):
    codes[code] = codes.get(code, 0) + 1
    sel.unregister(s); s.close()
deadline = time.time() + 400
while sel.get_map() and time.time() < deadline:
    for key, ev in sel.select(timeout=5):
        s, st = key.fileobj, key.data
        if ev & selectors.EVENT_WRITE:
            try:
                st[0] += s.send(payload[st[0]:st[0] + 262144])
            except BlockingIOError:
                continue
            except OSError:
                done(s, "write-error"); continue
            if st[0] >= len(payload):
                sel.modify(s, selectors.EVENT_READ, st)
        else:
            try:
                d = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            st[1] += d
            if not d or b"\r\n" in st[1]:
                done(s, st[1][9:12].decode() if len(st[1]) >= 12 else "closed")
out["bodies"] = codes
out["unfinished"] = len(sel.get_map())
# (c) huge heads: 200 connections each trying to send 1 MiB of header lines.
acc = 0
for i in range(200):
    s = conn(); n = 0
    try:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        while n < 1 << 20:
            s.sendall(blob[:65536]); n += 65536
    except OSError:
        pass
    acc += n; s.close()
out["head_bytes"] = acc
print(json.dumps(out))
PY
)"
"#;

#[test]
fn floods_through_the_proxy_leave_run_group_under_64_mib() {
    let (url, seen) = upstream(Duration::ZERO);
    let mut env = env_for(&url);
    let r = run_probe(&mut env, FLOOD);
    let flood: serde_json::Value = serde_json::from_str(r["flood"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("flood report ({e}): {r}\n{}", env.all_logs()));
    let peak = run_group_peak_kib(&env);
    let through = seen.bytes.load(Ordering::SeqCst);
    println!(
        "red team flood: {flood}; upstream received {} MiB; run-group peak RSS {peak} KiB",
        through >> 20
    );
    // The attack really pushed hundreds of MB through the proxy…
    let served = flood["bodies"]["200"].as_u64().unwrap_or(0);
    assert!(
        served >= 100,
        "only {served} of 150 large bodies served: {flood}"
    );
    assert!(through >= 400 << 20, "upstream got {through} bytes");
    // …while trailers and heads were cut off early.
    assert!(
        flood["trailer_bytes"].as_u64().unwrap() < 128 << 20,
        "{flood}"
    );
    assert!(flood["head_bytes"].as_u64().unwrap() < 128 << 20, "{flood}");
    assert!(peak < 64 * 1024, "run-group peak RSS {peak} KiB");
}

const POLICY: &str = r#"
S=/run/claw/proxy.sock
M=http://claw/llm/anthropic/v1/messages
code() { curl -s -o /tmp/out -w '%{http_code}' -m 60 --unix-socket "$S" "$@"; }
report files "$(code http://claw/llm/anthropic/v1/files)"
report delete "$(code -X DELETE http://claw/llm/anthropic/v1/files/file_1)"
report batches "$(code -X POST -d '{"requests":[]}' http://claw/llm/anthropic/v1/messages/batches)"
report models "$(code http://claw/llm/anthropic/v1/models)"
report openai "$(code -X POST -d '{"model":"gpt-4o","messages":[]}' http://claw/llm/openai/v1/chat/completions)"
report openai_msg "$(cat /tmp/out)"
report dup "$(code -X POST -d '{"model":"claude-owner-choice","max_tokens":1,"messages":[],"model":"claude-opus-4-1"}' $M)"
report mcp "$(code -X POST -d '{"messages":[],"mcp_servers":[{"type":"url","url":"https://evil.example/sse","name":"x"}]}' $M)"
report server_tool "$(code -X POST -d '{"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}' $M)"
report url_image "$(code -X POST -d '{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://evil.example/?leak=1"}}]}]}' $M)"
report beta "$(code -X POST -H 'anthropic-beta: files-api-2025-04-14' -d '{"messages":[]}' $M)"
seq 20 | xargs -P 20 -I{} curl -s -o /dev/null -w '%{http_code}\n' -m 120 --unix-socket "$S" -X POST \
  -d '{"model":"claude-opus-4-1","max_tokens":64000,"messages":[{"role":"user","content":"hi"}]}' $M > /tmp/codes
report greedy "$(sort /tmp/codes | uniq -c | tr -s ' ' | tr '\n' ';')"
"#;

#[test]
fn the_model_route_is_locked_to_the_groups_provider_model_and_paths() {
    let (url, seen) = upstream(Duration::from_millis(200));
    let mut env = env_for(&url);
    let r = run_probe(&mut env, POLICY);
    for (k, want) in [
        ("files", "404"),
        ("delete", "404"),
        ("batches", "404"),
        ("models", "404"),
        ("openai", "403"),
        ("dup", "400"),
        ("mcp", "400"),
        ("server_tool", "400"),
        ("url_image", "400"),
        ("beta", "400"),
    ] {
        assert_eq!(r[k], want, "{k}: {r}");
    }
    assert!(
        r["openai_msg"]
            .as_str()
            .unwrap()
            .contains("provider is anthropic"),
        "{r}"
    );
    assert_eq!(r["greedy"], " 20 200;", "{r}");
    // Only the 20 greedy requests reached the upstream, each rewritten to the owner's choice.
    let reqs = seen.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 20, "{reqs:?}");
    for (method, path, body) in &reqs {
        assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/messages"));
        assert_eq!(body["model"], "claude-owner-choice", "{body}");
        assert_eq!(body["max_tokens"], 1000, "{body}");
    }
    let most = seen.most.load(Ordering::SeqCst);
    assert!(
        most <= 4,
        "{most} requests at once upstream (llm_concurrency is 4)"
    );
    let audit = env.audit("llm.request");
    // Repeated identical events share one audit row per run with a `count`.
    let rewritten: i64 = audit
        .iter()
        .filter(|d| d["model_from"] == "claude-opus-4-1" && d["max_tokens_clamped"] == true)
        .map(|d| d["count"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(rewritten, 20, "{audit:?}");
}

/// Runs `claw run-group alpha` in a private mount namespace whose /etc/hosts is `hosts`, so
/// names resolve where the test says without touching the machine's own /etc/hosts.
fn run_group_with_hosts(env: &Env, hosts: &str) {
    let file = env.dir.path().join("hosts");
    std::fs::write(&file, hosts).unwrap();
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#)
        .arg("sh")
        .arg(&file)
        .arg(env!("CARGO_BIN_EXE_claw"))
        .args(["run-group", "alpha"])
        .env("CLAW_HOME", &env.root)
        .env("CLAW_MOUNT_ALLOWLIST", &env.allowlist)
        .env_remove("CLAW_LOG")
        .status()
        .expect("unshare (util-linux) runs");
    assert!(status.success(), "run-group failed:\n{}", env.all_logs());
}

/// An echo server on loopback; returns its port.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn allowlisted_names_that_resolve_inward_are_refused() {
    let (url, _) = upstream(Duration::ZERO);
    let mut env = env_for(&url);
    let port = echo_server();
    // Names the owner allowed, pointing where an attacker with DNS control would point them.
    let names = [
        ("internal.test", "10.0.0.5"),
        ("nas.test", "192.168.1.20"),
        ("cgnat.test", "100.64.0.7"),
        ("metadata.test", "169.254.169.254"),
        ("bridge.test", "10.88.0.1"),
        ("docker.test", "172.17.0.1"),
        ("ula.test", "fd00::2"),
        ("loop.test", "127.0.0.1"),
    ];
    let mut hosts = String::from("127.0.0.1 localhost\n");
    let mut set = env.claw();
    set.args(["group", "set", "alpha"]);
    for (name, ip) in names {
        hosts.push_str(&format!("{ip} {name}\n"));
        set.args(["--egress", &format!("{name}:{port}")]);
    }
    // The same service by its literal IP is the owner's explicit choice and stays allowed.
    set.args(["--egress", &format!("127.0.0.1:{port}")]);
    set.args(["--egress", &format!("localhost:{port}")]);
    set.assert().success();
    let probe = format!(
        r#"
tunnel() {{ python3 - "$1" {port} <<'PY'
import socket, sys
host, port = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect("/run/claw/proxy.sock")
s.sendall(f"CONNECT {{host}}:{{port}} HTTP/1.1\r\n\r\n".encode())
data = b""
while b"\r\n\r\n" not in data:
    c = s.recv(4096)
    if not c: break
    data += c
status = data[9:12].decode()
if status == "200":
    s.sendall(b"ping"); print("200", s.recv(100).decode())
else:
    print(status)
PY
}}
for h in {names} localhost 127.0.0.1; do report "$h" "$(tunnel $h)"; done
"#,
        names = names.map(|(n, _)| n).join(" ")
    );
    env.install_probe("alpha", &format!("{PROBE_HEAD}{probe}\nfinish\n"));
    env.say("tg:1", "probe");
    run_group_with_hosts(&env, &hosts);
    let r = probe_report(&env, "tg:1");
    for (name, _) in names {
        assert_eq!(r[name], "403", "{name} got through: {r}");
    }
    assert_eq!(r["localhost"], "403", "{r}");
    assert_eq!(r["127.0.0.1"], "200 ping", "{r}");
    let denied = env.audit("egress.denied");
    for (name, ip) in names {
        assert!(
            denied
                .iter()
                .any(|d| d["host"] == name && d["reason"].as_str().unwrap().contains(ip)),
            "{name} not audited as refused: {denied:?}"
        );
    }
}

#[test]
fn a_request_flood_is_paced_and_every_request_still_audited() {
    let (url, _) = upstream(Duration::ZERO);
    let mut env = env_for(&url);
    // 8 threads opening connections as fast as they can for 10 s: each request is an event
    // run-group must log and audit, so unpaced they would queue in its memory.
    let r = run_probe(
        &mut env,
        r#"
report n "$(python3 - <<'PY'
import socket, threading, time
N = [0]
def go():
    end = time.time() + 10
    while time.time() < end:
        s = socket.socket(socket.AF_UNIX); s.connect("/run/claw/proxy.sock")
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n"); s.recv(100); s.close(); N[0] += 1
ts = [threading.Thread(target=go) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(N[0])
PY
)"
"#,
    );
    let n: i64 = r["n"].as_str().unwrap().parse().unwrap();
    let rows: i64 = env
        .db()
        .query_row(
            // Identical events share a row per run; its `count` says how many there were.
            "SELECT coalesce(sum(coalesce(json_extract(detail, '$.count'), 1)), 0) FROM audit WHERE kind = 'proxy.local'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let peak = run_group_peak_kib(&env);
    println!("request flood: {n} requests in 10 s, {rows} audit rows, run-group peak {peak} KiB");
    let most = i64::from(
        2 * claw::infra::proxy::REQUESTS_PER_SEC + 11 * claw::infra::proxy::REQUESTS_PER_SEC,
    );
    assert!(n > 100 && n <= most, "{n} requests served in 10 s");
    assert_eq!(rows, n, "every request is audited");
    assert!(peak < 64 * 1024, "run-group peak RSS {peak} KiB");
}
