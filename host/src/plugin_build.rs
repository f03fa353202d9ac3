//! `sluice plugin build <crate-dir> --out <plugins-dir>`: compile a plugin crate to a
//! `wasm32-wasip2` component and write `<name>.wasm` plus its manifest `<name>.toml`.
//!
//! The manifest comes from the crate's `[package.metadata.sluice]` table (see
//! `runtime::manifest` for the fields); `name` defaults to the package name and `version` to the
//! package version. It is validated before anything is compiled: the limits as the loader checks
//! them, and every `allowed_hosts` entry as a host pattern (templates are checked for their
//! syntax; their values come from each destination's config). The crate is compiled with
//! `--profile plugin` when its workspace root declares `[profile.plugin]` (LTO, strip: what
//! `sluice plugin new` writes), else with `--release`. The result is loaded with the same checks
//! as `sluice serve` before it is written, so a plugin that does not match the WIT world never
//! reaches the plugins directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use sluice_runtime::allowlist::Allowlist;
use sluice_runtime::{Manifest, PluginRuntime};

pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile plugins are built with when the crate's workspace declares it.
pub const PLUGIN_PROFILE: &str = "plugin";

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
    let (package, workspace_root) = package_metadata(&manifest_path)?;
    let package_name = package["name"].as_str().unwrap_or_default().to_string();
    // Before compiling: a wrong manifest should not cost a build.
    let manifest = manifest_from_metadata(&package)?;

    let mut cmd = Command::new(cargo());
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest_path)
        .args(["--target", TARGET, "-p", &package_name])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !opts.debug {
        // Cargo reads profiles from the workspace root only (a member's are ignored).
        if declares_plugin_profile(&workspace_root.join("Cargo.toml"))? {
            cmd.args(["--profile", PLUGIN_PROFILE]);
        } else {
            cmd.arg("--release");
        }
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

    let manifest_text = toml::to_string_pretty(&manifest).context("encoding the manifest")?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    // Check the component against the WIT world before publishing it, from a staging dir so a
    // half-written plugin is never seen by a running sluice. The dir is unique (and removed
    // when dropped): two builds publishing into one directory must not delete each other's.
    let staging_dir = tempfile::Builder::new()
        .prefix(&format!(".{}.staging", manifest.name))
        .tempdir_in(&opts.out_dir)
        .with_context(|| format!("creating a staging directory in {}", opts.out_dir.display()))?;
    let staging = staging_dir.path();
    let staged_wasm = staging.join(format!("{}.wasm", manifest.name));
    let staged_manifest = staging.join(format!("{}.toml", manifest.name));
    std::fs::copy(&wasm, &staged_wasm).with_context(|| format!("copying {}", wasm.display()))?;
    std::fs::write(&staged_manifest, &manifest_text)?;
    let runtime = PluginRuntime::new(None)?;
    let checked = runtime.load_file(&staged_wasm).await;
    if let Err(reason) = checked {
        bail!("the built plugin is not usable: {reason}");
    }

    let final_wasm = opts.out_dir.join(format!("{}.wasm", manifest.name));
    let final_manifest = opts.out_dir.join(format!("{}.toml", manifest.name));
    // Manifest first: a loader that sees the new .wasm must find its manifest.
    std::fs::rename(&staged_manifest, &final_manifest)?;
    std::fs::rename(&staged_wasm, &final_wasm)?;
    drop(staging_dir);
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

/// The package whose manifest is `manifest_path`, and its workspace's root directory.
fn package_metadata(manifest_path: &Path) -> anyhow::Result<(Value, PathBuf)> {
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
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest_path))
        })
        .cloned()
        .with_context(|| format!("{} is not a package", manifest_path.display()))?;
    let root = meta["workspace_root"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no workspace root")?;
    Ok((package, root))
}

/// Whether the manifest at `path` declares `[profile.plugin]`.
fn declares_plugin_profile(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(table
        .get("profile")
        .and_then(|profiles| profiles.get(PLUGIN_PROFILE))
        .is_some())
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
    // The error names the field (`limits.memory: …`), not only what was wrong with it.
    let manifest: Manifest = serde_path_to_error::deserialize(Value::Object(table))
        .context("invalid [package.metadata.sluice]")?;
    // Same validation as loading: parse what we are about to write.
    let text = toml::to_string(&manifest)?;
    let manifest = Manifest::parse(&text, Path::new("[package.metadata.sluice]"))?;
    check_file_name(&manifest.name)?;
    check_allowed_hosts(&manifest.allowed_hosts)?;
    Ok(manifest)
}

/// The name becomes `<name>.wasm` and `<name>.toml` in the plugins directory: no path
/// separators, no hidden or relative names.
fn check_file_name(name: &str) -> anyhow::Result<()> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !plain || name.starts_with('.') {
        bail!(
            "[package.metadata.sluice] name: `{name}` must be letters, digits, `-`, `_` or `.` \
             (it names the plugin's files)"
        );
    }
    Ok(())
}

/// Every entry must be a host pattern the runtime accepts. Entries that are templates are
/// resolved at load time against each destination's config; here, with no config, only their
/// syntax is checked: a template must be the whole entry, `{{ config.FIELD }}` (see
/// `runtime::allowlist::template_path`).
fn check_allowed_hosts(entries: &[String]) -> anyhow::Result<()> {
    let no_config = Value::Object(Default::default());
    for entry in entries {
        Allowlist::resolve(std::slice::from_ref(entry), &no_config)
            .map_err(|e| anyhow::anyhow!("[package.metadata.sluice] allowed_hosts: {e}"))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn package(sluice: Value) -> Value {
        json!({"name": "my-dest", "version": "1.2.3", "metadata": {"sluice": sluice}})
    }

    fn error(sluice: Value) -> String {
        format!(
            "{:#}",
            manifest_from_metadata(&package(sluice)).expect_err("invalid")
        )
    }

    #[test]
    fn the_manifest_defaults_to_the_package_name_and_version() {
        let manifest = manifest_from_metadata(&package(Value::Null)).expect("valid");
        assert_eq!(
            (manifest.name.as_str(), manifest.version.as_str()),
            ("my-dest", "1.2.3")
        );
        let manifest = manifest_from_metadata(&package(json!({
            "name": "hook",
            "allowed_hosts": ["{{ config.url }}", "*.example.com", "https://api.example.com:8443"],
            "limits": {"memory": "32MiB", "deadline": "500ms"}
        })))
        .expect("valid");
        assert_eq!(manifest.name, "hook");
        assert_eq!(manifest.allowed_hosts.len(), 3);
    }

    #[test]
    fn limits_are_validated_at_build_time() {
        let err = error(json!({"limits": {"memory": "lots"}}));
        assert!(err.contains("limits.memory"), "{err}");
        let err = error(json!({"limits": {"memory": "8GiB"}}));
        assert!(
            err.contains("limits.memory: must be between 1MiB and 4GiB"),
            "{err}"
        );
        let err = error(json!({"limits": {"deadline": "0s"}}));
        assert!(err.contains("limits.deadline"), "{err}");
        let err = error(json!({"batch_size": 0}));
        assert!(err.contains("batch_size"), "{err}");
        let err = error(json!({"limits": {"memroy": "1MiB"}}));
        assert!(err.contains("memroy"), "{err}");
    }

    #[test]
    fn declared_config_fields_are_validated_and_written_at_build_time() {
        let fields = json!([
            {"name": "url", "type": "url", "required": true},
            {"name": "region", "type": "enum", "options": ["us", "eu"], "default": "us"},
        ]);
        let manifest = manifest_from_metadata(&package(json!({"config": fields}))).expect("valid");
        let declared = manifest.config.as_deref().unwrap_or_default();
        assert_eq!(declared.len(), 2);
        // What the host will read back from NAME.toml.
        let text = toml::to_string(&manifest).expect("TOML");
        assert!(text.contains("[[config]]"), "{text}");
        let err = error(json!({"config": [{"name": "url", "type": "link"}]}));
        assert!(
            err.contains("config[0]: field `url`: unknown type `link`"),
            "{err}"
        );
        let err = error(json!({"config": [{"name": "n", "type": "integer", "default": "x"}]}));
        assert!(err.contains("config: field `n`: default"), "{err}");
    }

    #[test]
    fn allowed_hosts_are_validated_at_build_time() {
        for bad in [
            "http://",
            "exa mple.com",
            "{{ config.url",
            "{{ env.HOME }}",
            "host/path",
        ] {
            let err = error(json!({ "allowed_hosts": [bad] }));
            assert!(err.contains("allowed_hosts"), "{bad}: {err}");
        }
    }

    #[test]
    fn templated_allowed_hosts_must_be_whole_entries() {
        let manifest = manifest_from_metadata(&package(json!({
            "allowed_hosts": ["{{ config.url }}", "{{ config.endpoint.url }}"]
        })))
        .expect("whole-entry templates are accepted");
        assert_eq!(manifest.allowed_hosts.len(), 2);
        for (bad, why) in [
            (
                "https://{{ config.region }}.api.io",
                "must be the whole entry",
            ),
            ("{{ config.url }}/v1", "must be the whole entry"),
            ("{{ config.url }", "must be the whole entry"),
            ("{{ config. }}", "field path"),
            ("{{ config.a }}{{ config.b }}", "one template per entry"),
        ] {
            let err = error(json!({ "allowed_hosts": ["api.example.com", bad] }));
            assert!(
                err.contains(&format!("allowed_hosts: allowed_hosts entry `{bad}`"))
                    && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn plugin_names_must_be_plain_file_names() {
        for bad in ["../evil", "a/b", ".hidden", "sp ace"] {
            let err = error(json!({ "name": bad }));
            assert!(err.contains("name:"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_plugin_profile_is_detected_in_the_root_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("Cargo.toml");
        std::fs::write(
            &path,
            "[package]\nname = \"x\"\n[profile.release]\nlto = true\n",
        )
        .unwrap();
        assert!(!declares_plugin_profile(&path).unwrap());
        std::fs::write(
            &path,
            "[workspace]\n[profile.plugin]\ninherits = \"release\"\n",
        )
        .unwrap();
        assert!(declares_plugin_profile(&path).unwrap());
        let repo_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        assert!(declares_plugin_profile(Path::new(repo_root)).unwrap());
    }
}
