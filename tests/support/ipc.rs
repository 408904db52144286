//! In-process set-up for the ipc_*, schedule_claim, task_cli and prune_cli tests: a [`TestHome`]
//! initialised through the library with three groups, an open [`Store`] and the loaded config,
//! so a test writes request files as an agent would and applies them by calling `claw::steps::ipc`.
//! Included with `#[path = "support/ipc.rs"] mod ipc;`.
#![allow(dead_code)]

#[path = "home.rs"]
pub mod home;

use claw::infra::config::Config;
use claw::infra::paths::Home;
use claw::infra::store::Store;
use claw::rules::groups::NewGroup;
use home::TestHome;
use std::path::PathBuf;

/// The home as the library sees it, plus the same home for driving the binary.
pub struct Env {
    /// Owns the temp dir; `cli.claw()` runs the binary on this home.
    pub cli: TestHome,
    pub home: Home,
    pub store: Store,
    pub config: Config,
    /// Outside the home: stands for any host file an agent must never reach.
    pub outside: PathBuf,
}

/// A home with main (`main`, tg:1), `fam` (tg:2), `other` (tg:3) and a known unregistered chat tg:9.
pub fn env() -> Env {
    let cli = TestHome::new();
    let home = Home::new(&cli.root);
    claw::ops::init::init(
        &home,
        &claw::ops::init::Options {
            assistant_name: "Andy".into(),
            main_chat: "tg:1".into(),
        },
    )
    .unwrap();
    let config = Config::load(&home.config()).unwrap();
    let mut store = Store::open(&home).unwrap();
    for (chat, folder) in [("tg:2", "fam"), ("tg:3", "other")] {
        claw::rules::groups::add(
            &mut store,
            &home,
            "@Andy",
            NewGroup {
                chat_id: chat.into(),
                folder: folder.into(),
                name: None,
                trigger: None,
                requires_trigger: true,
                is_main: false,
                allowed_senders: None,
            },
            "test",
        )
        .unwrap();
    }
    claw::infra::store::messages::upsert_chat(
        &store.conn,
        "tg:9",
        Some("Nine"),
        Some(true),
        1,
        None,
    )
    .unwrap();
    let outside = cli.scratch("outside");
    std::fs::create_dir_all(&outside).unwrap();
    Env {
        cli,
        home,
        store,
        config,
        outside,
    }
}

impl Env {
    /// The main group's folder.
    pub fn main_folder(&self) -> String {
        claw::infra::store::groups::main(&self.store.conn)
            .unwrap()
            .unwrap()
            .folder
    }

    /// Write a request file as an agent would.
    pub fn put(&self, folder: &str, sub: &str, name: &str, body: &str) -> PathBuf {
        let dir = self.home.ipc_dir(folder).join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// Apply one group's requests in process, as `claw ipc-apply` would.
    pub fn apply(&mut self, folder: &str) -> claw::steps::ipc::Report {
        claw::steps::ipc::apply_group(&self.home, &mut self.store, &self.config, folder).unwrap()
    }

    /// The reply the host wrote for request `stem` of a group.
    pub fn reply(&self, folder: &str, stem: &str) -> claw::infra::protocol::IpcReply {
        let p = self
            .home
            .ipc_dir(folder)
            .join("replies")
            .join(format!("{stem}.json"));
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    /// Names in ipc/errors.
    pub fn errors(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.home.ipc_errors())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The reason text for a rejected file, found by its moved name.
    pub fn reason_for(&self, moved: &str) -> String {
        let r = moved.strip_suffix(".json").unwrap().to_string() + ".reason.txt";
        std::fs::read_to_string(self.home.ipc_errors().join(r)).unwrap()
    }

    /// Every outbox row as (chat, text, origin), oldest first.
    pub fn outbox(&self) -> Vec<(String, String, String)> {
        let mut stmt = self
            .store
            .conn
            .prepare("SELECT chat_id, text, origin FROM outbox ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// How many audit rows of one kind there are.
    pub fn audit_kinds(&self, kind: &str) -> usize {
        self.store
            .conn
            .query_row("SELECT count(*) FROM audit WHERE kind = ?1", [kind], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize
    }

    /// Create a task directly (as the owner would), returning its id.
    pub fn task(&self, folder: &str, kind: &str, value: &str, now: i64) -> i64 {
        claw::rules::tasks::create(
            &self.store.conn,
            claw::rules::tasks::NewTask {
                folder: folder.into(),
                prompt: format!("task for {folder}"),
                kind: kind.into(),
                value: value.into(),
                timezone: Some("UTC".into()),
                context_mode: None,
                created_by: "test".into(),
                check: None,
                check_timeout: None,
            },
            now,
        )
        .unwrap()
        .id
    }
}
