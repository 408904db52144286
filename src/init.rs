//! `claw init`: create the home tree, config, secrets file, database, main group and global
//! memory. Idempotent: it only creates what is missing and says what it did.

use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use crate::config::{self, Config};
use crate::groups::{self, NewGroup};
use crate::paths::Home;
use crate::store::Store;

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
    for dir in [
        home.groups(),
        home.sessions(),
        home.ipc(),
        home.ipc_errors(),
        home.logs(),
        home.locks(),
        home.run_dirs(),
    ] {
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            created.push(format!("folder {}", dir.display()));
        }
    }
    let _lock = crate::lock::acquire(&home.global_lock())?;
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
    let global = home.global_dir();
    if !global.exists() {
        std::fs::create_dir_all(&global)?;
        std::fs::write(global.join("AGENTS.md"), GLOBAL_MEMORY)?;
        created.push(format!("global memory {}", global.display()));
    }
    let had_db = home.db().exists();
    drop(_lock);
    let mut store = Store::create(home)?;
    if !had_db {
        created.push(format!("database {}", home.db().display()));
    }
    if crate::store::groups::main(&store.conn)?.is_none() {
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
        std::fs::write(
            home.group_dir("main").join("AGENTS.md"),
            MAIN_MEMORY.replace("{name}", &config.assistant_name),
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
