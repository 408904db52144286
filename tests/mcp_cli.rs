//! `claw mcp add|list|rm` against a real home, and the IPC request `add_mcp_server`: refused at
//! once when malformed, otherwise held for the owner's approval, applied only when approved,
//! always audited.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use predicates::str::contains;
use serde_json::Value;

fn list_json(h: &TestHome, group: Option<&str>) -> Vec<Value> {
    let mut c = h.claw();
    c.args(["mcp", "list", "--json"]);
    if let Some(g) = group {
        c.arg(g);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[test]
fn add_list_rm_with_clear_errors() {
    let h = TestHome::init();
    h.claw()
        .args([
            "mcp",
            "add",
            "main",
            "time",
            "--timeout",
            "20",
            "--",
            "mcp-server-time",
            "--local-timezone",
            "UTC",
        ])
        .assert()
        .success()
        .stdout(contains("added MCP server `time`"));
    h.claw()
        .args([
            "mcp",
            "add",
            "main",
            "gh",
            "--url",
            "https://api.example.com/mcp",
        ])
        .assert()
        .success();
    let all = list_json(&h, None);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["command"], "mcp-server-time");
    assert_eq!(
        all[0]["args"],
        serde_json::json!(["--local-timezone", "UTC"])
    );
    assert_eq!(all[0]["timeout_secs"], 20);
    assert_eq!(all[1]["url"], "https://api.example.com/mcp");
    h.claw()
        .args(["mcp", "list", "main"])
        .assert()
        .success()
        .stdout(contains("mcp-server-time --local-timezone UTC"))
        .stdout(contains("https://api.example.com/mcp"));
    // The file is the owner's only (it may name placeholders and URLs).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.root.join("mcp.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Errors say what to do and exit 2.
    let cases: &[(&[&str], &str)] = &[
        (
            &["mcp", "add", "main", "time", "--", "x"],
            "already has an MCP server `time`",
        ),
        (
            &["mcp", "add", "main", "Bad_Name", "--", "x"],
            "is not allowed",
        ),
        (
            &["mcp", "add", "main", "web", "--url", "ftp://h/x"],
            "must start with http",
        ),
        (
            &["mcp", "add", "main", "web", "--url", "https://u:p@h/x"],
            "user name or password",
        ),
        (&["mcp", "add", "main", "web"], "give the server"),
        (
            &["mcp", "add", "nosuch", "web", "--", "x"],
            "no group `nosuch`",
        ),
        (&["mcp", "rm", "main", "nope"], "has no MCP server `nope`"),
        (
            &["mcp", "add", "main", "e", "--env", "NOEQUALS", "--", "x"],
            "is not NAME=VALUE",
        ),
    ];
    for (args, msg) in cases {
        h.claw().args(*args).assert().code(2).stderr(contains(*msg));
    }
    h.claw()
        .args(["mcp", "add", "main", "time", "--replace", "--", "other-cmd"])
        .assert()
        .success();
    assert_eq!(list_json(&h, Some("main"))[0]["command"], "other-cmd");
    h.claw()
        .args(["mcp", "rm", "main", "time"])
        .assert()
        .success();
    assert_eq!(list_json(&h, None).len(), 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit WHERE kind = 'mcp.added'"),
        3
    );

    // A broken hand edit is refused with the file named, not half-used.
    std::fs::write(
        h.root.join("mcp.toml"),
        "[[server]]\ngroup = \"main\"\nname = \"x\"\n",
    )
    .unwrap();
    h.claw()
        .args(["mcp", "list"])
        .assert()
        .code(3)
        .stderr(contains("mcp.toml"))
        .stderr(contains("exactly one of a command"));
}

fn write_request(h: &TestHome, folder: &str, stem: &str, body: &str) {
    let dir = h.root.join("ipc").join(folder).join("tasks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{stem}.json")), body).unwrap();
}

#[test]
fn ipc_add_mcp_server_waits_for_the_owner_and_only_what_was_approved_is_added() {
    let h = TestHome::init();
    h.ingest(&home::line("tg:-200", "1", "tg:5", "hi"))
        .success();
    h.add_group("tg:-200", "fam", &[]);
    write_request(
        &h,
        "main",
        "1-1-0",
        r#"{"type":"add_mcp_server","name":"time","folder":"fam","command":"mcp-server-time","args":["--local-timezone","UTC"],"reason":"the family asks for times abroad"}"#,
    );
    write_request(
        &h,
        "fam",
        "2-1-0",
        r#"{"type":"add_mcp_server","name":"evil","url":"https://attacker.example/mcp"}"#,
    );
    write_request(
        &h,
        "main",
        "3-1-0",
        r#"{"type":"add_mcp_server","name":"bad name","command":"x"}"#,
    );
    // The malformed one is refused at once (exit 4); the other two wait, each with a card.
    h.claw().arg("ipc-apply").assert().code(4);
    assert!(list_json(&h, None).is_empty());
    let asked: Vec<(i64, String)> = {
        let db = h.db();
        let mut st = db
            .prepare("SELECT id, folder FROM approvals WHERE kind = 'add_mcp_server' ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(asked.len(), 2, "{asked:?}");
    let id_of = |f: &str| asked.iter().find(|(_, g)| g == f).unwrap().0.to_string();
    let cards = h.count(
        "SELECT count(*) FROM outbox WHERE origin LIKE 'approval:%' OR text LIKE 'Approval %'",
    );
    assert!(cards >= 2, "{cards} cards");
    // Still waiting: a second pass asks nobody again and adds nothing.
    h.claw().arg("ipc-apply").assert().success();
    assert_eq!(h.count("SELECT count(*) FROM approvals"), 2);
    h.claw()
        .args(["approve", &id_of("main")])
        .assert()
        .success();
    h.claw().args(["deny", &id_of("fam")]).assert().success();
    h.claw().arg("ipc-apply").assert().code(4);
    let servers = list_json(&h, None);
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["group"], "fam");
    assert_eq!(servers[0]["name"], "time");
    let added: String = h
        .db()
        .query_row(
            "SELECT detail FROM audit WHERE kind = 'mcp.added'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        added.contains("times abroad") && added.contains("ipc:main/1-1-0"),
        "{added}"
    );
    let rejected: Vec<String> = {
        let db = h.db();
        let mut st = db
            .prepare("SELECT detail FROM audit WHERE kind = 'ipc.rejected' ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected.iter().any(|r| r.contains("is not allowed")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|r| r.contains("the owner denied it")),
        "{rejected:?}"
    );
    // The host answered each request in the asking group's replies folder.
    let reply: Value =
        serde_json::from_slice(&std::fs::read(h.root.join("ipc/fam/replies/2-1-0.json")).unwrap())
            .unwrap();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("the owner denied it"),
        "{reply}"
    );
}
