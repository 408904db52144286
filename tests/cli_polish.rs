//! What a newcomer meets at the terminal: listings that survive a closed pipe, plain aligned
//! tables, exit codes the help promises, completions and man pages generated from the real
//! argument definitions, and messages that say what is actually wrong.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use std::io::Read;
use std::process::Stdio;

/// Many outbox rows, so a listing is far bigger than a pipe buffer.
fn home_with_big_outbox() -> TestHome {
    let h = TestHome::init();
    let db = h.db();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..3000 {
        tx.execute(
            "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES ('cli:local', ?1, 'test', 0)",
            [format!("message number {i} with some text to make the listing long")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    h
}

#[test]
fn listings_survive_a_reader_that_stops_early() {
    let h = home_with_big_outbox();
    for args in [
        &["outbox", "--json"][..],
        &["outbox"],
        &["completions", "bash"],
        &["audit", "--json", "--limit", "5000"],
    ] {
        let mut child = h
            .claw_std()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        out.read_exact(&mut first).unwrap();
        drop(out); // like `| head -c 16`
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !err.contains("panicked"),
            "`claw {}` panicked on a closed pipe: {err}",
            args.join(" ")
        );
        assert_eq!(status.code(), Some(0), "`claw {}`: {err}", args.join(" "));
    }
}

#[test]
fn tables_are_plain_columns_without_colour_when_piped() {
    let h = TestHome::init();
    let out = h.claw().args(["group", "list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["FOLDER", "CHAT", "NAME", "TRIGGER", "SENDERS"]
    );
    assert!(lines.next().unwrap().starts_with("main  "), "{text}");
    assert!(
        !text.contains('│') && !text.contains('─'),
        "box drawing: {text}"
    );
    assert!(!text.contains('\x1b'), "colour on a pipe: {text:?}");
}

#[test]
fn run_group_exits_6_when_the_runtime_is_missing_and_says_the_real_delay() {
    let h = TestHome::init();
    let cfg = std::fs::read_to_string(h.root.join("claw.toml")).unwrap();
    std::fs::write(
        h.root.join("claw.toml"),
        cfg.replace("kind = \"auto\"", "kind = \"docker\""),
    )
    .unwrap();
    h.claw()
        .args(["ingest", "--chat", "cli:local", "--text", "hi"])
        .assert()
        .success();
    let empty = h.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = h
        .claw()
        .args(["run-group", "main"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("is the container runtime installed"), "{err}");
    // retry_base_secs is 5: the message says 5s, not the 4s a truncating clock would show.
    assert!(err.contains("will retry in 5s"), "{err}");
}

#[test]
fn completions_and_man_pages_come_from_the_real_commands() {
    let h = TestHome::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = h.claw().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("run-group") && text.contains("allow-model"),
            "{shell}"
        );
    }
    let dir = h.dir.path().join("man");
    h.claw().args(["man", "--out"]).arg(&dir).assert().success();
    let page = std::fs::read_to_string(dir.join("claw-group-set.1")).unwrap();
    assert!(
        page.contains("disk\\-mb") || page.contains("disk-mb"),
        "{page}"
    );
    assert!(dir.join("claw.1").exists() && dir.join("claw-task-add.1").exists());
}

#[test]
fn chat_without_a_key_says_which_line_to_add_before_any_container() {
    let h = TestHome::init();
    let empty = h.dir.path().join("no-runtime");
    std::fs::create_dir_all(&empty).unwrap();
    // No runtime on PATH: if chat tried to start a container, the error would be about that.
    let out = h
        .claw()
        .args(["chat", "-m", "hello"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("add the line `ANTHROPIC_API_KEY=sk-ant-…` to") && err.contains("secrets.env"),
        "{err}"
    );
    assert_eq!(err.matches("API key").count(), 1, "said once: {err}");
    assert_eq!(
        h.count("SELECT count(*) FROM runs"),
        0,
        "no run was started"
    );
}
