//! The router: one delivery loop per destination whose plugin loaded.
//!
//! - `worker`: the claim/deliver/record loop of one destination
//! - `delivery`: one claim through transform + send, in key order
//! - `pool`: reusable plugin instances of a destination
//! - `retry`: pure backoff/abort decisions
//! - `breaker`: pauses a destination that fails for every key, then probes it
//!
//! Destinations whose plugin is missing or broken get no loop: their jobs stay `pending` in the
//! store (ingest keeps accepting them) until the plugin is fixed and sluice restarted.

mod breaker;
mod delivery;
mod pool;
pub mod retry;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::runtime::allowlist::Allowlist;
use crate::runtime::{InstanceSpec, LoadedPlugin, PluginRuntime};
use crate::store::Store;
use pool::InstancePool;
use retry::RetryPolicy;
use worker::DestinationWorker;

/// Wake-up handles per destination, shared with ingest so new jobs are picked up at once.
#[derive(Clone, Default)]
pub struct Wakers {
    map: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    /// Tells the destination's loop there may be new work.
    pub fn wake(&self, destination_id: &str) {
        if let Some(n) = self.map.get(destination_id) {
            n.notify_one();
        }
    }
}

/// The running delivery loops.
pub struct Router {
    tasks: JoinSet<()>,
    wakers: Wakers,
}

impl Router {
    /// Starts a loop for every destination whose plugin is loaded; logs the others.
    pub fn start(
        config: &Config,
        plugins: &[Arc<LoadedPlugin>],
        store: Store,
        runtime: PluginRuntime,
        shutdown: CancellationToken,
    ) -> Router {
        let mut tasks = JoinSet::new();
        let mut map = HashMap::new();
        for dest in &config.destinations {
            let Some(plugin) = plugins.iter().find(|p| p.name == dest.plugin) else {
                tracing::error!(destination = %dest.id, plugin = %dest.plugin, "no such plugin loaded; the destination's jobs will wait");
                continue;
            };
            let allowlist = match Allowlist::resolve(&plugin.manifest.allowed_hosts, &dest.config) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(destination = %dest.id, plugin = %dest.plugin, error = %e, "bad allowed_hosts; the destination's jobs will wait");
                    continue;
                }
            };
            let spec = InstanceSpec {
                plugin: plugin.clone(),
                destination_id: dest.id.clone(),
                config_json: dest.config.to_string(),
                allowlist: Arc::new(allowlist),
            };
            let wake = Arc::new(Notify::new());
            map.insert(dest.id.clone(), wake.clone());
            let worker = DestinationWorker {
                destination_id: dest.id.clone(),
                store: store.clone(),
                pool: Arc::new(InstancePool::new(runtime.clone(), spec)),
                policy: RetryPolicy::resolve(&dest.retry, &plugin.manifest.retry),
                batch_size: plugin.manifest.batch_size,
                max_in_flight: plugin.manifest.max_in_flight,
                wake,
                shutdown: shutdown.clone(),
                breaker: Default::default(),
            };
            tasks.spawn(worker.run());
        }
        Router {
            tasks,
            wakers: Wakers { map: Arc::new(map) },
        }
    }

    pub fn wakers(&self) -> Wakers {
        self.wakers.clone()
    }

    /// Waits for every loop to stop (after the shutdown token fired).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
