//! `--watch`: a plugin file that changes (rewritten in place or renamed over) and then stays
//! unchanged for a moment is swapped in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::PluginSlot;

/// How often --watch looks at plugin files, and how long a changed file must stay unchanged
/// before it is loaded (a file being written keeps changing).
const WATCH_EVERY: Duration = Duration::from_millis(200);
const SETTLE_POLLS: u32 = 2;

/// --watch: swaps in a new version whenever a slot's file changes (in place or by rename) and
/// then stays unchanged for a moment. A version that fails to load is reported once per change;
/// the running one stays.
///
/// The files are looked at now, so a change after this call is never missed.
pub fn watch_files(slots: Vec<Arc<PluginSlot>>) -> impl std::future::Future<Output = ()> {
    #[derive(Clone, PartialEq)]
    struct Seen(u64, Option<SystemTime>, u64);
    let look = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| Seen(m.len(), m.modified().ok(), m.ino()))
    };
    // Per slot: what was last handled, what was seen last poll, polls it stayed the same.
    let mut state: Vec<(Option<Seen>, Option<Seen>, u32)> = slots
        .iter()
        .map(|s| {
            let seen = look(&s.configured_path());
            (seen.clone(), seen, 0)
        })
        .collect();
    async move {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            for (slot, (handled, last, same)) in slots.iter().zip(state.iter_mut()) {
                let path = slot.configured_path();
                let now = look(&path);
                if now != *last {
                    *last = now;
                    *same = 0;
                    continue;
                }
                *same += 1;
                if now.is_none() || now == *handled || *same < SETTLE_POLLS {
                    continue;
                }
                *handled = now;
                tracing::info!(pipeline = %slot.pipeline, slot = slot.index, file = %path.display(), "plugin file changed; loading it");
                // Errors are logged and counted by `swap`; the running version stays.
                let _ = slot.swap(&path, "watch").await;
            }
        }
    }
}
