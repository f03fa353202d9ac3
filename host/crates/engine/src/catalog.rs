//! Following the catalog in the store (docs/catalog.md): every host runs what the store holds,
//! within a second of a change, with no restart.
//!
//! The follower reads the catalog at start, then again whenever its version moves. It looks at
//! the version when a `catalog <version>` NOTIFY arrives (`wake::listen_for_peers` forwards
//! it, and a re-established LISTEN connection counts as one, since notifications may have been
//! missed while it was down). That is what keeps a change within a second of every host.
//! As a backstop it also looks every [`CHECK_INTERVAL`] whether notified or not (one
//! single-row read: the only statement an idle host makes), and every second while the store
//! fails. Each new catalog is published on a `watch` channel; ingest (write keys), delivery
//! (lanes, plugins, links) and the stats flusher apply it from there.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use sluice_core::catalog::Catalog;
use sluice_store::Store;

/// How often the version is read when no notification came.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a failed read is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The catalog as this host runs it.
pub type CatalogWatch = watch::Receiver<Arc<Catalog>>;

/// Publishes every new catalog version on `publish` until `shutdown`.
pub async fn follow(
    store: Store,
    publish: watch::Sender<Arc<Catalog>>,
    notified: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = notified.notified() => {}
            _ = tokio::time::sleep(if failing { RETRY_INTERVAL } else { CHECK_INTERVAL }) => {}
            _ = shutdown.cancelled() => return,
        }
        let running = publish.borrow().version;
        let result = match store.catalog_version().await {
            Ok(v) if v == running => Ok(None),
            Ok(_) => store.catalog_load().await.map(Some),
            Err(e) => Err(e),
        };
        match result {
            Ok(None) => failing = false,
            Ok(Some(catalog)) => {
                failing = false;
                tracing::info!(
                    version = catalog.version,
                    from = running,
                    destinations = catalog.destinations.len(),
                    sources = catalog.sources.len(),
                    "catalog changed"
                );
                publish.send_replace(Arc::new(catalog));
            }
            // Once per outage, not once a second: the store's own errors say the rest.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the catalog; running the last one read");
            }
            Err(_) => {}
        }
    }
}
