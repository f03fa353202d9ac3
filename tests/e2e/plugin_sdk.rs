//! A plugin author's path, end to end and outside this repository: the SDK as `cargo package`
//! ships it, `sluice plugin new`, native `cargo test`, `sluice plugin build`, `check` and `call`;
//! and typed-config errors that name the field path.
//!
//! The new crate's dependencies are compiled in one shared target directory
//! (`target/e2e/plugin-new-target`), so only the first run pays for them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::plugins;

const EVENT: &str = r#"{"type":"track","userId":"u","event":"E"}"#;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory for everything these tests compile: not the outer `cargo test`'s,
/// whose lock it may hold.
fn target_dir() -> PathBuf {
    repo_root().join("target/e2e/plugin-new-target")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn sluice() -> Command {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.env_remove("DATABASE_URL");
    cmd
}

/// Runs `cmd`, asserting success; shows its output otherwise.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, asserting failure; returns its stderr.
fn run_failing(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `cargo package`s the SDK (the working tree as it is) and unpacks the `.crate` into `into`,
/// returning the unpacked crate: exactly what a crates.io user would download.
fn packaged_sdk(into: &Path) -> PathBuf {
    let manifest = repo_root().join("Cargo.toml");
    let listed = run(
        cargo()
            .args(["package", "-p", "sluice-sdk", "--allow-dirty", "--list"])
            .arg("--manifest-path")
            .arg(&manifest),
        "cargo package --list",
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.lines().any(|l| l == "wit/destination.wit"),
        "the packaged SDK carries its WIT:\n{listed}"
    );
    run(
        cargo()
            .args([
                "package",
                "-p",
                "sluice-sdk",
                "--allow-dirty",
                "--no-verify",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir()),
        "cargo package",
    );
    let sdk_manifest = std::fs::read_to_string(repo_root().join("sdk/Cargo.toml")).unwrap();
    let sdk_manifest: toml::Table = toml::from_str(&sdk_manifest).unwrap();
    let version = sdk_manifest["package"]["version"].as_str().unwrap();
    let packaged = target_dir().join(format!("package/sluice-sdk-{version}.crate"));
    std::fs::create_dir_all(into).unwrap();
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&packaged)
            .arg("-C")
            .arg(into),
        "unpacking the SDK",
    );
    let unpacked = into.join(format!("sluice-sdk-{version}"));
    let wit = std::fs::symlink_metadata(unpacked.join("wit/destination.wit")).unwrap();
    assert!(wit.is_file(), "the WIT is a regular file in the package");
    assert_eq!(
        std::fs::read(unpacked.join("wit/destination.wit")).unwrap(),
        std::fs::read(repo_root().join("wit/destination.wit")).unwrap(),
        "the packaged WIT is the workspace's"
    );
    unpacked
}

#[test]
fn a_new_plugin_outside_the_repository_tests_builds_and_loads_with_the_packaged_sdk() {
    let tmp = tempfile::Builder::new()
        .prefix("sluice-plugin-new-")
        .tempdir()
        .unwrap();
    let sdk = packaged_sdk(&tmp.path().join("sdk"));
    let crate_dir = tmp.path().join("my-dest");

    let out = run(
        sluice()
            .args(["plugin", "new", "my-dest", "--dir"])
            .arg(&crate_dir)
            .arg("--sdk-path")
            .arg(&sdk),
        "sluice plugin new",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created plugin `my-dest`"),
        "{out:?}"
    );
    let cargo_toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains("sluice-sdk = \"0.2\""),
        "depends on the SDK by version:\n{cargo_toml}"
    );
    let stderr = run_failing(
        sluice()
            .args(["plugin", "new", "my-dest", "--dir"])
            .arg(&crate_dir),
        "sluice plugin new into a non-empty directory",
    );
    assert!(stderr.contains("not empty"), "{stderr}");
    let stderr = run_failing(
        sluice()
            .args(["plugin", "new", "My_Dest", "--dir"])
            .arg(tmp.path().join("other")),
        "sluice plugin new with an invalid name",
    );
    assert!(stderr.contains("invalid plugin name"), "{stderr}");

    // Resolve to the versions this workspace is tested with (and already has downloaded).
    std::fs::copy(repo_root().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let out = run(
        cargo()
            .arg("test")
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir()),
        "cargo test in the new plugin",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");

    let plugins_out = tmp.path().join("plugins");
    let out = run(
        sluice()
            .args(["plugin", "build"])
            .arg(&crate_dir)
            .arg("--out")
            .arg(&plugins_out)
            .arg("--target-dir")
            .arg(target_dir()),
        "sluice plugin build",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("built plugin `my-dest`"),
        "{out:?}"
    );
    let wasm = plugins_out.join("my-dest.wasm");
    assert_eq!(
        std::fs::read(&wasm).unwrap(),
        std::fs::read(target_dir().join("wasm32-wasip2/plugin/my_dest.wasm")).unwrap(),
        "built with the crate's [profile.plugin]"
    );
    let manifest = std::fs::read_to_string(plugins_out.join("my-dest.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    assert_eq!(manifest["name"].as_str(), Some("my-dest"));
    assert_eq!(manifest["version"].as_str(), Some("0.1.0"));
    assert_eq!(
        manifest["allowed_hosts"][0].as_str(),
        Some("{{ config.url }}")
    );

    let out = run(
        sluice().args(["plugin", "check"]).arg(&wasm),
        "sluice plugin check",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok"),
        "{out:?}"
    );

    let out = run(
        sluice()
            .args(["plugin", "call"])
            .arg(&wasm)
            .args(["--config", r#"{"url":"https://example.com/hook"}"#])
            .args(["--event", EVENT]),
        "sluice plugin call",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let payload = stdout
        .lines()
        .find_map(|l| l.strip_prefix("payload[0]: "))
        .unwrap_or_else(|| panic!("a payload:\n{stdout}"));
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["event"].as_str(), Some("E"));

    let stderr = run_failing(
        sluice()
            .args(["plugin", "call"])
            .arg(&wasm)
            .args([
                "--config",
                r#"{"url":"https://example.com/hook","timeout_ms":"123"}"#,
            ])
            .args(["--event", EVENT]),
        "sluice plugin call with a wrong config",
    );
    assert!(
        stderr.contains(r#"timeout_ms: invalid type: string "123", expected u64"#),
        "{stderr}"
    );
}

#[test]
fn plugin_call_names_the_field_of_a_wrong_config() {
    let wasm = plugins::plugins_dir().join("webhook.wasm");
    let call = |config: &str| {
        run_failing(
            sluice()
                .args(["plugin", "call"])
                .arg(&wasm)
                .args(["--config", config, "--event", EVENT]),
            &format!("sluice plugin call --config {config}"),
        )
    };
    let stderr = call(r#"{"url":"http://127.0.0.1:9/hook","secret":"s","timeout_ms":"123"}"#);
    assert!(
        stderr.contains(r#"timeout_ms: invalid type: string "123", expected a nonzero u32"#),
        "{stderr}"
    );
    let stderr = call(r#"{"url":"http://127.0.0.1:9/hook","secret":"s","headers":{"X-Env":1}}"#);
    assert!(
        stderr.contains("headers.X-Env: invalid type: integer `1`, expected a string"),
        "{stderr}"
    );
    let stderr = call(r#"{"url":"http://127.0.0.1:9/hook","secret":"s","timeout":5}"#);
    assert!(
        stderr.contains("timeout: unknown field `timeout`, expected one of"),
        "{stderr}"
    );
    let stderr = call(r#"{"secret":"s"}"#);
    assert!(stderr.contains("url: missing field `url`"), "{stderr}");
    let stderr = call(r#"{"url":"ftp://x","secret":"s"}"#);
    assert!(
        stderr.contains("url: must start with http:// or https://"),
        "{stderr}"
    );
}
