//! Handing results to delivery the moment they are committed to the outbox, so a reply waits for
//! no timer. Each hand-off is a chained `claw deliver --channel PREFIX` (see `crate::steps::chain`),
//! never a send from this process: a slow or hanging channel cannot hold up the session loop,
//! keep the group's lock, or be cut off mid-send when this run-group is killed, and the send
//! goes through exactly the code and the channel lock the timer's deliver uses.

use anyhow::Result;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;

/// What a run needs to start a chained deliver.
pub struct Handoff {
    home: Home,
    config: Config,
    secrets: Secrets,
}

impl Handoff {
    /// A hand-off for this run's home and settings.
    pub fn new(home: &Home, config: &Config, secrets: &Secrets) -> Handoff {
        Handoff {
            home: home.clone(),
            config: config.clone(),
            secrets: secrets.clone(),
        }
    }

    /// A result for `chat_id` was committed to the outbox.
    pub fn result(&self, chat_id: &str) {
        let prefix = crate::infra::store::messages::channel_of(chat_id);
        crate::steps::chain::deliver(&self.home, &self.config, &self.secrets, prefix);
    }

    /// Requests applied for the agent may have queued messages for any chat (main can write to
    /// every chat): hand off each channel that now has rows due.
    pub fn outbox_changed(&self, store: &Store) -> Result<()> {
        for prefix in crate::steps::chain::channels_due(store)? {
            crate::steps::chain::deliver(&self.home, &self.config, &self.secrets, &prefix);
        }
        Ok(())
    }
}
