//! Which plugin version each destination runs: installed at start and swapped by hot reload.
//!
//! A plugin version reaches a destination only after it passed every check: it compiled, it
//! matches the WIT world, its `allowed_hosts` resolve against the destination's config, and an
//! instance of it accepted the destination's config in `configure`. A version that fails any of
//! them is rejected with one log line naming the destination and the reason, the reason is
//! recorded on the lane (`lane_status.plugin_error`), and the version that was serving keeps
//! serving. Removing a plugin's files leaves its destinations without a plugin: their lanes
//! pause and their jobs stay pending.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::Mutex;
use uuid::Uuid;

use super::MIN_CALL_BYTES;
use super::pool::{InstancePool, LaneShape};
use super::retry::RetryPolicy;
use sluice_config::DestinationConfig;
use sluice_core::DestinationId;
use sluice_runtime::allowlist::{Allowlist, AllowlistError};
use sluice_runtime::limiter::Limiter;
use sluice_runtime::secret_refs::{self, SecretRefError};
use sluice_runtime::{
    CallError, CallErrorCode, InstanceSpec, LoadedPlugin, NetworkPolicy, PluginInstance,
    PluginLoadError, PluginRuntime,
};
use sluice_store::{LaneId, LoadedVersion, Store};

/// One destination's side of the plugin set. Replaced whole when the destination changes; the
/// pool stays.
pub(super) struct Slot {
    pub dest: DestinationConfig,
    pub pool: Arc<InstancePool>,
    /// Kept across versions: what the limit learned about the destination still holds.
    pub limiter: Arc<Limiter>,
}

/// Why a plugin version cannot serve a destination; the text is recorded on the lane
/// (`lane_status.plugin_error`).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("allowed_hosts: {0}")]
    Allowlist(AllowlistError),
    /// A secret given as `{ env = … }` or `{ file = … }` cannot be read on this host.
    #[error("{0}")]
    SecretRef(SecretRefError),
    #[error("outbound HTTP client: {0:#}")]
    Outbound(anyhow::Error),
    /// Instantiating the plugin or its `configure` failed.
    #[error("{0}")]
    Configure(CallError),
}

/// Why a destination's config cannot run, and the field at fault (`config.url`, `plugin`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigRefused {
    pub field: String,
    pub message: String,
}

impl ConfigRefused {
    /// A plugin's `configure` error: `path: message` names a field of the config (the SDK's
    /// `ConfigError`); other text concerns the config as a whole.
    fn from_plugin(text: &str) -> ConfigRefused {
        // The runtime says who refused; the plugin's own words follow.
        let text = text
            .strip_prefix("the plugin rejected the destination config: ")
            .unwrap_or(text);
        let field_path = text.split_once(": ").filter(|(path, _)| {
            !path.is_empty()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b))
        });
        match field_path {
            Some((path, message)) => ConfigRefused {
                field: format!("config.{path}"),
                message: message.to_string(),
            },
            None => ConfigRefused {
                field: "config".into(),
                message: text.to_string(),
            },
        }
    }
}

/// What a plugin file looked like when it was last loaded (size and mtime of the wasm and of
/// its manifest): a change means "load it again".
type FileStamp = [(u64, Option<SystemTime>); 2];

/// The destinations' plugin pools and the plugin files they were built from.
pub struct PluginSet {
    runtime: PluginRuntime,
    store: Store,
    me: Uuid,
    server_networks: Vec<ipnet::IpNet>,
    /// By destination; the catalog follower adds, replaces and removes them.
    slots: RwLock<HashMap<DestinationId, Arc<Slot>>>,
    state: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// By plugin name.
    plugins: HashMap<String, Arc<LoadedPlugin>>,
    stamps: HashMap<PathBuf, FileStamp>,
    /// The plugins directory was read at least once: a plugin not in `plugins` is missing.
    synced: bool,
}

impl PluginSet {
    pub(super) fn new(
        runtime: PluginRuntime,
        store: Store,
        me: Uuid,
        server_networks: Vec<ipnet::IpNet>,
    ) -> PluginSet {
        PluginSet {
            runtime,
            store,
            me,
            server_networks,
            slots: RwLock::new(HashMap::new()),
            state: Mutex::new(Loaded::default()),
        }
    }

    pub(super) fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// The pool a destination's calls go through, if it has a slot.
    pub(super) fn pool_of(&self, id: &DestinationId) -> Option<Arc<InstancePool>> {
        self.read_slots().get(id).map(|s| s.pool.clone())
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, HashMap<DestinationId, Arc<Slot>>> {
        // A panic while holding the lock cannot leave the map half-written (each write is one
        // insert or remove), so a poisoned lock is still good to read.
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_slots(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<DestinationId, Arc<Slot>>> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots of destinations using `plugin` (or all of them).
    fn slots_of(&self, plugin: Option<&str>) -> Vec<Arc<Slot>> {
        self.read_slots()
            .values()
            .filter(|s| plugin.is_none_or(|p| s.dest.plugin == p))
            .cloned()
            .collect()
    }

    /// Adds a destination and installs its plugin, if loaded.
    pub(super) async fn set(&self, slot: Slot) {
        let slot = Arc::new(slot);
        self.write_slots()
            .insert(slot.dest.id.clone(), slot.clone());
        self.install_slot(&slot).await;
    }

    /// A destination changed: the next call runs its new config (calls in flight finish on
    /// the instances they hold). A new `max_concurrency` starts a new limiter.
    pub(super) async fn update(&self, dest: &DestinationConfig) {
        let Some(old) = self.read_slots().get(&dest.id).cloned() else {
            return;
        };
        let limiter = if old.dest.max_concurrency == dest.max_concurrency {
            old.limiter.clone()
        } else {
            Arc::new(Limiter::new(
                super::INITIAL_CONCURRENCY,
                dest.max_concurrency,
            ))
        };
        self.set(Slot {
            dest: dest.clone(),
            pool: old.pool.clone(),
            limiter,
        })
        .await;
    }

    /// A destination was deleted: its pool serves no more calls.
    pub(super) fn remove(&self, id: &DestinationId) {
        if let Some(slot) = self.write_slots().remove(id) {
            slot.pool.remove();
        }
    }

    /// Whether `dest` would run: its plugin is loaded here, its `allowed_hosts` resolve
    /// against the config, and an instance accepts the config in `configure`. The catalog
    /// accepts a change only when this passes (the admin API asks before it writes).
    pub async fn check(&self, dest: &DestinationConfig) -> Result<(), ConfigRefused> {
        let plugin = self.state.lock().await.plugins.get(&dest.plugin).cloned();
        let Some(plugin) = plugin else {
            return Err(ConfigRefused {
                field: "plugin".into(),
                message: format!("no plugin `{}` in the plugins directory", dest.plugin),
            });
        };
        let slot = Slot {
            dest: dest.clone(),
            pool: Arc::new(InstancePool::new(self.runtime.clone(), dest.id.to_string())),
            limiter: Arc::new(Limiter::new(1, 1)),
        };
        match self.prepare(&slot, &plugin).await {
            Ok(_) => Ok(()),
            Err(PrepareError::Configure(e)) if e.code == CallErrorCode::Config => {
                Err(ConfigRefused::from_plugin(&e.message))
            }
            Err(PrepareError::SecretRef(e)) => Err(ConfigRefused {
                field: format!("config.{}", e.field()),
                message: e.reason(),
            }),
            Err(e) => Err(ConfigRefused {
                field: "config".into(),
                message: e.to_string(),
            }),
        }
    }

    /// Drops the plugin instances idle for longer than `pool::IDLE_KEEP`; returns how many.
    pub fn trim_idle(&self, now: std::time::Instant) -> usize {
        self.slots_of(None).iter().map(|s| s.pool.trim(now)).sum()
    }

    /// The secret config paths the loaded version of `plugin` declares (`None`: not loaded).
    pub async fn secret_paths(&self, plugin: &str) -> Option<Vec<String>> {
        let state = self.state.lock().await;
        state
            .plugins
            .get(plugin)
            .map(|p| p.manifest.secrets.clone())
    }

    /// Installs the loaded version of the slot's plugin, or records that there is none.
    async fn install_slot(&self, slot: &Arc<Slot>) {
        let (plugin, synced) = {
            let state = self.state.lock().await;
            (state.plugins.get(&slot.dest.plugin).cloned(), state.synced)
        };
        match plugin {
            Some(plugin) => self.install_one(slot, &plugin).await,
            None if synced => {
                slot.pool.remove();
                self.record_no_plugin(slot).await;
            }
            // The first look at the plugins directory reports it.
            None => {}
        }
    }

    /// Loads the plugins directory: at start, and again whenever it changes. Only files that
    /// changed since the last look are loaded again.
    pub async fn sync_dir(&self, dir: &Path) {
        let mut state = self.state.lock().await;
        let mut seen = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugins directory");
                return;
            }
        };
        let mut wasm: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        wasm.sort();
        for path in wasm {
            let stamp = stamp(&path);
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            seen.push(name.clone());
            if state.stamps.get(&path) == Some(&stamp) {
                continue;
            }
            state.stamps.insert(path.clone(), stamp);
            let previous = state.plugins.get(&name).cloned();
            match self.runtime.load_file(&path).await {
                Ok(plugin) => {
                    if previous
                        .as_ref()
                        .is_some_and(|p| p.sha256 == plugin.sha256 && p.manifest == plugin.manifest)
                    {
                        continue;
                    }
                    let plugin = Arc::new(plugin);
                    tracing::info!(plugin = %plugin.name, version = %plugin.manifest.version, sha256 = %&plugin.sha256[..12], replaces = previous.as_ref().map_or("-", |p| &p.sha256[..12]), "plugin loaded");
                    self.install(&plugin).await;
                    state.plugins.insert(name, plugin);
                }
                Err(reason) => {
                    let reason = PluginLoadError { path, reason }.to_string();
                    if previous.is_some() {
                        tracing::error!(plugin = %name, error = %reason, "new plugin file rejected; the previous version keeps serving");
                    } else {
                        tracing::error!(plugin = %name, error = %reason, "plugin not loaded");
                        self.record_missing(&name, &reason).await;
                    }
                }
            }
        }
        // Plugins whose files are gone.
        let gone: Vec<String> = state
            .plugins
            .keys()
            .filter(|n| !seen.contains(n))
            .cloned()
            .collect();
        for name in gone {
            state.plugins.remove(&name);
            state
                .stamps
                .retain(|p, _| p.file_stem().and_then(|s| s.to_str()) != Some(name.as_str()));
            tracing::warn!(plugin = %name, "plugin removed; its destinations pause and their jobs stay pending");
            for slot in self.slots_of(Some(&name)) {
                slot.pool.remove();
                self.record(
                    &slot.dest,
                    &name,
                    None,
                    Some("the plugin was removed from the plugins directory"),
                )
                .await;
            }
        }
        state.synced = true;
        // Destinations whose plugin has never been seen.
        for slot in self.slots_of(None) {
            if !state.plugins.contains_key(&slot.dest.plugin) && !seen.contains(&slot.dest.plugin) {
                self.record_no_plugin(&slot).await;
            }
        }
        let loaded: Vec<LoadedVersion> = state
            .plugins
            .values()
            .map(|p| LoadedVersion {
                plugin: p.name.clone(),
                sha256: p.sha256.clone(),
                version: p.manifest.version.clone(),
            })
            .collect();
        if let Err(e) = self.store.host_plugins_set(self.me, &loaded).await {
            tracing::warn!(error = %e, "could not record this host's plugins");
        }
    }

    /// Installs `plugin` for each destination that uses it, after checking it against that
    /// destination; a destination it fails keeps the version it had.
    async fn install(&self, plugin: &Arc<LoadedPlugin>) {
        for slot in self.slots_of(Some(&plugin.name)) {
            self.install_one(&slot, plugin).await;
        }
    }

    async fn install_one(&self, slot: &Arc<Slot>, plugin: &Arc<LoadedPlugin>) {
        let dest = &slot.dest;
        match self.prepare(slot, plugin).await {
            Ok((spec, shape)) => {
                // The destination may have changed or gone while `configure` ran: only the
                // slot still in place installs.
                let current = self
                    .read_slots()
                    .get(&dest.id)
                    .is_some_and(|s| Arc::ptr_eq(s, slot));
                if !current {
                    return;
                }
                slot.pool.install(spec, shape);
                tracing::info!(destination = %dest.id, plugin = %plugin.name, sha256 = %&plugin.sha256[..12], "destination configured");
                self.record(dest, &plugin.name, Some(&plugin.sha256), None)
                    .await;
            }
            Err(reason) => {
                let reason = reason.to_string();
                let keeps = if slot.pool.is_available() {
                    "the previous version keeps serving it"
                } else {
                    "its jobs stay pending until this is fixed"
                };
                tracing::error!(destination = %dest.id, plugin = %plugin.name, error = %reason, "plugin rejected for this destination; {keeps}");
                self.record(dest, &plugin.name, Some(&plugin.sha256), Some(&reason))
                    .await;
            }
        }
    }

    /// Everything a destination needs from one plugin version, with `configure` already run
    /// once on a probe instance. The probe is not kept (see `pool`): the first call makes its
    /// own instance.
    async fn prepare(
        &self,
        slot: &Slot,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<(Arc<InstanceSpec>, LaneShape), PrepareError> {
        let dest = &slot.dest;
        let manifest = &plugin.manifest;
        let config = secret_refs::resolve(&dest.config, &manifest.secrets)
            .map_err(PrepareError::SecretRef)?;
        let allowlist = Allowlist::resolve(&manifest.allowed_hosts, &config)
            .map_err(PrepareError::Allowlist)?;
        let policy = NetworkPolicy::merged(&self.server_networks, &dest.allowed_private_networks);
        let http = self
            .runtime
            .outbound(&policy)
            .map_err(PrepareError::Outbound)?;
        let memory = manifest.memory_bytes();
        let spec = Arc::new(InstanceSpec {
            plugin: plugin.clone(),
            destination_id: dest.id.to_string(),
            config_json: config.to_string(),
            allowlist: Arc::new(allowlist),
            http,
            limiter: slot.limiter.clone(),
        });
        PluginInstance::new(&self.runtime, &spec)
            .await
            .map_err(PrepareError::Configure)?;
        let memory = usize::try_from(memory).unwrap_or(usize::MAX);
        let shape = LaneShape {
            batch_size: manifest.batch_size,
            max_in_flight: manifest.max_in_flight,
            ordered_batches: manifest.ordered_batches,
            // A call's payloads are copied into the plugin (and usually once more by it).
            call_max_bytes: (memory / 4).max(MIN_CALL_BYTES),
            max_held_jobs: (manifest.batch_size * manifest.max_in_flight * 4).max(1000),
            policy: RetryPolicy::resolve(&dest.retry, &manifest.retry),
        };
        Ok((spec, shape))
    }

    /// The destination's plugin is not in the plugins directory.
    async fn record_no_plugin(&self, slot: &Slot) {
        let reason = "no such plugin in the plugins directory";
        tracing::error!(destination = %slot.dest.id, plugin = %slot.dest.plugin, "{reason}; the destination's jobs stay pending until it is added");
        self.record(&slot.dest, &slot.dest.plugin, None, Some(reason))
            .await;
    }

    async fn record_missing(&self, plugin: &str, reason: &str) {
        for slot in self.slots_of(Some(plugin)) {
            self.record(&slot.dest, plugin, None, Some(reason)).await;
        }
    }

    async fn record(
        &self,
        dest: &DestinationConfig,
        plugin: &str,
        sha256: Option<&str>,
        error: Option<&str>,
    ) {
        let lane = LaneId {
            workspace_id: dest.workspace.to_string(),
            destination_id: dest.id.to_string(),
        };
        if let Err(e) = self
            .store
            .lane_plugin_status(&lane, plugin, sha256, error)
            .await
        {
            tracing::warn!(destination = %dest.id, error = %e, "could not record the destination's plugin status");
        }
    }

    /// The manifests of the plugins loaded here, by name: what the admin page builds its
    /// destination forms from (declared config fields, secrets).
    pub async fn manifests(&self) -> Vec<sluice_runtime::Manifest> {
        let state = self.state.lock().await;
        let mut all: Vec<_> = state.plugins.values().map(|p| p.manifest.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

fn stamp(wasm: &Path) -> FileStamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((0, None), |m| (m.len(), m.modified().ok()));
    [one(wasm), one(&wasm.with_extension("toml"))]
}
