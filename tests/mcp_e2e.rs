//! MCP end to end, in real containers: real third-party servers from PyPI (`mcp-server-time`,
//! `mcp-server-fetch`) over stdio inside the group's container, a remote server built on the
//! official `mcp` Python SDK over Streamable HTTP on loopback reached only through the host's
//! proxy, and misbehaving servers (hanging, crashing, answering junk, missing) that become tool
//! errors while the run carries on. The model is the scripted fake; each test checks the tool
//! result the agent sent back in the model's next request.
//!
//! The image is the agent image under test plus the Python servers (`bin/mcp-test-image`, built
//! once per test process, FROM `$CLAW_TEST_IMAGE`).

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Recorded, Reply};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The derived image with the MCP servers, built once.
fn mcp_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        e2e::require_image();
        let tag = format!("{}-mcp", e2e::image());
        let out = Command::new(Path::new(ROOT).join("bin/mcp-test-image"))
            .args([e2e::image(), tag.clone()])
            .output()
            .expect("run bin/mcp-test-image");
        assert!(
            out.status.success(),
            "bin/mcp-test-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tag
    })
    .clone()
}

/// A home wired to the fake model, running the MCP image.
fn env_with(llm: &FakeLlm) -> Env {
    let image = mcp_image();
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.extra_config = "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\n".into();
    env.timeout_secs = 120;
    env.write_config();
    let cfg = env.root.join("claw.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        &format!("image = \"{}\"", e2e::image()),
        &format!("image = \"{image}\""),
    );
    std::fs::write(&cfg, text).unwrap();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-mcp-key");
    env
}

/// (content, is_error) of the tool results in a recorded Anthropic request's last message.
fn tool_results(req: &Recorded) -> Vec<(String, bool)> {
    let last = req.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            let content = match &b["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                other => other.to_string(),
            };
            (content, b["is_error"].as_bool().unwrap_or(false))
        })
        .collect()
}

/// Names of the tools offered in a recorded request.
fn offered(req: &Recorded) -> Vec<String> {
    req.body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

fn run_main(env: &Env, llm: &FakeLlm, say: &str, requests: usize) -> Vec<Recorded> {
    env.say("cli:local", say);
    env.claw().args(["run-group", "main"]).assert().success();
    let reqs = llm.wait_for(requests, Duration::from_secs(30));
    assert_eq!(reqs.len(), requests, "logs:\n{}", env.all_logs());
    reqs
}

#[test]
fn third_party_stdio_servers_time_and_fetch_answer_inside_the_container() {
    let llm = FakeLlm::start();
    let env = env_with(&llm);
    // A page on loopback for mcp-server-fetch, reached through the proxy's egress allowlist.
    let page = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = page.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in page.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if req.contains("robots.txt") {
                ("404 Not Found", String::from("no robots"))
            } else {
                ("200 OK", "<html><body><h1>Claw fetch marker 7319</h1><p>served on loopback</p></body></html>".into())
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    env.claw()
        .args([
            "group",
            "set",
            "main",
            "--egress",
            &format!("127.0.0.1:{port}"),
        ])
        .assert()
        .success();
    env.claw()
        .args([
            "mcp",
            "add",
            "main",
            "time",
            "--",
            "mcp-server-time",
            "--local-timezone",
            "Europe/Berlin",
        ])
        .assert()
        .success();
    env.claw()
        .args([
            "mcp",
            "add",
            "main",
            "fetch",
            "--",
            "mcp-server-fetch",
            "--allow-private-ips",
        ])
        .assert()
        .success();
    llm.push(Reply::tool(
        "time__get_current_time",
        json!({"timezone": "Asia/Tokyo"}),
    ));
    llm.push(Reply::tool(
        "fetch__fetch",
        json!({"url": format!("http://127.0.0.1:{port}/page")}),
    ));
    llm.push(Reply::text("It is late in Tokyo."));
    let reqs = run_main(&env, &llm, "what time is it in Tokyo?", 3);
    let tools = offered(&reqs[0]);
    assert!(
        tools.contains(&"time__get_current_time".to_string()),
        "{tools:?}"
    );
    assert!(
        tools.contains(&"time__convert_time".to_string()),
        "{tools:?}"
    );
    assert!(tools.contains(&"fetch__fetch".to_string()), "{tools:?}");
    // The schema came from the server.
    let schema = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "time__get_current_time")
        .unwrap()["input_schema"]
        .clone();
    assert!(schema["properties"]["timezone"].is_object(), "{schema}");
    let time = tool_results(&reqs[1]);
    assert_eq!(time.len(), 1);
    assert!(
        !time[0].1 && time[0].0.contains("Asia/Tokyo") && time[0].0.contains("datetime"),
        "{time:?}"
    );
    let fetched = tool_results(&reqs[2]);
    assert!(
        !fetched[0].1 && fetched[0].0.contains("Claw fetch marker 7319"),
        "{fetched:?}\nlogs:\n{}",
        env.all_logs()
    );
    // The fetch server's request left the container only through the proxy's egress allowlist.
    let egress = env.audit("egress.allowed");
    assert!(
        egress
            .iter()
            .any(|d| d["host"] == "127.0.0.1" && d["port"] == port),
        "{egress:?}"
    );
    assert_eq!(
        env.outbox("cli:local"),
        vec!["It is late in Tokyo.".to_string()]
    );
    assert_eq!(env.last_run("main").0, "succeeded");
}

/// The remote test server, on a free loopback port, until dropped.
struct Remote {
    child: Child,
    port: u16,
}

impl Remote {
    fn start() -> Remote {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .arg(Path::new(ROOT).join("tests/fixtures/mcp/remote_server.py"))
            .arg(port.to_string())
            .env("PYTHONPATH", Path::new(ROOT).join("target/mcp-site/site"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the remote MCP server");
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "remote MCP server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Remote { child, port }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn remote_streamable_http_server_is_reached_only_through_the_proxy() {
    let llm = FakeLlm::start();
    let env = env_with(&llm);
    let remote = Remote::start();
    let url = format!("http://127.0.0.1:{}/mcp", remote.port);
    env.claw()
        .args(["mcp", "add", "main", "remote", "--url", &url])
        .assert()
        .success();
    // `claw mcp tools` runs the container like a real run and lists what the server offers.
    let out = env
        .claw()
        .args(["mcp", "tools", "main", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.all_logs()
    );
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listing["servers"][0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["remote__shout", "remote__add"], "{listing}");

    llm.push(Reply::tool("remote__shout", json!({"text": "hello claw"})));
    llm.push(Reply::tool("remote__add", json!({"a": 40, "b": 2})));
    llm.push(Reply::text("Done."));
    let reqs = run_main(&env, &llm, "shout it", 3);
    let shout = tool_results(&reqs[1]);
    assert!(
        !shout[0].1 && shout[0].0.contains("HELLO CLAW (from the remote server)"),
        "{shout:?}\n{}",
        env.all_logs()
    );
    let sum = tool_results(&reqs[2]);
    assert!(!sum[0].1 && sum[0].0.contains("42"), "{sum:?}");
    // The container never learned the URL; the proxy audited each request to the server.
    assert!(
        !reqs
            .iter()
            .any(|r| r.text().contains(&remote.port.to_string()))
    );
    let audited = env.audit("egress.allowed");
    assert!(
        audited
            .iter()
            .any(|d| d["reason"].as_str().unwrap_or("").contains("mcp `remote`")),
        "{audited:?}"
    );
    assert_eq!(env.outbox("cli:local"), vec!["Done.".to_string()]);
}

#[test]
fn hanging_crashing_junk_and_missing_servers_are_tool_errors_and_the_run_continues() {
    let llm = FakeLlm::start();
    let env = env_with(&llm);
    let script = env.group_dir("main").join("faulty_server.py");
    std::fs::copy(
        Path::new(ROOT).join("tests/fixtures/mcp/faulty_server.py"),
        &script,
    )
    .unwrap();
    for name in ["hangs", "crashes", "junk"] {
        env.claw()
            .args([
                "mcp",
                "add",
                "main",
                name,
                "--timeout",
                "3",
                "--",
                "./faulty_server.py",
            ])
            .assert()
            .success();
    }
    env.claw()
        .args(["mcp", "add", "main", "missing", "--", "no-such-mcp-server"])
        .assert()
        .success();
    // `claw mcp tools` names what is wrong and exits 1; a working server beside it is listed.
    let out = env
        .claw()
        .args(["mcp", "tools", "main", "missing", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["servers"][0]["ok"], false);
    assert!(
        listing["servers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("was not found in the image's PATH or the group folder"),
        "{listing}"
    );
    env.claw()
        .args(["mcp", "tools", "main", "junk"])
        .assert()
        .success()
        .stdout(predicates::str::contains("junk__crash"));
    llm.push(Reply::tool("hangs__hang", json!({})));
    llm.push(Reply::tool("crashes__crash", json!({})));
    llm.push(Reply::tool("crashes__ok", json!({})));
    llm.push(Reply::tool("junk__junk", json!({})));
    llm.push(Reply::tool("junk__ok", json!({})));
    llm.push(Reply::tool("missing__anything", json!({})));
    llm.push(Reply::text("Still here."));
    let started = Instant::now();
    let reqs = run_main(&env, &llm, "try the tools", 7);
    let r = |i: usize| tool_results(&reqs[i])[0].clone();
    let (hang, crash, after_crash, junk, junk_ok, missing) = (r(1), r(2), r(3), r(4), r(5), r(6));
    assert!(
        hang.1 && hang.0.contains("did not answer") && hang.0.contains("3 s"),
        "{hang:?}"
    );
    assert!(crash.1 && crash.0.contains("crashes"), "{crash:?}");
    assert!(
        after_crash.1 && after_crash.0.contains("gone"),
        "{after_crash:?}"
    );
    assert!(junk.1, "{junk:?}");
    // A junk answer does not poison the server: the next call still works, or is a clear error.
    assert!(junk_ok.0.contains("faulty-ok") || junk_ok.1, "{junk_ok:?}");
    assert!(
        missing.1 && missing.0.contains("was not found"),
        "{missing:?}"
    );
    // The missing server is named to the model up front, and its tools are not offered.
    assert!(
        reqs[0]
            .system()
            .contains("MCP server `missing` is unavailable"),
        "{}",
        reqs[0].system()
    );
    assert!(offered(&reqs[0]).contains(&"hangs__hang".to_string()));
    assert_eq!(env.outbox("cli:local"), vec!["Still here.".to_string()]);
    assert_eq!(env.last_run("main").0, "succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
