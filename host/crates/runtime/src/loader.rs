//! Loading plugins from the plugins directory: `NAME.wasm` + manifest `NAME.toml`.
//!
//! Each component is compiled once and cached on disk by wasmtime's compile cache (see
//! `PluginRuntime::new`), then checked against the `sluice:destination@0.1.1` world: a component
//! that imports something the host does not provide, or lacks an export, is rejected with the
//! mismatch named. A bad plugin never stops the others from loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::PluginRuntime;
use super::bindings::DestinationPre;
use super::host_api::HostState;
use super::manifest::{Manifest, ManifestError};

/// The WIT world every plugin must implement.
pub const WORLD: &str = "sluice:destination/destination@0.1.1";

/// A compiled, validated plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    pub manifest: Manifest,
    pub wasm_path: PathBuf,
    pub sha256: String,
    pub(crate) pre: DestinationPre<HostState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.manifest.version)
            .field("wasm_path", &self.wasm_path)
            .field("sha256", &self.sha256)
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
    #[error("does not match the `{world}` world (imports): {0:#}", world = WORLD)]
    Imports(wasmtime::Error),
    #[error("does not match the `{world}` world (exports): {0:#}", world = WORLD)]
    Exports(wasmtime::Error),
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
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Imports)?;
        let pre = DestinationPre::new(instance_pre).map_err(LoadError::Exports)?;
        Ok(LoadedPlugin {
            name: manifest.name.clone(),
            manifest,
            wasm_path: wasm_path.to_path_buf(),
            sha256,
            pre,
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
