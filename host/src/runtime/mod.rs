//! The plugin runtime: one wasmtime engine and linker shared by every plugin, an epoch ticker
//! for deadlines, and the host's outbound HTTP client.
//!
//! - `loader`: plugins directory → compiled, validated [`LoadedPlugin`]s
//! - `instance`: a configured instance serving one destination ([`PluginInstance`])
//! - `host_api`: the `http`/`log` imports and the per-instance store state
//! - `limits`: deadline and memory cap; `allowlist`: outbound host patterns;
//!   `net_policy`: the addresses any host may resolve to (SSRF guard); `outbound`: HTTP client
//! - `manifest`: the `NAME.toml` beside each plugin

pub mod allowlist;
pub mod bindings;
pub mod host_api;
pub mod instance;
pub mod limiter;
pub mod limits;
pub mod loader;
pub mod manifest;
pub mod net_policy;
pub mod outbound;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use instance::{CallError, InstanceSpec, PluginInstance};
pub use loader::{LoadError, LoadedPlugin};
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
    /// Where compiled components are cached; `None` disables the cache.
    pub(crate) cache_dir: Option<PathBuf>,
}

impl PluginRuntime {
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginRuntime> {
        let mut config = Config::new();
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

        start_epoch_ticker(&engine)?;
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            http: Arc::default(),
            cache_dir,
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
