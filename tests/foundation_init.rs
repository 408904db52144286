//! `claw init` and opening a home: idempotence, file modes, WAL, and refusing homes and databases
//! that are missing, corrupt or from a newer claw without touching them.

#[path = "support/home.rs"]
mod home;

use home::{TestHome, snapshot};
use predicates::prelude::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn init_creates_the_home_and_a_second_run_changes_nothing() {
    let h = TestHome::new();
    h.claw()
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::contains("created database"))
        .stdout(predicate::str::contains(
            "main group `main` for chat cli:local",
        ));
    for p in [
        "claw.toml",
        "secrets.env",
        "claw.db",
        "groups/main/AGENTS.md",
        "groups/global/AGENTS.md",
    ] {
        assert!(h.root.join(p).is_file(), "{p} missing after init");
    }
    for d in [
        "sessions/main",
        "ipc/main/messages",
        "ipc/errors",
        "logs",
        "locks",
    ] {
        assert!(h.root.join(d).is_dir(), "{d} missing after init");
    }
    let before = snapshot(&h.root);
    // mtime granularity is fine-grained on Linux, but give it a tick so a rewrite would show.
    std::thread::sleep(std::time::Duration::from_millis(20));
    h.claw()
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing changed"))
        .stdout(predicate::str::contains("created").not());
    let after = snapshot(&h.root);
    assert_eq!(
        before.len(),
        after.len(),
        "second init added or removed files"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0, "file set changed");
        assert!(b.1 == a.1, "{} content changed", b.0.display());
        assert_eq!(b.2, a.2, "{} was rewritten", b.0.display());
        assert_eq!(b.3, a.3, "{} mode changed", b.0.display());
    }
    assert_eq!(h.count("SELECT count(*) FROM groups"), 1);
}

#[test]
fn secrets_file_is_private_and_the_database_uses_wal() {
    let h = TestHome::init();
    let mode = std::fs::metadata(h.root.join("secrets.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "secrets.env mode is {:o}",
        mode & 0o777
    );
    let journal: String = h
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal.to_lowercase(), "wal");
    let main: (String, String, bool) = h
        .db()
        .query_row(
            "SELECT folder, chat_id, is_main FROM groups WHERE is_main = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(main, ("main".into(), "cli:local".into(), true));
}

#[test]
fn init_takes_the_assistant_name_and_main_chat() {
    let h = TestHome::new();
    h.claw()
        .args(["init", "--assistant-name", "Bob", "--main-chat", "tg:42"])
        .assert()
        .success();
    let toml = std::fs::read_to_string(h.root.join("claw.toml")).unwrap();
    assert!(toml.contains("assistant_name = \"Bob\""));
    let chat: String = h
        .db()
        .query_row("SELECT chat_id FROM groups WHERE is_main = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(chat, "tg:42");
    h.add_group("tg:7", "fam", &[]);
    let out = h
        .claw()
        .args(["group", "show", "fam", "--json"])
        .output()
        .unwrap();
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["trigger"], "@Bob");
}

#[test]
fn a_missing_home_says_to_run_init() {
    let h = TestHome::new();
    for args in [
        vec!["status"],
        vec!["ingest", "--chat", "cli:local", "--text", "hi"],
        vec!["group", "list"],
        vec!["outbox"],
        vec!["deliver"],
    ] {
        h.claw()
            .args(&args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("claw init"));
    }
    assert!(!h.root.exists(), "a read command created the home");
}

#[test]
fn a_home_without_a_database_says_to_run_init() {
    let h = TestHome::init();
    std::fs::remove_file(h.db_path()).unwrap();
    h.claw()
        .arg("status")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("claw init"));
    assert!(!h.db_path().exists(), "status created a database");
}

#[test]
fn a_corrupt_database_is_refused_and_left_alone() {
    let h = TestHome::init();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(h.db_path(), &garbage).unwrap();
    for args in [vec!["status"], vec!["group", "list"], vec!["ingest"]] {
        h.claw()
            .args(&args)
            .write_stdin("")
            .assert()
            .code(3)
            .stderr(predicate::str::contains("claw.db"))
            .stderr(predicate::str::contains("not a usable claw database"));
    }
    assert_eq!(std::fs::read(h.db_path()).unwrap(), garbage);
}

#[test]
fn a_database_from_a_newer_claw_is_refused_and_not_modified() {
    let h = TestHome::init();
    {
        let db = h.db();
        let v: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert!(v >= 1);
        db.pragma_update(None, "user_version", v + 1).unwrap();
    }
    let before = std::fs::read(h.db_path()).unwrap();
    for args in [vec!["status"], vec!["init"], vec!["group", "list"]] {
        h.claw()
            .args(&args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("newer claw"))
            .stderr(predicate::str::contains("not touched"));
    }
    assert!(
        std::fs::read(h.db_path()).unwrap() == before,
        "claw.db bytes changed"
    );
}

#[test]
fn an_older_database_is_migrated_forward() {
    let h = TestHome::init();
    let current: i64 = h
        .db()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(current >= 2);
    h.ingest(&home::line("cli:local", "1", "cli:owner", "kept"))
        .success();
    {
        // Put the file back to schema 1 (before the pending-message index existed).
        let db = h.db();
        db.execute_batch(
            "DROP INDEX messages_chat_seq_human;
             CREATE INDEX messages_chat_seq ON messages (chat_id, seq);
             DROP INDEX tasks_folder;
             DROP INDEX outbox_origin;
             DROP INDEX tasks_created_by;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    h.claw().arg("status").assert().success();
    let db = h.db();
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, current);
    let index = |name: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(index("messages_chat_seq_human"), 1);
    assert_eq!(index("messages_chat_seq"), 0);
    assert_eq!(h.count("SELECT count(*) FROM messages"), 1);
}

#[test]
fn help_works_on_every_subcommand() {
    let h = TestHome::new();
    let cmds: &[&[&str]] = &[
        &[],
        &["init"],
        &["ingest"],
        &["group"],
        &["group", "add"],
        &["group", "list"],
        &["group", "show"],
        &["group", "set"],
        &["group", "rm"],
        &["status"],
        &["outbox"],
        &["deliver"],
    ];
    for c in cmds {
        h.claw()
            .args(*c)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: claw"));
    }
    assert!(!h.root.exists(), "--help touched the home");
}
