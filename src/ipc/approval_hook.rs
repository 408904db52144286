//! Where IPC acts that need the owner's approval are decided, until approvals exist.
//!
//! APPROVALS: this is the hook the approvals work (issue 12: `allow | deny | ask` per group, asked
//! in the main chat, rows in SQLite) replaces. Until then it applies the group policy
//! deny-by-default: the main group (the owner's own chat, already the admin channel) is allowed,
//! every other group is refused with a reason that tells the agent how the owner can do it.

use super::auth::Origin;

/// Whether `origin` may add MCP server `name` to group `target` (already checked to be its own
/// group or, for main, a registered one). `Err` is the refusal the agent reads.
pub fn add_mcp_server(origin: &Origin, target: &str, name: &str) -> Result<(), String> {
    if origin.is_main {
        return Ok(());
    }
    Err(format!(
        "adding MCP servers needs the owner's approval, and group `{}` has no approval policy that allows it (deny by default); ask the owner to run `claw mcp add {target} {name} …`",
        origin.folder
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_is_allowed_others_denied_by_default() {
        let main = Origin {
            folder: "main".into(),
            is_main: true,
            chat_id: "cli:local".into(),
        };
        let fam = Origin {
            folder: "fam".into(),
            is_main: false,
            chat_id: "tg:2".into(),
        };
        assert!(add_mcp_server(&main, "fam", "time").is_ok());
        let why = add_mcp_server(&fam, "fam", "time").unwrap_err();
        assert!(
            why.contains("deny by default") && why.contains("claw mcp add fam time"),
            "{why}"
        );
    }
}
