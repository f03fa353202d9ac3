//! Delivery: one lane loop per destination, and the plugin versions they run.
//!
//! - `runner`: one lane's loop (lease, log reads, row fetches, plugin calls, commits)
//! - `call`: one call through the plugin (transform + send)
//! - `pool`: reusable plugin instances of a destination, and the version they run
//! - `plugins`: installs plugin versions into pools (at start, and on hot reload)
//! - `retry`: pure backoff/abort decisions
//! - `breaker`: pauses a destination that fails for every key, then probes it
//! - `stats`: per-lane outcome counters, flushed to `lane_stats` for the admin API
//! - `hot_reload`: watches the plugins directory and installs what changes
//!
//! A destination whose plugin is missing, broken or refuses its config has a lane that waits
//! without a lease: its jobs stay `pending` in the store (ingest keeps accepting them) until a
//! good version is dropped into the plugins directory.

mod breaker;
mod call;
mod calls;
pub mod hot_reload;
mod log_budget;
mod plugins;
mod pool;
pub mod rate;
pub mod retry;
pub mod runner;
pub mod share;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::wake::Wakers;
use sluice_core::{DestinationId, WorkspaceId};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::lane::LaneLimits;
pub use plugins::PluginSet;
use plugins::Slot;
use pool::{InstancePool, LaneShape};
use retry::RetryPolicy;
use runner::{LaneRunner, LaneSettings};
use share::HostShare;
use sluice_config::Config;
use sluice_core::clock::SharedClock;
use sluice_runtime::PluginRuntime;
use sluice_runtime::limiter::Limiter;
use sluice_store::Store;

/// Requests a destination may have in flight at first; the limit adapts from there.
const INITIAL_CONCURRENCY: usize = 4;

/// Smallest payload budget of one call, whatever the plugin's memory cap.
const MIN_CALL_BYTES: usize = 256 << 10;

/// Host-wide delivery settings.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub me: Uuid,
    pub lease_ttl: Duration,
    pub linger: Duration,
    /// Memory a lane may hold in events (read ahead, queued, in flight).
    pub lane_max_bytes: usize,
}

/// The running lane loops.
pub struct Delivery {
    tasks: JoinSet<()>,
    wakers: Wakers,
    share: Arc<HostShare>,
    plugins: Arc<PluginSet>,
}

impl Delivery {
    /// Starts a loop for every destination. A lane runs once its destination's plugin is
    /// installed ([`PluginSet::sync_dir`], at start and on every change of the plugins
    /// directory); until then its jobs stay pending.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: &Config,
        store: Store,
        runtime: PluginRuntime,
        settings: &DeliverySettings,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Delivery {
        let mut tasks = JoinSet::new();
        let share = Arc::new(HostShare::default());
        let mut by_destination = HashMap::new();
        let mut by_workspace: HashMap<WorkspaceId, Vec<DestinationId>> = HashMap::new();
        let mut slots = HashMap::new();
        let mut operator_wakes = HashMap::new();
        for dest in &config.destinations {
            let operator = Arc::new(Notify::new());
            operator_wakes.insert(dest.id.clone(), operator.clone());
            let pool = Arc::new(InstancePool::new(runtime.clone(), dest.id.to_string()));
            slots.insert(
                dest.id.clone(),
                Slot {
                    dest: dest.clone(),
                    pool: pool.clone(),
                    limiter: Arc::new(Limiter::new(INITIAL_CONCURRENCY, dest.max_concurrency)),
                },
            );
            let wake = Arc::new(Notify::new());
            by_destination.insert(dest.id.clone(), wake.clone());
            by_workspace
                .entry(dest.workspace.clone())
                .or_default()
                .push(dest.id.clone());
            let lane_settings = LaneSettings {
                lease_ttl: settings.lease_ttl,
                linger: settings.linger,
                max_held_bytes: settings.lane_max_bytes,
                limits: LaneLimits::default(),
                rate_limit: dest.rate_limit,
                // Replaced by the plugin's own when it is installed.
                shape: LaneShape {
                    batch_size: 1,
                    max_in_flight: 1,
                    ordered_batches: false,
                    call_max_bytes: MIN_CALL_BYTES,
                    max_held_jobs: 1000,
                    policy: RetryPolicy::resolve(&dest.retry, &Default::default()),
                },
            };
            let sources = Arc::new(crate::routes::sources_of(config, dest));
            let runner = LaneRunner {
                lane: crate::routes::lane_of(dest),
                sources,
                store: store.clone(),
                pool,
                settings: lane_settings,
                wake,
                operator,
                shutdown: shutdown.clone(),
                me: settings.me,
                clock: clock.clone(),
                share: share.clone(),
            };
            tasks.spawn(runner.run());
        }
        let plugins = Arc::new(PluginSet::new(runtime, store, settings.me, config, slots));
        Delivery {
            tasks,
            wakers: Wakers {
                by_destination: Arc::new(by_destination),
                by_workspace: Arc::new(by_workspace),
                operator: Arc::new(operator_wakes),
            },
            share,
            plugins,
        }
    }

    /// The destinations' plugins: load them with [`PluginSet::sync_dir`].
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.plugins.clone()
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
