//! The plugins the tests run, compiled once per test run with `sluice plugin build` (which is
//! itself under test here) into `target/e2e/plugins`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Plugin crates built for the tests: the shipped webhook and the misbehaving test guest.
const CRATES: [&str; 2] = ["plugins/webhook", "tests/plugins/misbehave"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn e2e_dir() -> PathBuf {
    repo_root().join("target/e2e")
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
                let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
                    .args(["plugin", "build"])
                    .arg(repo_root().join(krate))
                    .arg("--out")
                    .arg(&out)
                    // Its own target dir: the outer `cargo test` may hold the lock on target/.
                    .arg("--target-dir")
                    .arg(e2e_dir().join("guests"))
                    .status()
                    .expect("run sluice plugin build");
                assert!(status.success(), "sluice plugin build {krate} failed");
            }
            out
        })
        .clone()
}
