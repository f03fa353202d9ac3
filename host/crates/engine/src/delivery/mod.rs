//! Delivery: one lane loop per destination, and the plugin versions they run.
//!
//! - `runner`: one lane's loop (lease, log reads, row fetches, plugin calls, commits)
//! - `call`: one call through the plugin (transform + send)
//! - `filter`: the destination's event filter, applied to a call's jobs before the plugin
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
//!
//! The lanes follow the catalog ([`Delivery::apply`], docs/catalog.md): a new destination gets
//! a lane loop; a changed config is installed like a new plugin version (calls in flight finish
//! on the old one); a changed rate limit restarts the loop once the old one has stopped; new
//! links reach the loop's next read, and a new filter its next call (the plugin is left alone
//! when only the filter changed); a deleted destination's loop stops (the store has retired and
//! fenced its lane already).

mod breaker;
mod call;
mod calls;
pub mod filter;
pub mod hot_reload;
pub mod idle_instances;
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

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::CatalogWatch;
use crate::lane::LaneLimits;
use crate::wake::{WakerMaps, Wakers};
use plugins::Slot;
pub use plugins::{ConfigRefused, PluginSet};
use pool::{InstancePool, LaneShape};
use retry::RetryPolicy;
use runner::{LaneRunner, LaneSettings};
use share::HostShare;
use sluice_config::DestinationConfig;
use sluice_core::catalog::{Catalog, Link};
use sluice_core::clock::SharedClock;
use sluice_core::{DestinationId, EventFilter};
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

/// The running lane loops, one per destination of the catalog.
pub struct Delivery {
    lanes: Mutex<Lanes>,
    wakers: Wakers,
    share: Arc<HostShare>,
    plugins: Arc<PluginSet>,
    store: Store,
    settings: DeliverySettings,
    clock: SharedClock,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Lanes {
    running: HashMap<DestinationId, RunningLane>,
    /// Loops told to stop (destination deleted), awaited at [`Delivery::join`].
    stopping: Vec<JoinHandle<()>>,
}

/// What a lane's loop shares with the rest of the host; kept when the loop restarts.
struct Handles {
    links: Arc<ArcSwap<Vec<Link>>>,
    filter: Arc<ArcSwap<EventFilter>>,
    wake: Arc<Notify>,
    operator: Arc<Notify>,
}

impl Handles {
    fn new(links: Vec<Link>, filter: EventFilter) -> Handles {
        Handles {
            links: Arc::new(ArcSwap::from_pointee(links)),
            filter: Arc::new(ArcSwap::from_pointee(filter)),
            wake: Arc::new(Notify::new()),
            operator: Arc::new(Notify::new()),
        }
    }
}

/// One destination's loop and what it was started with.
struct RunningLane {
    dest: DestinationConfig,
    links: Arc<ArcSwap<Vec<Link>>>,
    filter: Arc<ArcSwap<EventFilter>>,
    wake: Arc<Notify>,
    operator: Arc<Notify>,
    pool: Arc<InstancePool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Delivery {
    /// Ready to run lanes; [`Delivery::apply`] starts them. A lane runs once its
    /// destination's plugin is installed ([`PluginSet::sync_dir`], at start and on every change
    /// of the plugins directory); until then its jobs stay pending.
    pub fn new(
        server_networks: Vec<ipnet::IpNet>,
        store: Store,
        runtime: PluginRuntime,
        settings: &DeliverySettings,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Delivery {
        let plugins = Arc::new(PluginSet::new(
            runtime,
            store.clone(),
            settings.me,
            server_networks,
        ));
        Delivery {
            lanes: Mutex::new(Lanes::default()),
            wakers: Wakers::default(),
            share: Arc::new(HostShare::default()),
            plugins,
            store,
            settings: settings.clone(),
            clock,
            shutdown,
        }
    }

    /// Makes the running lanes match `catalog`: starts, reconfigures and stops them.
    pub async fn apply(&self, catalog: &Catalog) {
        let mut lanes = self.lanes.lock().await;
        let gone: Vec<DestinationId> = lanes
            .running
            .keys()
            .filter(|id| catalog.destination(id).is_none())
            .cloned()
            .collect();
        for id in gone {
            if let Some(lane) = lanes.running.remove(&id) {
                tracing::info!(destination = %id, "destination deleted; its lane stops");
                lane.stop.cancel();
                self.plugins.remove(&id);
                lanes.stopping.push(lane.task);
            }
        }
        // Only the lanes a change concerns look at once: with thousands of destinations, waking
        // every lane on every change would make each change a burst of reads.
        let mut to_wake = Vec::new();
        for dest in &catalog.destinations {
            let links = catalog.links_of(&dest.id);
            let restart = match lanes.running.get_mut(&dest.id) {
                None => {
                    to_wake.push(dest.id.clone());
                    let handles = Handles::new(links, dest.filter.clone());
                    let lane = self.start_lane(dest, handles, None);
                    self.plugins
                        .set(Slot {
                            dest: dest.clone(),
                            pool: lane.pool.clone(),
                            limiter: Arc::new(Limiter::new(
                                INITIAL_CONCURRENCY,
                                dest.max_concurrency,
                            )),
                        })
                        .await;
                    lanes.running.insert(dest.id.clone(), lane);
                    continue;
                }
                Some(lane) => {
                    if **lane.links.load() != links {
                        lane.links.store(Arc::new(links));
                        to_wake.push(dest.id.clone());
                    }
                    if lane.dest == *dest {
                        continue;
                    }
                    to_wake.push(dest.id.clone());
                    tracing::info!(destination = %dest.id, "destination changed");
                    if lane.dest.filter != dest.filter {
                        lane.filter.store(Arc::new(dest.filter.clone()));
                    }
                    // The plugin never sees the filter: a change of the filter alone does not
                    // configure the plugin again.
                    if !same_but_filter(&lane.dest, dest) {
                        self.plugins.update(dest).await;
                    }
                    let restart = lane.dest.rate_limit != dest.rate_limit;
                    lane.dest = dest.clone();
                    restart
                }
            };
            if restart && let Some(old) = lanes.running.remove(&dest.id) {
                // The new loop starts once the old one has let go of the lease.
                old.stop.cancel();
                let handles = Handles {
                    links: old.links,
                    filter: old.filter,
                    wake: old.wake,
                    operator: old.operator,
                };
                let lane = self.start_lane(dest, handles, Some(old.task));
                lanes.running.insert(dest.id.clone(), lane);
            }
        }
        lanes.stopping.retain(|t| !t.is_finished());
        self.wakers.replace(waker_maps(&lanes.running));
        // New and changed lanes look at once; the others at their own pace.
        for id in &to_wake {
            self.wakers.wake(id);
        }
    }

    /// Runs [`Delivery::apply`] for every catalog `watch` publishes, until shutdown.
    pub async fn follow(self: Arc<Self>, mut catalog: CatalogWatch) {
        loop {
            tokio::select! {
                changed = catalog.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = self.shutdown.cancelled() => return,
            }
            let current = catalog.borrow_and_update().clone();
            self.apply(&current).await;
        }
    }

    /// Spawns a destination's loop; with `after`, the loop starts once that task ended.
    fn start_lane(
        &self,
        dest: &DestinationConfig,
        handles: Handles,
        after: Option<JoinHandle<()>>,
    ) -> RunningLane {
        let Handles {
            links,
            filter,
            wake,
            operator,
        } = handles;
        let pool = match self.plugins.pool_of(&dest.id) {
            Some(pool) => pool,
            None => Arc::new(InstancePool::new(
                self.plugins.runtime().clone(),
                dest.id.to_string(),
            )),
        };
        let stop = self.shutdown.child_token();
        let settings = LaneSettings {
            lease_ttl: self.settings.lease_ttl,
            linger: self.settings.linger,
            max_held_bytes: self.settings.lane_max_bytes,
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
        let runner = LaneRunner {
            lane: crate::routes::lane_of(dest),
            links: links.clone(),
            filter: filter.clone(),
            store: self.store.clone(),
            pool: pool.clone(),
            settings,
            wake: wake.clone(),
            operator: operator.clone(),
            shutdown: stop.clone(),
            me: self.settings.me,
            clock: self.clock.clone(),
            share: self.share.clone(),
        };
        let task = tokio::spawn(async move {
            if let Some(previous) = after {
                let _ = previous.await;
            }
            runner.run().await;
        });
        RunningLane {
            dest: dest.clone(),
            links,
            filter,
            wake,
            operator,
            pool,
            stop,
            task,
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
    pub async fn join(&self) {
        let (running, stopping) = {
            let mut lanes = self.lanes.lock().await;
            (
                std::mem::take(&mut lanes.running),
                std::mem::take(&mut lanes.stopping),
            )
        };
        let tasks: Vec<JoinHandle<()>> = running
            .into_values()
            .map(|l| l.task)
            .chain(stopping)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Whether two versions of a destination differ in nothing but their filter.
fn same_but_filter(old: &DestinationConfig, new: &DestinationConfig) -> bool {
    old.filter != new.filter
        && DestinationConfig {
            filter: new.filter.clone(),
            ..old.clone()
        } == *new
}

fn waker_maps(running: &HashMap<DestinationId, RunningLane>) -> WakerMaps {
    let mut maps = WakerMaps::default();
    for (id, lane) in running {
        maps.by_destination.insert(id.clone(), lane.wake.clone());
        maps.operator.insert(id.clone(), lane.operator.clone());
        maps.by_workspace
            .entry(lane.dest.workspace.clone())
            .or_insert_with(Vec::<DestinationId>::new)
            .push(id.clone());
    }
    maps
}
