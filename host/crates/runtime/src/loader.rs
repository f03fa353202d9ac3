//! Loading plugins from the plugins directory: `NAME.wasm` + manifest `NAME.toml`.
//!
//! Each component is compiled once and cached on disk by wasmtime's compile cache (see
//! `PluginRuntime::new`), then checked against the world it was built for: the
//! `sluice:destination@0.2.0` world, or the 0.1.1 one for a component that exports the 0.1.x
//! `plugin` interface (older plugins keep loading). A component that imports something the host
//! does not provide, or lacks an export, is rejected with the mismatch named. A bad plugin never
//! stops the others from loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::PluginRuntime;
use super::bindings::{DestinationPre, v0_1};
use super::host_api::HostState;
use super::manifest::{Manifest, ManifestError};

/// The WIT world plugins are built against today.
pub const WORLD: &str = "sluice:destination/destination@0.2.0";
/// The older world the host still serves, for components that export its `plugin` interface.
pub const WORLD_0_1: &str = "sluice:destination/destination@0.1.1";
/// The export that marks a component built against 0.1.x.
const PLUGIN_EXPORT_0_1: &str = "sluice:destination/plugin@0.1.";

/// A plugin ready to instantiate, in the world it was built for.
pub(crate) enum Pre {
    V0_2(DestinationPre<HostState>),
    V0_1(v0_1::DestinationPre<HostState>),
}

/// A compiled, validated plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    pub manifest: Manifest,
    pub wasm_path: PathBuf,
    pub sha256: String,
    pub(crate) pre: Pre,
}

impl LoadedPlugin {
    /// The WIT world the plugin was built against (`sluice:destination/destination@0.2.0`, or
    /// `@0.1.1` for any 0.1.x).
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::V0_2(_) => WORLD,
            Pre::V0_1(_) => WORLD_0_1,
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.manifest.version)
            .field("wasm_path", &self.wasm_path)
            .field("sha256", &self.sha256)
            .field("world", &self.world())
            .finish()
    }
}

/// Why one plugin file of a directory could not be loaded: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("plugin {path}: {reason}")]
pub struct PluginLoadError {
    pub path: PathBuf,
    pub reason: LoadError,
}

/// Why a plugin cannot be loaded (the text does not repeat the plugin file's path).
///
/// The text carries the underlying error's text, so `source()` does not return it too (a
/// reporter that prints the chain would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the plugins directory: {0}")]
    ReadDir(std::io::Error),
    #[error("the file name is not valid UTF-8")]
    FileName,
    #[error("cannot read its manifest {path}: {error}")]
    ReadManifest {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest {manifest} names the plugin `{name}`, but the file is `{stem}.wasm`")]
    NameMismatch {
        manifest: PathBuf,
        name: String,
        stem: String,
    },
    #[error("cannot read: {0}")]
    ReadWasm(std::io::Error),
    #[error("compilation task failed: {0}")]
    CompileTask(tokio::task::JoinError),
    #[error("is not a valid WebAssembly component: {0:#}")]
    NotAComponent(wasmtime::Error),
    #[error("does not match the `{world}` world (imports): {error:#}")]
    Imports {
        world: &'static str,
        error: wasmtime::Error,
    },
    #[error("does not match the `{world}` world (exports): {error:#}")]
    Exports {
        world: &'static str,
        error: wasmtime::Error,
    },
}

impl PluginRuntime {
    /// Loads every `*.wasm` in `dir`. Returns the plugins that loaded and the errors of those
    /// that did not.
    pub async fn load_dir(&self, dir: &Path) -> (Vec<Arc<LoadedPlugin>>, Vec<PluginLoadError>) {
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(PluginLoadError {
                    path: dir.to_path_buf(),
                    reason: LoadError::ReadDir(e),
                });
                return (loaded, errors);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            match self.load_file(&path).await {
                Ok(p) => loaded.push(Arc::new(p)),
                Err(reason) => errors.push(PluginLoadError { path, reason }),
            }
        }
        (loaded, errors)
    }

    /// Loads one plugin; the error says what is wrong with it.
    pub async fn load_file(&self, wasm_path: &Path) -> Result<LoadedPlugin, LoadError> {
        let stem = wasm_path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or(LoadError::FileName)?
            .to_string();
        let manifest_path = wasm_path.with_extension("toml");
        let manifest_text =
            std::fs::read_to_string(&manifest_path).map_err(|error| LoadError::ReadManifest {
                path: manifest_path.clone(),
                error,
            })?;
        let manifest = Manifest::parse(&manifest_text, &manifest_path)?;
        if manifest.name != stem {
            return Err(LoadError::NameMismatch {
                manifest: manifest_path,
                name: manifest.name,
                stem,
            });
        }
        let bytes = std::fs::read(wasm_path).map_err(LoadError::ReadWasm)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));

        let (component, from_cache) = {
            let runtime = self.clone();
            tokio::task::spawn_blocking(move || runtime.compile(&bytes))
                .await
                .map_err(LoadError::CompileTask)??
        };
        // Only a serving host has a cache; the one-shot CLI commands keep their output quiet.
        if self.cache.is_some() {
            tracing::info!(plugin = %manifest.name, sha256 = %&sha256[..12], from_cache, "plugin compiled");
        }
        let pre = self.pre(&component)?;
        Ok(LoadedPlugin {
            name: manifest.name.clone(),
            manifest,
            wasm_path: wasm_path.to_path_buf(),
            sha256,
            pre,
        })
    }

    /// The component linked and checked against the world its `plugin` export belongs to.
    fn pre(&self, component: &Component) -> Result<Pre, LoadError> {
        let built_for_0_1 = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with(PLUGIN_EXPORT_0_1));
        let world = if built_for_0_1 { WORLD_0_1 } else { WORLD };
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|error| LoadError::Imports { world, error })?;
        let exports = |error| LoadError::Exports { world, error };
        Ok(if built_for_0_1 {
            Pre::V0_1(v0_1::DestinationPre::new(instance_pre).map_err(exports)?)
        } else {
            Pre::V0_2(DestinationPre::new(instance_pre).map_err(exports)?)
        })
    }

    /// Compiles `bytes` (wasmtime reads an earlier compilation from its cache if it has one);
    /// also says whether the cache had it.
    fn compile(&self, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        // Loads run one at a time (load_dir is sequential), so a hit counted during this
        // compilation is this component's.
        let hits = || self.cache.as_ref().map_or(0, |c| c.cache_hits());
        let before = hits();
        let component = Component::new(&self.engine, bytes).map_err(LoadError::NotAComponent)?;
        Ok((component, hits() > before))
    }
}
