//! The [`Searcher`] run-group gives its proxy: history search answered on the host, for the
//! run's own group. The asking folder is fixed here, when the run starts; the proxy passes only
//! the request through, so nothing an agent sends can name another asker.

use std::sync::{Arc, Mutex};

use crate::infra::paths::Home;
use crate::infra::proxy::search::Searcher;
use crate::infra::store::Store;
use crate::search::{self, Asker, Refusal, archives};

/// Archive bytes read per search before answering (the rest is indexed at the run's end).
const ARCHIVE_BYTES_PER_SEARCH: u64 = 16 * 1024 * 1024;

/// A searcher for `folder`'s runs: one connection of its own, opened on the first search.
pub fn searcher(home: &Home, folder: &str) -> Searcher {
    let home = home.clone();
    let folder = folder.to_string();
    let store: Mutex<Option<Store>> = Mutex::new(None);
    Searcher(Arc::new(move |req| {
        let mut slot = store.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(
                Store::open(&home).map_err(|e| format!("history search is unavailable: {e:#}"))?,
            );
        }
        let store = slot.as_mut().expect("opened above");
        // What the agent archived during this run is searchable at once.
        if let Err(e) = archives::index_folder(store, &home, &folder, ARCHIVE_BYTES_PER_SEARCH) {
            tracing::warn!(folder, "indexing archives before a search: {e:#}");
        }
        search::answer(&store.conn, &Asker::Group(folder.clone()), &req).map_err(|r| match r {
            Refusal::Bad(why) => why,
            Refusal::Failed(e) => {
                tracing::warn!(folder, "history search failed: {e:#}");
                "the history search failed on the host; try again later".to_string()
            }
        })
    }))
}

/// Index the archives the agent left, after its run; returns a line for the run log.
pub fn index_after_run(home: &Home, store: &mut Store, folder: &str) -> String {
    match archives::index_folder(store, home, folder, 256 * 1024 * 1024) {
        Ok(r) if r.indexed + r.removed + r.skipped.len() == 0 => String::new(),
        Ok(r) => format!(
            "archives: {} indexed, {} removed, {} skipped{}",
            r.indexed,
            r.removed,
            r.skipped.len(),
            r.skipped
                .first()
                .map(|s| format!(" ({})", crate::infra::output::clip(s, 120)))
                .unwrap_or_default()
        ),
        Err(e) => format!("archives could not be indexed: {e:#}"),
    }
}
