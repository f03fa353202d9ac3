//! `sluice plugin build <crate-dir> --out <plugins-dir>`: compile a plugin crate to a
//! `wasm32-wasip2` component and write `<name>.wasm` plus its manifest `<name>.toml`.
//!
//! The manifest comes from the crate's `[package.metadata.sluice]` table (see
//! `runtime::manifest` for the fields); `name` defaults to the package name and `version` to the
//! package version. The result is loaded with the same checks as `sluice serve` before it is
//! written, so a plugin that does not match the WIT world never reaches the plugins directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::runtime::{Manifest, PluginRuntime};

pub const TARGET: &str = "wasm32-wasip2";

/// Options of `sluice plugin build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub crate_dir: PathBuf,
    pub out_dir: PathBuf,
    /// Cargo's target directory (default: cargo's own choice).
    pub target_dir: Option<PathBuf>,
    /// Build with the `dev` profile instead of `release`.
    pub debug: bool,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
    pub bytes: u64,
}

pub async fn build(opts: &BuildOptions) -> anyhow::Result<Built> {
    ensure_target()?;
    let manifest_path = opts.crate_dir.join("Cargo.toml");
    let manifest_path = manifest_path
        .canonicalize()
        .with_context(|| format!("no Cargo.toml in {}", opts.crate_dir.display()))?;
    let package = package_metadata(&manifest_path)?;
    let package_name = package["name"].as_str().unwrap_or_default().to_string();

    let mut cmd = Command::new(cargo());
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest_path)
        .args(["--target", TARGET, "-p", &package_name])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !opts.debug {
        cmd.arg("--release");
    }
    if let Some(dir) = &opts.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let output = cmd.output().context("running cargo build")?;
    if !output.status.success() {
        bail!(
            "cargo build of {} failed ({})",
            manifest_path.display(),
            output.status
        );
    }
    let wasm = find_artifact(&output.stdout, &package["id"]).with_context(|| {
        format!("cargo built no .wasm for `{package_name}`: is its crate-type [\"cdylib\"]?")
    })?;

    let manifest = manifest_from_metadata(&package)?;
    let manifest_text = toml::to_string_pretty(&manifest).context("encoding the manifest")?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    // Check the component against the WIT world before publishing it, from a staging dir so a
    // half-written plugin is never seen by a running sluice.
    let staging = opts.out_dir.join(format!(".{}.staging", manifest.name));
    std::fs::create_dir_all(&staging)?;
    let staged_wasm = staging.join(format!("{}.wasm", manifest.name));
    let staged_manifest = staging.join(format!("{}.toml", manifest.name));
    std::fs::copy(&wasm, &staged_wasm).with_context(|| format!("copying {}", wasm.display()))?;
    std::fs::write(&staged_manifest, &manifest_text)?;
    let runtime = PluginRuntime::new(None)?;
    let checked = runtime.load_file(&staged_wasm).await;
    if let Err(reason) = checked {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("the built plugin is not usable: {reason}");
    }

    let final_wasm = opts.out_dir.join(format!("{}.wasm", manifest.name));
    let final_manifest = opts.out_dir.join(format!("{}.toml", manifest.name));
    // Manifest first: a loader that sees the new .wasm must find its manifest.
    std::fs::rename(&staged_manifest, &final_manifest)?;
    std::fs::rename(&staged_wasm, &final_wasm)?;
    let _ = std::fs::remove_dir_all(&staging);
    let bytes = std::fs::metadata(&final_wasm)?.len();
    Ok(Built {
        name: manifest.name,
        wasm: final_wasm,
        manifest: final_manifest,
        bytes,
    })
}

/// Checks one plugin file the way `sluice serve` would load it.
pub async fn check(wasm: &Path) -> anyhow::Result<Manifest> {
    let runtime = PluginRuntime::new(None)?;
    let plugin = runtime
        .load_file(wasm)
        .await
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", wasm.display()))?;
    Ok(plugin.manifest.clone())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Installs the wasm target with rustup if it is missing (a fresh machine has only the host).
fn ensure_target() -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc (is Rust installed?)")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return Ok(());
    }
    tracing::info!("installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .with_context(|| {
            format!(
                "the {TARGET} target is missing and rustup could not be run; install the target"
            )
        })?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

fn package_metadata(manifest_path: &Path) -> anyhow::Result<Value> {
    let out = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest_path)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed for {}: {}",
            manifest_path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest_path))
        })
        .cloned()
        .with_context(|| format!("{} is not a package", manifest_path.display()))
}

fn manifest_from_metadata(package: &Value) -> anyhow::Result<Manifest> {
    let mut table = match &package["metadata"]["sluice"] {
        Value::Object(m) => m.clone(),
        Value::Null => Default::default(),
        _ => bail!("[package.metadata.sluice] must be a table"),
    };
    table
        .entry("name")
        .or_insert_with(|| package["name"].clone());
    table
        .entry("version")
        .or_insert_with(|| package["version"].clone());
    let manifest: Manifest = serde_json::from_value(Value::Object(table))
        .context("invalid [package.metadata.sluice]")?;
    // Same validation as loading: parse what we are about to write.
    let text = toml::to_string(&manifest)?;
    Manifest::parse(&text, Path::new("[package.metadata.sluice]")).map_err(anyhow::Error::msg)
}

fn find_artifact(stdout: &[u8], package_id: &Value) -> Option<PathBuf> {
    stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && &m["package_id"] == package_id)
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}
