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
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Mutex;
use uuid::Uuid;

use super::MIN_CALL_BYTES;
use super::pool::{InstancePool, LaneShape};
use super::retry::RetryPolicy;
use sluice_config::{Config, DestinationConfig};
use sluice_core::DestinationId;
use sluice_runtime::allowlist::{Allowlist, AllowlistError};
use sluice_runtime::limiter::Limiter;
use sluice_runtime::{
    CallError, InstanceSpec, LoadedPlugin, NetworkPolicy, PluginInstance, PluginLoadError,
    PluginRuntime,
};
use sluice_store::{LaneId, LoadedVersion, Store};

/// One destination's side of the plugin set.
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
    #[error("outbound HTTP client: {0:#}")]
    Outbound(anyhow::Error),
    /// Instantiating the plugin or its `configure` failed.
    #[error("{0}")]
    Configure(CallError),
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
    slots: HashMap<DestinationId, Slot>,
    state: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// By plugin name.
    plugins: HashMap<String, Arc<LoadedPlugin>>,
    stamps: HashMap<PathBuf, FileStamp>,
}

impl PluginSet {
    pub(super) fn new(
        runtime: PluginRuntime,
        store: Store,
        me: Uuid,
        config: &Config,
        slots: HashMap<DestinationId, Slot>,
    ) -> PluginSet {
        PluginSet {
            runtime,
            store,
            me,
            server_networks: config.server.allowed_private_networks.clone(),
            slots,
            state: Mutex::new(Loaded::default()),
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
            for slot in self.slots.values().filter(|s| s.dest.plugin == name) {
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
        // Destinations whose plugin has never been seen.
        for slot in self.slots.values() {
            if !state.plugins.contains_key(&slot.dest.plugin) && !seen.contains(&slot.dest.plugin) {
                tracing::error!(destination = %slot.dest.id, plugin = %slot.dest.plugin, dir = %dir.display(), "no such plugin in the plugins directory; the destination's jobs stay pending until it is added");
                self.record(
                    &slot.dest,
                    &slot.dest.plugin,
                    None,
                    Some("no such plugin in the plugins directory"),
                )
                .await;
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
        for slot in self.slots.values().filter(|s| s.dest.plugin == plugin.name) {
            let dest = &slot.dest;
            match self.prepare(slot, plugin).await {
                Ok((spec, shape, probe)) => {
                    slot.pool.install(spec, shape, probe);
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
    }

    /// Everything a destination needs from one plugin version, with `configure` already run.
    async fn prepare(
        &self,
        slot: &Slot,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<(Arc<InstanceSpec>, LaneShape, PluginInstance), PrepareError> {
        let dest = &slot.dest;
        let manifest = &plugin.manifest;
        let allowlist = Allowlist::resolve(&manifest.allowed_hosts, &dest.config)
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
            config_json: dest.config.to_string(),
            allowlist: Arc::new(allowlist),
            http,
            limiter: slot.limiter.clone(),
        });
        let probe = PluginInstance::new(&self.runtime, &spec)
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
        Ok((spec, shape, probe))
    }

    async fn record_missing(&self, plugin: &str, reason: &str) {
        for slot in self.slots.values().filter(|s| s.dest.plugin == plugin) {
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
}

fn stamp(wasm: &Path) -> FileStamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((0, None), |m| (m.len(), m.modified().ok()));
    [one(wasm), one(&wasm.with_extension("toml"))]
}
