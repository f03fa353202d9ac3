//! The plugin runtime: one wasmtime engine and linker shared by every plugin, an epoch ticker
//! for deadlines, and the host's outbound HTTP client.
//!
//! - `loader`: plugins directory → compiled, validated [`LoadedPlugin`]s
//! - `instance`: a configured instance serving one destination ([`PluginInstance`])
//! - `host_api`: the `http`/`log`/`signing` imports and the per-instance store state;
//!   `signing`: the native HMAC behind `signing`; `compat`: plugins built against WIT 0.1.x
//! - `limits`: deadline and memory cap; `allowlist`: outbound host patterns;
//!   `net_policy`: the addresses any host may resolve to (SSRF guard); `outbound`: HTTP client
//! - `manifest`: the `NAME.toml` beside each plugin
//! - `redact`: secrets and URL credentials kept out of logs, errors and output

pub mod allowlist;
pub mod bindings;
mod compat;
pub mod host_api;
pub mod instance;
pub mod limiter;
pub mod limits;
pub mod loader;
pub mod manifest;
pub mod metrics;
pub mod net_policy;
pub mod outbound;
pub mod redact;
pub mod secret_refs;
pub mod signing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

pub use instance::{CallError, CallErrorCode, InstanceSpec, PluginInstance};
pub use loader::{LoadError, LoadedPlugin, PluginLoadError};
pub use manifest::Manifest;
pub use net_policy::NetworkPolicy;

use bindings::Destination;
use host_api::HostState;

/// Shared by all plugins and destinations; cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    /// One outbound client per network policy (see `outbound`).
    http: Arc<Mutex<HashMap<NetworkPolicy, outbound::Outbound>>>,
    /// wasmtime's compile cache, kept to read its hit count; `None` when disabled.
    pub(crate) cache: Option<Cache>,
}

/// Eviction limits of the compile cache. wasmtime's worker checks the directory every
/// [`CACHE_CLEANUP_INTERVAL`] and, over either soft limit, deletes the least recently used
/// entries. It has no age limit: an entry lives until the limits push it out (a few MB per
/// plugin version, so these hold hundreds of versions).
const CACHE_MAX_FILES: u64 = 1_000;
const CACHE_MAX_BYTES: u64 = 1 << 30;
const CACHE_CLEANUP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// wasmtime's compile cache in `dir`: entries keyed by the component's bytes and the engine's
/// configuration and version (wasmtime's own key), written atomically, read back only by an
/// engine they fit, so no unsafe deserialisation of our own is needed.
fn compile_cache(dir: &Path) -> anyhow::Result<Cache> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("resolving the plugin cache dir {}", dir.display()))?;
    let mut config = CacheConfig::new();
    config
        .with_directory(&dir)
        .with_file_count_soft_limit(CACHE_MAX_FILES)
        .with_files_total_size_soft_limit(CACHE_MAX_BYTES)
        .with_cleanup_interval(CACHE_CLEANUP_INTERVAL);
    Cache::new(config)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("opening the plugin compile cache in {}", dir.display()))
}

impl PluginRuntime {
    /// The runtime; compiled components are cached in `cache_dir` (none: always compile, as
    /// the one-shot CLI commands do).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginRuntime> {
        let cache = cache_dir.as_deref().map(compile_cache).transpose()?;
        let mut config = Config::new();
        config.cache(cache.clone());
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // We use no WASI 0.3 async exports; concurrency support costs ~0.8 µs per call.
        config.concurrency_support(false);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        // Rust's std imports WASI 0.2 even in plugins that never touch files: link it, with a
        // context that grants nothing (see host_api).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Destination::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the sluice host interfaces")?;
        // The 0.1.1 interfaces too: plugins built against 0.1.x import them (their names carry
        // the version, so both sets live side by side).
        bindings::v0_1::Destination::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the sluice 0.1 host interfaces")?;

        start_epoch_ticker(&engine)?;
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            http: Arc::default(),
            cache,
        })
    }
}

impl PluginRuntime {
    /// The outbound client for destinations with this network policy.
    pub fn outbound(&self, policy: &NetworkPolicy) -> anyhow::Result<outbound::Outbound> {
        let mut clients = self
            .http
            .lock()
            .map_err(|_| anyhow::anyhow!("outbound client cache poisoned"))?;
        if let Some(client) = clients.get(policy) {
            return Ok(client.clone());
        }
        let client = outbound::Outbound::new(policy.clone())?;
        clients.insert(policy.clone(), client.clone());
        Ok(client)
    }
}

/// Drives epoch deadlines. Holds only a weak handle so that it ends with the engine.
fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(limits::TICK);
            }
        })
        .context("spawning the epoch ticker thread")?;
    Ok(())
}
