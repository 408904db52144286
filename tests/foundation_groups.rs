//! `claw group`: folder validation, the single main group, and the listing/show/set/rm verbs.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use predicates::prelude::*;

fn group_json(h: &TestHome, folder: &str) -> serde_json::Value {
    let out = h
        .claw()
        .args(["group", "show", folder, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("group show --json is JSON")
}

#[test]
fn bad_folder_names_are_refused_with_a_reason() {
    let h = TestHome::init();
    let long = "a".repeat(65);
    let cases = [
        ("../x", "not allowed"),
        ("/x", "not allowed"),
        ("Main", "not allowed"),
        ("global", "reserved"),
        (long.as_str(), "not allowed"),
    ];
    for (i, (folder, why)) in cases.iter().enumerate() {
        h.claw()
            .args([
                "group",
                "add",
                "--chat",
                &format!("tg:{i}"),
                "--folder",
                folder,
            ])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!("`{folder}`")))
            .stderr(predicate::str::contains(*why));
    }
    // Nothing was registered or created for any of them.
    assert_eq!(h.count("SELECT count(*) FROM groups"), 1);
    assert!(!h.dir.path().join("x").exists());
    assert!(!h.root.join("groups/Main").exists());
    // The longest allowed name works.
    let max = "a".repeat(64);
    h.add_group("tg:64", &max, &[]);
    assert!(h.root.join("groups").join(&max).join("AGENTS.md").is_file());
}

#[test]
fn there_is_only_one_main_group() {
    let h = TestHome::init();
    h.claw()
        .args([
            "group", "add", "--chat", "tg:1", "--folder", "boss", "--main",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already a main group (`main`)"));
    assert_eq!(h.count("SELECT count(*) FROM groups WHERE is_main = 1"), 1);
    assert_eq!(h.count("SELECT count(*) FROM groups"), 1);
    h.claw()
        .args(["group", "rm", "main"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be removed"));
}

#[test]
fn a_folder_or_chat_is_registered_once() {
    let h = TestHome::init();
    h.add_group("tg:1", "fam", &[]);
    h.claw()
        .args(["group", "add", "--chat", "tg:2", "--folder", "fam"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already registered"));
    h.claw()
        .args(["group", "add", "--chat", "tg:1", "--folder", "fam2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "already registered as group `fam`",
        ));
    h.claw()
        .args(["group", "add", "--chat", "nochannel", "--folder", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("channel prefix"));
}

#[test]
fn add_list_show_set_and_rm() {
    let h = TestHome::init();
    h.claw()
        .args(["group", "add", "--chat", "tg:-100", "--folder", "family"])
        .args(["--name", "Family", "--allow", "tg:1", "--allow", "tg:2"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "registered tg:-100 as group `family`",
        ));
    for d in [
        "groups/family/AGENTS.md",
        "sessions/family",
        "ipc/family/messages",
    ] {
        assert!(h.root.join(d).exists(), "{d}");
    }
    let out = h.claw().args(["group", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json");
    let folders: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["folder"].as_str().unwrap())
        .collect();
    assert_eq!(folders, ["main", "family"]);

    let g = group_json(&h, "family");
    assert_eq!(g["name"], "Family");
    assert_eq!(g["trigger"], "@Andy");
    assert_eq!(g["requires_trigger"], true);
    assert_eq!(g["allowed_senders"], serde_json::json!(["tg:1", "tg:2"]));

    h.claw()
        .args(["group", "set", "family", "--requires-trigger", "false"])
        .args([
            "--trigger",
            "@Bot",
            "--egress",
            "api.example.com",
            "--timeout",
            "60",
        ])
        .assert()
        .success();
    let g = group_json(&h, "family");
    assert_eq!(g["requires_trigger"], false);
    assert_eq!(g["trigger"], "@Bot");
    assert_eq!(
        g["config"]["egress"],
        serde_json::json!(["api.example.com"])
    );
    assert_eq!(g["config"]["timeout_secs"], 60);
    h.claw()
        .args(["group", "set", "family", "--allow-everyone"])
        .assert()
        .success();
    assert!(group_json(&h, "family")["allowed_senders"].is_null());
    h.claw()
        .args(["group", "set", "family", "--trigger", "two words"])
        .assert()
        .code(2);

    h.claw().args(["group", "rm", "family"]).assert().success();
    assert_eq!(h.count("SELECT count(*) FROM groups"), 1);
    assert!(
        h.root.join("groups/family/AGENTS.md").is_file(),
        "rm deleted files"
    );
    h.claw()
        .args(["group", "show", "family"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("claw group list"));
    // Changes are recorded in the audit table.
    assert!(
        h.count("SELECT count(*) FROM audit WHERE folder = 'family' AND kind LIKE 'group.%'") >= 3
    );
}
