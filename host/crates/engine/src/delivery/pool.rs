//! The plugin instances of one destination, and which plugin version they run.
//!
//! Instances are created on demand (at most `max_in_flight` are ever busy at once, since each
//! delivery holds one) and returned after use; poisoned instances (after a trap) are dropped.
//! An instance left idle for [`IDLE_KEEP`] is dropped too ([`InstancePool::trim`]), and the
//! instance that checked a new version's `configure` is not kept: an idle destination holds no
//! instance at all. Each instance reserves gigabytes of address space and several memory
//! mappings for its linear memory, so a host that kept one per destination ran out of
//! mappings (`vm.max_map_count`) at ~9,350 destinations and failed with ENOMEM.
//!
//! Hot reload swaps the version here: [`InstancePool::install`] makes every *later* `take` use
//! the new version, while calls in flight keep the instance they hold and finish on the old
//! one; an old instance given back is dropped. A lane delivers a key's jobs one call after
//! another, so the swap falls between two calls of any key: nothing is lost, repeated or
//! reordered by it. [`InstancePool::remove`] leaves the destination without a plugin: its lane
//! pauses and its jobs stay pending until a plugin is installed again.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::retry::RetryPolicy;
use sluice_runtime::{CallError, CallErrorCode, InstanceSpec, PluginInstance, PluginRuntime};

/// How long an instance given back is kept for the next call. A busy destination reuses its
/// instances long before this; one that went quiet gives their memory back.
pub const IDLE_KEEP: Duration = Duration::from_secs(60);

/// What a lane takes from its plugin's manifest (and the destination's config): fixed for one
/// active period of the lane, read again at the next.
#[derive(Debug, Clone)]
pub struct LaneShape {
    /// Jobs per plugin call.
    pub batch_size: usize,
    /// Plugin calls in flight at once.
    pub max_in_flight: usize,
    /// A call may carry several consecutive jobs of one key (the manifest's `ordered_batches`).
    pub ordered_batches: bool,
    /// Payload bytes per call (so that a call fits the plugin's memory).
    pub call_max_bytes: usize,
    /// Jobs held in memory (read ahead, queued, in flight).
    pub max_held_jobs: usize,
    pub policy: RetryPolicy,
}

/// One version of the destination's plugin, configured.
#[derive(Debug)]
struct Version {
    spec: Arc<InstanceSpec>,
    shape: LaneShape,
    /// Counts installs: instances of an older one are not reused.
    generation: u64,
}

/// An instance on loan from the pool, tagged with the version it runs.
pub struct Pooled {
    instance: PluginInstance,
    generation: u64,
}

impl Deref for Pooled {
    type Target = PluginInstance;
    fn deref(&self) -> &PluginInstance {
        &self.instance
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut PluginInstance {
        &mut self.instance
    }
}

/// Instances given back, most recent last, each with the time it was given back.
struct IdleList<T>(Vec<(T, Instant)>);

impl<T> IdleList<T> {
    fn push(&mut self, item: T, now: Instant) {
        self.0.push((item, now));
    }

    /// The most recently given back: the one likeliest to be warm.
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|(item, _)| item)
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// Drops what was given back `IDLE_KEEP` or more before `now`; returns how many.
    fn trim(&mut self, now: Instant) -> usize {
        let before = self.0.len();
        self.0
            .retain(|(_, since)| now.saturating_duration_since(*since) < IDLE_KEEP);
        before - self.0.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

pub struct InstancePool {
    runtime: PluginRuntime,
    destination_id: String,
    current: RwLock<Option<Version>>,
    idle: Mutex<IdleList<Pooled>>,
    /// Whether a version is installed, for lanes waiting for one.
    available: watch::Sender<bool>,
}

impl InstancePool {
    /// A pool with no plugin yet.
    pub fn new(runtime: PluginRuntime, destination_id: String) -> InstancePool {
        InstancePool {
            runtime,
            destination_id,
            current: RwLock::new(None),
            idle: Mutex::new(IdleList(Vec::new())),
            available: watch::Sender::new(false),
        }
    }

    pub fn destination_id(&self) -> &str {
        &self.destination_id
    }

    /// The plugin's name for logs ("-" when none is installed).
    pub fn plugin_name(&self) -> String {
        let current = self.current.read().ok();
        let name = current
            .as_ref()
            .and_then(|c| c.as_ref())
            .map(|v| v.spec.plugin.name.as_str());
        name.unwrap_or("-").to_string()
    }

    pub fn is_available(&self) -> bool {
        *self.available.borrow()
    }

    /// Waits until a version is installed.
    pub async fn wait_available(&self) {
        let mut rx = self.available.subscribe();
        let _ = rx.wait_for(|a| *a).await;
    }

    /// What the current version asks of the lane.
    pub fn shape(&self) -> Option<LaneShape> {
        let current = self.current.read().ok()?;
        current.as_ref().map(|v| v.shape.clone())
    }

    /// Makes `spec` the version every later `take` uses. Instances of the older version
    /// still idle are dropped; those on loan are dropped when given back.
    pub fn install(&self, spec: Arc<InstanceSpec>, shape: LaneShape) {
        let generation = {
            let Ok(mut current) = self.current.write() else {
                return;
            };
            let generation = current.as_ref().map_or(1, |v| v.generation + 1);
            *current = Some(Version {
                spec,
                shape,
                generation,
            });
            generation
        };
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        tracing::trace!(destination = %self.destination_id, generation, "plugin version installed");
        self.available.send_replace(true);
    }

    /// Leaves the destination without a plugin: later `take`s fail, and its lane pauses.
    pub fn remove(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.available.send_replace(false);
    }

    /// An idle instance of the current version, or a freshly instantiated and configured one.
    pub async fn take(&self) -> Result<Pooled, CallError> {
        let (spec, generation) = {
            let current = self.current.read().map_err(|_| unavailable("poisoned"))?;
            let v = current
                .as_ref()
                .ok_or_else(|| unavailable("the destination's plugin is not loaded"))?;
            (v.spec.clone(), v.generation)
        };
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        if let Some(pooled) = idle.filter(|p| p.generation == generation) {
            return Ok(pooled);
        }
        let instance = PluginInstance::new(&self.runtime, &spec).await?;
        Ok(Pooled {
            instance,
            generation,
        })
    }

    /// Returns an instance for reuse; a poisoned one, or one of a replaced version, is dropped.
    pub fn give_back(&self, pooled: Pooled) {
        if pooled.instance.is_poisoned() {
            return;
        }
        let current = self
            .current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|v| v.generation));
        if current != Some(pooled.generation) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(pooled, Instant::now());
        }
    }

    /// Drops the instances idle since before `now - IDLE_KEEP`; returns how many.
    pub fn trim(&self, now: Instant) -> usize {
        self.idle.lock().map_or(0, |mut idle| idle.trim(now))
    }
}

fn unavailable(message: &str) -> CallError {
    CallError {
        code: CallErrorCode::Unavailable,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_idle_for_idle_keep_is_dropped_and_a_recent_one_kept() {
        let t0 = Instant::now();
        let mut idle = IdleList(Vec::new());
        idle.push("old", t0);
        idle.push("recent", t0 + Duration::from_secs(30));
        assert_eq!(idle.trim(t0 + IDLE_KEEP - Duration::from_millis(1)), 0);
        assert_eq!(idle.trim(t0 + IDLE_KEEP), 1);
        assert_eq!(idle.len(), 1);
        assert_eq!(idle.pop(), Some("recent"));
        assert_eq!(idle.trim(t0 + IDLE_KEEP * 10), 0);
    }

    #[test]
    fn the_most_recently_given_back_is_taken_first() {
        let t0 = Instant::now();
        let mut idle = IdleList(Vec::new());
        idle.push(1, t0);
        idle.push(2, t0);
        assert_eq!(idle.pop(), Some(2));
        assert_eq!(idle.pop(), Some(1));
        assert_eq!(idle.pop(), None);
    }
}
