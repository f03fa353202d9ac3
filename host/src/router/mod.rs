//! The router: one lane loop per destination whose plugin loaded, and the wake-ups that drive
//! them.
//!
//! - `runner`: one lane's loop (lease, log reads, row fetches, plugin calls, commits)
//! - `delivery`: one call through the plugin (transform + send)
//! - `pool`: reusable plugin instances of a destination
//! - `retry`: pure backoff/abort decisions
//! - `breaker`: pauses a destination that fails for every key, then probes it
//!
//! Destinations whose plugin is missing or broken get no loop: their jobs stay `pending` in the
//! store (ingest keeps accepting them) until the plugin is fixed and sluice restarted.

mod breaker;
mod calls;
mod delivery;
mod pool;
pub mod rate;
pub mod retry;
pub mod runner;
pub mod share;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::lane::LaneLimits;
use crate::runtime::allowlist::Allowlist;
use crate::runtime::limiter::Limiter;
use crate::runtime::{InstanceSpec, LoadedPlugin, PluginRuntime};
use crate::store::{LaneId, Store};
use pool::InstancePool;
use retry::RetryPolicy;
use runner::{LaneRunner, LaneSettings};
use share::HostShare;

/// Requests a destination may have in flight at first; the limit adapts from there.
const INITIAL_CONCURRENCY: usize = 4;

/// Smallest payload budget of one call, whatever the plugin's memory cap.
const MIN_CALL_BYTES: usize = 256 << 10;

/// Wake-up handles per lane, shared with ingest and maintenance.
#[derive(Clone, Default)]
pub struct Wakers {
    /// By destination id.
    by_destination: Arc<HashMap<String, Arc<Notify>>>,
    /// Destination ids by workspace.
    by_workspace: Arc<HashMap<String, Vec<String>>>,
}

impl Wakers {
    /// Tells the destination's lane there may be new work.
    pub fn wake(&self, destination_id: &str) {
        if let Some(n) = self.by_destination.get(destination_id) {
            n.notify_one();
        }
    }

    /// Wakes every lane of a workspace (another host wrote events for it).
    pub fn wake_workspace(&self, workspace_id: &str) {
        for d in self.by_workspace.get(workspace_id).into_iter().flatten() {
            self.wake(d);
        }
    }

    /// Wakes every lane (a wake-up may have been missed).
    pub fn wake_all(&self) {
        for n in self.by_destination.values() {
            n.notify_one();
        }
    }
}

/// Host-wide router settings.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub me: Uuid,
    pub lease_ttl: Duration,
    pub linger: Duration,
    /// Memory a lane may hold in events (read ahead, queued, in flight).
    pub lane_max_bytes: usize,
}

/// The running lane loops.
pub struct Router {
    tasks: JoinSet<()>,
    wakers: Wakers,
    share: Arc<HostShare>,
}

impl Router {
    /// Starts a loop for every destination whose plugin is loaded; logs the others.
    pub fn start(
        config: &Config,
        plugins: &[Arc<LoadedPlugin>],
        store: Store,
        runtime: PluginRuntime,
        settings: &RouterSettings,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Router {
        let mut tasks = JoinSet::new();
        let share = Arc::new(HostShare::default());
        let mut by_destination = HashMap::new();
        let mut by_workspace: HashMap<String, Vec<String>> = HashMap::new();
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
                limiter: Arc::new(Limiter::new(INITIAL_CONCURRENCY, dest.max_concurrency)),
            };
            let wake = Arc::new(Notify::new());
            by_destination.insert(dest.id.clone(), wake.clone());
            by_workspace
                .entry(dest.workspace.clone())
                .or_default()
                .push(dest.id.clone());
            let manifest = &plugin.manifest;
            let memory = manifest.memory_bytes().unwrap_or(64 << 20) as usize;
            let batch_size = manifest.batch_size;
            let max_in_flight = manifest.max_in_flight;
            let lane_settings = LaneSettings {
                lease_ttl: settings.lease_ttl,
                linger: settings.linger,
                batch_size,
                max_in_flight,
                // A call's payloads are copied into the plugin (and usually once more by it).
                call_max_bytes: (memory / 4).max(MIN_CALL_BYTES),
                max_held_jobs: (batch_size * max_in_flight * 4).max(1000),
                max_held_bytes: settings.lane_max_bytes,
                limits: LaneLimits::default(),
                policy: RetryPolicy::resolve(&dest.retry, &manifest.retry),
                rate_limit: dest.rate_limit,
            };
            let sources = Arc::new(
                config
                    .sources
                    .iter()
                    .filter(|s| s.destinations.contains(&dest.id))
                    .map(|s| s.id.clone())
                    .collect(),
            );
            let runner = LaneRunner {
                lane: LaneId {
                    workspace_id: dest.workspace.clone(),
                    destination_id: dest.id.clone(),
                },
                sources,
                store: store.clone(),
                pool: Arc::new(InstancePool::new(runtime.clone(), spec)),
                settings: lane_settings,
                wake,
                shutdown: shutdown.clone(),
                me: settings.me,
                clock: clock.clone(),
                share: share.clone(),
            };
            tasks.spawn(runner.run());
        }
        Router {
            tasks,
            wakers: Wakers {
                by_destination: Arc::new(by_destination),
                by_workspace: Arc::new(by_workspace),
            },
            share,
        }
    }

    pub fn wakers(&self) -> Wakers {
        self.wakers.clone()
    }

    /// This host's share of lanes (maintenance keeps it up to date).
    pub fn share(&self) -> Arc<HostShare> {
        self.share.clone()
    }

    /// Waits for every loop to stop (after the shutdown token fired).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
