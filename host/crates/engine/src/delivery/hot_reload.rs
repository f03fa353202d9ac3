//! Hot reload: watches the plugins directory and loads what changed, with no restart.
//!
//! File events (inotify and friends, through `notify`) are debounced: a plugin is usually
//! written as two files (`NAME.wasm`, `NAME.toml`), sometimes in several writes, so the
//! directory is looked at once it has been quiet for a moment. Only files whose size or mtime
//! changed are loaded again (`delivery::PluginSet::sync_dir`). Copy files in with a rename (as
//! `sluice plugin build` does) so that a half-written file is never seen; one that is seen is
//! rejected and loaded again when the write completes.
//!
//! If the directory cannot be watched (some network filesystems), it is polled instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::PluginSet;

/// How long the directory must be quiet before it is loaded.
const DEBOUNCE: Duration = Duration::from_millis(400);
/// How often an unwatchable directory is polled.
const POLL: Duration = Duration::from_secs(2);

pub async fn watch(dir: PathBuf, plugins: Arc<PluginSet>, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugins directory; polling it every {POLL:?}");
            None
        }
    };
    let polling = watcher.is_none();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = rx.recv(), if !polling => {
                if event.is_none() {
                    return;
                }
                // Wait for quiet.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                        more = rx.recv() => if more.is_none() { return },
                    }
                }
            }
            _ = tokio::time::sleep(POLL), if polling => {}
        }
        plugins.sync_dir(&dir).await;
    }
}
