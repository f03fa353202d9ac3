//! The plugins the tests run, compiled once per test run with `sluice plugin build` (which is
//! itself under test here) into `target/e2e/plugins`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Plugin crates built for the tests: the shipped plugins and the misbehaving test guest.
const CRATES: [&str; 5] = [
    "plugins/webhook",
    "plugins/http-batch",
    "plugins/amplitude",
    "plugins/posthog",
    "tests/plugins/misbehave",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn e2e_dir() -> PathBuf {
    repo_root().join("target/e2e")
}

/// Cargo's target directory for the guests: not the outer `cargo test`'s, whose lock it may hold.
pub fn guests_target_dir() -> PathBuf {
    e2e_dir().join("guests")
}

/// Where compiled components are cached across the tests of a run.
pub fn plugin_cache_dir() -> PathBuf {
    e2e_dir().join("plugin-cache")
}

/// The plugins directory every test's sluice loads (built on first use).
pub fn plugins_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = e2e_dir().join("plugins");
            for krate in CRATES {
                build_plugin(krate, &out);
            }
            out
        })
        .clone()
}

/// The raw component of `tests/plugins/wrong-world`, which implements an older draft of the
/// WIT (no `send`). Built with plain cargo: `sluice plugin build` refuses to publish it.
pub fn wrong_world_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Building the shipped plugins first installs the wasm target if it is missing.
            plugins_dir();
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "-p",
                    "sluice-test-wrong-world",
                ])
                .arg("--manifest-path")
                .arg(repo_root().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(guests_target_dir())
                .status()
                .expect("run cargo build");
            assert!(
                status.success(),
                "building tests/plugins/wrong-world failed"
            );
            guests_target_dir().join("wasm32-wasip2/release/sluice_test_wrong_world.wasm")
        })
        .clone()
}

/// `tests/plugins/wit-<version>` (a guest built against a frozen copy of that WIT), built with
/// `sluice plugin build` into its own directory on first use; returns that directory.
pub fn frozen_plugin_dir(version: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held while building: two tests asking at once build once (cargo would lock anyway).
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.get(version) {
        return dir.clone();
    }
    plugins_dir();
    let out = e2e_dir().join(format!("plugins-wit-{version}"));
    build_plugin(&format!("tests/plugins/wit-{version}"), &out);
    built.insert(version.to_string(), out.clone());
    out
}

/// `sluice plugin build` of the crate at `krate` (relative to the repository) into `out`.
fn build_plugin(krate: &str, out: &std::path::Path) {
    let status = Command::new(crate::harness::sluice_bin())
        .args(["plugin", "build"])
        .arg(repo_root().join(krate))
        .arg("--out")
        .arg(out)
        .arg("--target-dir")
        .arg(guests_target_dir())
        .status()
        .expect("run sluice plugin build");
    assert!(status.success(), "sluice plugin build {krate} failed");
}

/// For tests that change plugins: a data directory `dir` (readable by the embedded
/// PostgreSQL's user) with its own `plugins/` holding the shipped webhook plugin. Returns that
/// plugins directory; point the config at it with [`own_plugins`].
pub fn own_plugins_dir(dir: &std::path::Path) -> PathBuf {
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the data dir");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("create plugins dir");
    for f in ["webhook.wasm", "webhook.toml"] {
        std::fs::copy(plugins_dir().join(f), plugins.join(f)).expect("copy the webhook plugin");
    }
    plugins
}

/// `config` with `plugins_dir` pointing at the data directory's own `plugins/`.
pub fn own_plugins(config: &str) -> String {
    config.replace(
        &format!("plugins_dir = \"{}\"", plugins_dir().display()),
        "plugins_dir = \"plugins\"",
    )
}

/// Installs a plugin of the same component as the shipped `plugin` (`webhook`, `misbehave`)
/// under `name` in `plugins`, with its manifest changed by `edit`: how the tests try manifest
/// fields without building another guest.
pub fn variant(
    plugins: &std::path::Path,
    plugin: &str,
    name: &str,
    edit: impl FnOnce(&mut toml::Table),
) {
    let shipped = plugins_dir();
    std::fs::copy(
        shipped.join(format!("{plugin}.wasm")),
        plugins.join(format!("{name}.wasm")),
    )
    .expect("copy the component");
    let text = std::fs::read_to_string(shipped.join(format!("{plugin}.toml"))).expect("manifest");
    let mut manifest: toml::Table = toml::from_str(&text).expect("parse the manifest");
    manifest.insert("name".into(), name.into());
    edit(&mut manifest);
    std::fs::write(
        plugins.join(format!("{name}.toml")),
        toml::to_string(&manifest).expect("encode the manifest"),
    )
    .expect("write the manifest");
}
