//! End-to-end: the sandbox boundaries hold against a probe that tries to cross them, in a real
//! container started by the real `claw run-group`.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{Env, PROBE_HEAD, probe_report};
use std::io::{Read, Write};
use std::net::TcpListener;

/// Run one group's probe and return its JSON report.
fn run_probe(env: &mut Env, folder: &str, chat: &str, body: &str) -> serde_json::Value {
    env.install_probe(folder, &format!("{PROBE_HEAD}{body}\nfinish\n"));
    env.say(chat, "probe");
    env.claw().args(["run-group", folder]).assert().success();
    probe_report(env, chat)
}

#[test]
fn non_main_group_sees_only_its_own_folder() {
    let mut env = Env::new();
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    env.add_group("tg:2", "beta", &["--no-trigger"]);
    // Markers the probe must not find anywhere in its container.
    std::fs::write(env.group_dir("beta").join("secret.txt"), "MARK-BETA-q7").unwrap();
    std::fs::write(env.root.join("marker.txt"), "MARK-HOME-q7").unwrap();
    env.set_secret("ANTHROPIC_API_KEY", "sk-MARK-KEY-q7");
    std::fs::write(
        &env.allowlist,
        r#"{"allowedRoots":[],"blockedPatterns":["MARK-ALLOW-q7"]}"#,
    )
    .unwrap();
    env.say("tg:2", "MARK-DB-q7 lives in the database");
    let r = run_probe(
        &mut env,
        "alpha",
        "tg:1",
        r#"
M=MARK
hits=$(grep -ral -e "$M-BETA" -e "$M-HOME" -e "$M-DB" -e "$M-KEY" -e "$M-ALLOW" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | grep -v '^/workspace/group/probe.sh$' | tr '\n' ' ')
report hits "$hits"
report env_hits "$( (env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n') | grep -c "MAR[K]-" )"
report workspace "$(ls /workspace | tr '\n' ' ')"
if echo x > /workspace/global/probe-write 2>/dev/null; then report global_write yes; else report global_write no; fi
report global_read "$(head -c 14 /workspace/global/AGENTS.md)"
if echo x > /workspace/group/probe-write 2>/dev/null; then report group_write yes; else report group_write no; fi
"#,
    );
    assert_eq!(r["hits"], "", "markers visible in the container: {r}");
    assert_eq!(r["env_hits"], "0", "{r}");
    assert_eq!(r["global_write"], "no", "non-main wrote global memory: {r}");
    assert_eq!(r["global_read"], "# Shared memor", "{r}");
    assert_eq!(r["group_write"], "yes", "{r}");
    assert!(!env.root.join("groups/global/probe-write").exists());
    assert!(env.group_dir("alpha").join("probe-write").exists());
}

#[test]
fn main_group_can_write_global_memory() {
    let mut env = Env::new();
    let r = run_probe(
        &mut env,
        "main",
        "cli:local",
        r#"if echo main-was-here > /workspace/global/notes.md 2>/dev/null; then report global_write yes; else report global_write no; fi"#,
    );
    assert_eq!(r["global_write"], "yes", "{r}");
    assert_eq!(
        std::fs::read_to_string(env.root.join("groups/global/notes.md")).unwrap(),
        "main-was-here\n"
    );
}

#[test]
fn container_has_no_network_but_the_proxy_socket() {
    let mut env = Env::new();
    // A service on the host's loopback: the container must not reach it.
    let host_srv = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_srv.local_addr().unwrap().port();
    let r = run_probe(
        &mut env,
        "main",
        "cli:local",
        &format!(
            r#"
try() {{ if timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo open; else echo closed; fi; }}
report public "$(try 1.1.1.1 53)"
report host_loopback "$(try 127.0.0.1 {port})"
report gateway_podman "$(try 10.88.0.1 53)"
report gateway_slirp "$(try 10.0.2.2 53)"
report gateway_docker "$(try 172.17.0.1 53)"
report routes "$(tail -n +2 /proc/net/route | wc -l)"
report ifaces "$(ls /sys/class/net | tr '\n' ' ')"
report health "$(curl -s -m 5 --unix-socket /run/claw/proxy.sock http://claw/health)"
"#
        ),
    );
    for k in [
        "public",
        "host_loopback",
        "gateway_podman",
        "gateway_slirp",
        "gateway_docker",
    ] {
        assert_eq!(r[k], "closed", "{k} reachable: {r}");
    }
    assert_eq!(r["routes"], "0", "{r}");
    assert_eq!(r["ifaces"], "lo ", "{r}");
    assert_eq!(r["health"], "ok", "{r}");
}

/// A one-shot HTTP upstream on loopback that records the request head it got.
fn fake_upstream() -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = "{\"upstream\":\"reached\"}";
        write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
        String::from_utf8_lossy(&buf).to_string()
    });
    (base, h)
}

#[test]
fn api_key_reaches_upstream_but_never_the_container() {
    let mut env = Env::new();
    let (base, upstream) = fake_upstream();
    env.anthropic_base = base;
    env.write_config();
    let key = "sk-ant-SECRET-z9x8";
    env.set_secret("ANTHROPIC_API_KEY", key);
    let r = run_probe(
        &mut env,
        "main",
        "cli:local",
        r#"
K=SECRET-z9x8
report llm "$(curl -s -m 10 --unix-socket /run/claw/proxy.sock -X POST http://claw/llm/anthropic/v1/messages -H 'content-type: application/json' -d '{"model":"m"}')"
report fs_hits "$(grep -ral "$K" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | grep -v '^/workspace/group/probe.sh$' | wc -l)"
report proc_hits "$( (env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/[0-9]*/maps 2>/dev/null | tr '\0' '\n') | grep -c "SECRET-z9x[8]")"
"#,
    );
    assert_eq!(r["llm"], "{\"upstream\":\"reached\"}", "{r}");
    assert_eq!(r["fs_hits"], "0", "{r}");
    assert_eq!(r["proc_hits"], "0", "{r}");
    let head = upstream.join().unwrap().to_lowercase();
    assert!(
        head.contains(&format!("x-api-key: {}", key.to_lowercase())),
        "upstream did not get the key: {head}"
    );
    assert!(!env.all_logs().contains(key), "key in a run log");
    let audit: String = env
        .db()
        .query_row("SELECT group_concat(detail, ' ') FROM audit", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!audit.contains(key), "key in the audit table");
    let llm = env.audit("llm.request");
    assert_eq!(llm.len(), 1, "LLM request not audited once: {audit}");
    assert_eq!(llm[0]["status"], 200);
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
fn connect_only_to_allowed_hosts_and_every_attempt_is_audited() {
    let mut env = Env::new();
    let allowed = echo_server();
    let denied = echo_server();
    env.claw()
        .args([
            "group",
            "set",
            "main",
            "--egress",
            &format!("127.0.0.1:{allowed}"),
        ])
        .assert()
        .success();
    let r = run_probe(
        &mut env,
        "main",
        "cli:local",
        &format!(
            r#"
tunnel() {{ python3 - "$1" <<'PY'
import socket, sys
port = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect("/run/claw/proxy.sock")
s.sendall(f"CONNECT 127.0.0.1:{{port}} HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(1)
    if not c: break
    head += c
status = head.split(b" ")[1].decode() if b" " in head else "none"
if status == "200":
    s.sendall(b"ping-through-tunnel"); print("200", s.recv(100).decode())
else:
    print(status)
PY
}}
report allowed "$(tunnel {allowed})"
report denied "$(tunnel {denied})"
"#
        ),
    );
    assert_eq!(r["allowed"], "200 ping-through-tunnel", "{r}");
    assert_eq!(r["denied"], "403", "{r}");
    let denied_rows = env.audit("egress.denied");
    assert!(
        denied_rows.iter().any(|d| d["port"] == denied),
        "denied CONNECT not audited: {denied_rows:?}"
    );
    assert!(
        env.audit("egress.allowed")
            .iter()
            .any(|d| d["port"] == allowed)
    );
}

#[test]
fn extra_mounts_follow_the_allowlist_even_through_symlinks() {
    let mut env = Env::new();
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    let projects = env.dir.path().join("projects");
    std::fs::create_dir_all(projects.join("site")).unwrap();
    std::fs::write(projects.join("site/readme.txt"), "site-readme").unwrap();
    std::fs::create_dir_all(projects.join(".ssh")).unwrap();
    std::fs::write(projects.join(".ssh/id_ed25519"), "PRIVATE-KEY-m3").unwrap();
    std::os::unix::fs::symlink(projects.join(".ssh"), projects.join("innocent")).unwrap();
    std::fs::write(
        &env.allowlist,
        serde_json::json!({"allowedRoots":[{"path": projects, "allowReadWrite": true}]})
            .to_string(),
    )
    .unwrap();
    for spec in [
        format!("{}:site:rw", projects.join("site").display()),
        format!("{}:innocent", projects.join("innocent").display()),
    ] {
        env.claw()
            .args(["group", "set", "alpha", "--mount", &spec])
            .assert()
            .success();
    }
    let r = run_probe(
        &mut env,
        "alpha",
        "tg:1",
        r#"
report extra "$(ls /workspace/extra | tr '\n' ' ')"
report read "$(cat /workspace/extra/site/readme.txt)"
if echo x > /workspace/extra/site/w 2>/dev/null; then report write yes; else report write no; fi
report key_hits "$(grep -ral PRIVATE-KEY / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | grep -v probe.sh | wc -l)"
"#,
    );
    assert_eq!(r["extra"], "site ", "{r}");
    assert_eq!(r["read"], "site-readme", "{r}");
    // The root allows rw, but non-main groups stay read-only unless the allowlist says nonMainReadOnly=false.
    assert_eq!(r["write"], "no", "{r}");
    assert_eq!(r["key_hits"], "0", "{r}");
    let refused = env.audit("mount.refused");
    assert!(
        refused.iter().any(|d| d["name"] == "innocent"),
        "symlinked .ssh mount not refused: {refused:?}"
    );
}

#[test]
fn container_is_unprivileged_and_limited() {
    let mut env = Env::new();
    let r = run_probe(
        &mut env,
        "main",
        "cli:local",
        r#"
report uid "$(id -u)"
report capeff "$(awk '/^CapEff/ {print $2}' /proc/self/status)"
report nnp "$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)"
if touch /usr/probe 2>/dev/null; then report rootfs_write yes; else report rootfs_write no; fi
if touch /tmp/probe 2>/dev/null; then report tmp_write yes; else report tmp_write no; fi
report sleepers "$(python3 -c '
import os, time, signal
kids = []
for i in range(120):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
print(len(kids))
')"
"#,
    );
    assert_ne!(r["uid"], "0", "{r}");
    assert_eq!(r["capeff"], "0000000000000000", "{r}");
    assert_eq!(r["nnp"], "1", "{r}");
    assert_eq!(r["rootfs_write"], "no", "{r}");
    assert_eq!(r["tmp_write"], "yes", "{r}");
    let sleepers: usize = r["sleepers"].as_str().unwrap().parse().unwrap();
    assert!(
        sleepers < 64,
        "pids limit of 64 not enforced: {sleepers} processes started"
    );
}
