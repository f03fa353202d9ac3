//! Idle plugin instances give their memory back: a destination that stopped sending holds no
//! instance once `pool::IDLE_KEEP` has passed (see `delivery::pool` for why that matters).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::PluginSet;

/// How often idle plugin instances are looked at.
const TRIM_EVERY: Duration = Duration::from_secs(15);

/// Gives back the memory of plugin instances that sat idle (`pool::IDLE_KEEP`), so that
/// destinations that are not sending hold none.
pub async fn run(plugins: Arc<PluginSet>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
        let dropped = plugins.trim_idle(std::time::Instant::now());
        if dropped > 0 {
            tracing::debug!(dropped, "idle plugin instances dropped");
        }
    }
}
