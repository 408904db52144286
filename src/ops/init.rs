//! `claw init`: create the home tree, config, secrets file, database, main group and global
//! memory. Idempotent: it only creates what is missing and says what it did.

use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use crate::infra::config::{self, Config};
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::store::Store;
use crate::rules::groups::{self, NewGroup};

/// Options for `claw init`.
#[derive(Debug, Clone)]
pub struct Options {
    pub assistant_name: String,
    pub main_chat: String,
}

/// Create what is missing; returns one line per thing created (empty when nothing changed).
pub fn init(home: &Home, opts: &Options) -> Result<Vec<String>> {
    let mut created = Vec::new();
    if !home.root.exists() {
        std::fs::create_dir_all(&home.root)
            .with_context(|| format!("cannot create {}", home.root.display()))?;
        std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o700))?;
        created.push(format!("home {}", home.root.display()));
    }
    // groups/, sessions/, ipc/ and ipc/errors/ hold the agent-writable trees: `untrusted` makes them.
    let (_, made) = crate::infra::untrusted::Parents::create(home)
        .with_context(|| format!("cannot create claw's folders in {}", home.root.display()))?;
    created.extend(made.iter().map(|d| format!("folder {}", d.display())));
    for dir in [home.logs(), home.locks(), home.run_dirs()] {
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            created.push(format!("folder {}", dir.display()));
        }
    }
    let _lock = crate::infra::lock::acquire(&home.global_lock())?;
    if !home.config().exists() {
        crate::validate_assistant_name(&opts.assistant_name)?;
        write_new(
            &home.config(),
            config::default_file(&opts.assistant_name).as_bytes(),
            0o600,
        )?;
        created.push(format!("config {}", home.config().display()));
    }
    let config = Config::load(&home.config())?;
    if !home.secrets().exists() {
        write_new(&home.secrets(), SECRETS_TEMPLATE.as_bytes(), 0o600)?;
        created.push(format!(
            "secrets file {} (mode 600)",
            home.secrets().display()
        ));
    }
    // Main's agent can write groups/global: an AGENTS.md there in any form (even a link) stays.
    let global = crate::infra::untrusted::create_global(home, GLOBAL_MEMORY)
        .context("cannot create the global memory folder")?;
    if global.memory_created {
        created.push(format!("global memory {}", global.memory.display()));
    }
    let had_db = home.db().exists();
    drop(_lock);
    let mut store = Store::create(home)?;
    if !had_db {
        created.push(format!("database {}", home.db().display()));
    }
    if crate::infra::store::groups::main(&store.conn)?.is_none() {
        groups::validate_chat_id(&opts.main_chat).map_err(|e| Coded::err(Code::Usage, e))?;
        // Main's memory is created before registering, with O_EXCL: if groups/main/AGENTS.md is
        // already there in any form (an earlier install's notes, or a planted link) it is kept,
        // never written through; `groups::add` then finds it and leaves it too.
        let memory = MAIN_MEMORY.replace("{name}", &config.assistant_name);
        let main = crate::infra::untrusted::create_group(home, "main", &memory)
            .context("cannot create the main group's folders")?;
        for d in &main.displaced {
            tracing::warn!(folder = "main", "{d}");
        }
        let g = groups::add(
            &mut store,
            home,
            &config.default_trigger(),
            NewGroup {
                chat_id: opts.main_chat.clone(),
                folder: "main".into(),
                name: Some("Main".into()),
                trigger: None,
                requires_trigger: false,
                is_main: true,
                allowed_senders: None,
            },
            "init",
        )?;
        created.push(format!("main group `main` for chat {}", g.chat_id));
    }
    Ok(created)
}

fn write_new(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    // The umask may have narrowed the mode further, never widened it; set it exactly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

const SECRETS_TEMPLATE: &str =
    "# API keys and bot tokens. Read by the host only; never mounted into a container.
# Keep this file mode 600.
# ANTHROPIC_API_KEY=sk-ant-...
# OPENAI_API_KEY=sk-...
# TELEGRAM_BOT_TOKEN=123456:ABC...
";

const GLOBAL_MEMORY: &str = "# Shared memory\n\nFacts every group's assistant may read. Only the main group can change this file.\n";

const MAIN_MEMORY: &str = "# Main\n\nThis is the owner's private chat with {name}. Messages here always reach the assistant,\nand from here it can administer other groups (register chats, schedule tasks for them).\n";
