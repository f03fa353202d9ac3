//! What the plugin platform costs: the component boundary per call (against the same Rust code
//! run natively), instantiation, loading from the compile cache, and a hot swap under load.
//!
//! The native baseline is the devnull plugin's own `transform`, built from the same crate as an
//! example binary (`plugins/devnull/examples/native_transform.rs`) with the same profile as the
//! guest, and run in the same bench.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::env::{ConfigBuilder, Host, wait_drained};
use super::load::{self, Shape};
use super::{Bench, Row};
use sluice_runtime::allowlist::Allowlist;
use sluice_runtime::bindings::{BatchContext, BatchJob};
use sluice_runtime::{InstanceSpec, NetworkPolicy, PluginInstance, PluginRuntime};

/// Event size for the boundary figure (the issue's unit).
const EVENT_BYTES: usize = 1024;
/// Jobs per call for the amortised figure: the manifest's default `batch_size`.
const CALL_JOBS: usize = 50;
/// Plugins loaded from the cache (the issue's target: 20 in under a second).
const CACHED_PLUGINS: usize = 20;

impl Bench {
    /// Boundary overhead, instantiation and cache load, in this process.
    pub(super) async fn plugins(&mut self) -> anyhow::Result<()> {
        let wasm = self.plugins.join("devnull.wasm");
        let event = normalized_event(EVENT_BYTES)?;
        let repeat = self.sized(200_000, 50_000) as u32;

        // The same transform, natively and through the component.
        let event_file = self.dir.path().join("event-1k.json");
        std::fs::write(&event_file, &event)?;
        let native_ns = native_transform_ns(&event_file, repeat)?;
        let runtime = PluginRuntime::new(None)?;
        let plugin = Arc::new(
            runtime
                .load_file(&wasm)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?,
        );
        let spec = instance_spec(&runtime, plugin)?;
        let mut instance = PluginInstance::new(&runtime, &spec)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // One job per call (what every call paid before WIT 0.2), then a call of the default
        // batch size: the boundary's cost per event, amortised over the call.
        let one = batch_time(&mut instance, &event, 1, repeat).await?;
        let many = batch_time(&mut instance, &event, CALL_JOBS, repeat).await?;
        let per_call_us = (one - native_ns).max(0.0) / 1000.0;
        let overhead_us = (many - native_ns).max(0.0) / 1000.0;
        self.rows.push(Row {
            scenario: format!(
                "plugin boundary per {} B event (devnull transform-batch of {CALL_JOBS})",
                event.len()
            ),
            sluice: format!(
                "{overhead_us:.2} µs added per event ({:.2} µs per event; a call of one job: {per_call_us:.2} µs added)",
                many / 1000.0
            ),
            peer: format!("same code natively: {:.2} µs", native_ns / 1000.0),
            ratio: None,
            target: "< 1 µs added per event".into(),
            met: Some(overhead_us < 1.0),
        });

        // A new instance, configured: what a lane pays when it needs one more.
        let n = 200u32;
        let started = Instant::now();
        for _ in 0..n {
            PluginInstance::new(&runtime, &spec)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let per = started.elapsed() / n;
        self.rows.push(Row {
            scenario: "plugin instantiation + configure (devnull)".into(),
            sluice: format!("{:.0} µs", per.as_secs_f64() * 1e6),
            peer: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        });

        // 20 distinct plugins: compiled once into a cache, then loaded from it by a new runtime
        // (a restarted host).
        let dir = self.dir.path().join("many-plugins");
        let cache = self.dir.path().join("many-plugins-cache");
        distinct_copies(&self.plugins, "devnull", &dir, CACHED_PLUGINS)?;
        let cold = Instant::now();
        let (loaded, errors) = PluginRuntime::new(Some(cache.clone()))?
            .load_dir(&dir)
            .await;
        let cold = cold.elapsed();
        if !errors.is_empty() || loaded.len() != CACHED_PLUGINS {
            bail!("loading {CACHED_PLUGINS} plugins: {errors:?}");
        }
        let warm = Instant::now();
        let (loaded, errors) = PluginRuntime::new(Some(cache))?.load_dir(&dir).await;
        let warm = warm.elapsed();
        if !errors.is_empty() || loaded.len() != CACHED_PLUGINS {
            bail!("loading {CACHED_PLUGINS} plugins from the cache: {errors:?}");
        }
        self.rows.push(Row {
            scenario: format!("{CACHED_PLUGINS} plugins loaded from the compile cache"),
            sluice: format!("{:.0} ms", warm.as_secs_f64() * 1000.0),
            peer: format!("compiling them: {:.0} ms", cold.as_secs_f64() * 1000.0),
            ratio: None,
            target: "< 1 s".into(),
            met: Some(warm < Duration::from_secs(1)),
        });
        Ok(())
    }

    /// A running host under steady load gets a new version of its plugin: how long until the
    /// destination runs it, and nothing is lost.
    pub(super) async fn hot_swap(&mut self) -> anyhow::Result<()> {
        let plugins = self.dir.path().join("swap-plugins");
        std::fs::create_dir_all(&plugins)?;
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                self.plugins.join(format!("devnull.{ext}")),
                plugins.join(format!("devnull.{ext}")),
            )?;
        }
        let db = self.pg.fresh_db("swap").await?;
        let config = ConfigBuilder::new(&plugins).destination("dest", "devnull", "{}");
        let host = Host::start(&self.host_dir("swap"), &config.text(), &db)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&db)
            .await?;
        let shape = Shape {
            users: 200,
            pad: 900,
            batch: 100,
        };
        let load = {
            let url = host.url("/v1/batch");
            tokio::spawn(async move {
                load::steady(
                    &url,
                    "wk_0",
                    shape,
                    Duration::from_millis(20),
                    Duration::from_secs(6),
                    "swap",
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;

        // The new version: the same code with a different hash.
        let bytes = std::fs::read(plugins.join("devnull.wasm"))?;
        let new = with_custom_section(&bytes, "sluice-bench-swap", b"2");
        let new_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&new));
        let tmp = plugins.join(".devnull.wasm.tmp");
        std::fs::write(&tmp, &new)?;
        let dropped = Instant::now();
        std::fs::rename(&tmp, plugins.join("devnull.wasm"))?;
        let swapped = loop {
            let sha: Option<String> =
                sqlx::query_scalar("SELECT plugin_sha256 FROM lanes WHERE destination_id = 'dest'")
                    .fetch_one(&pool)
                    .await?;
            if sha.as_deref() == Some(new_sha.as_str()) {
                break dropped.elapsed();
            }
            if dropped.elapsed() > Duration::from_secs(30) {
                bail!("the new version was not serving after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let sent = load.await.context("load task")??.events;
        wait_drained(&db, Duration::from_secs(60)).await?;
        // Drained: every lane is at the head of the log with no open job; none was aborted.
        let (stored, aborted): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events),
                    (SELECT count(*) FROM job_state WHERE state = 'aborted')",
        )
        .fetch_one(&pool)
        .await?;
        self.rows.push(Row {
            scenario: "hot swap under load (file dropped → destination on the new version)".into(),
            sluice: format!("{:.0} ms", swapped.as_secs_f64() * 1000.0),
            peer: format!("{sent} events sent, {stored} stored, all delivered, {aborted} aborted"),
            ratio: None,
            target: "< 2 s".into(),
            met: Some(swapped < Duration::from_secs(2) && stored as u64 == sent && aborted == 0),
        });
        pool.close().await;
        drop(host);
        Ok(())
    }
}

/// A Segment track event of `size` bytes (give or take a few), as ingest stores it.
fn normalized_event(size: usize) -> anyhow::Result<String> {
    let received_at = sluice_engine::ingest::event::now_rfc3339();
    let meta = sluice_engine::ingest::event::RequestMeta {
        received_at: &received_at,
        sent_at: None,
    };
    let with_pad = |pad: usize| -> anyhow::Result<String> {
        let raw = format!(
            r#"{{"type":"track","event":"Order Completed","userId":"user-42","messageId":"bench-1","properties":{{"pad":"{}"}}}}"#,
            "x".repeat(pad)
        );
        let value: &serde_json::value::RawValue = serde_json::from_str(&raw)?;
        let event = sluice_engine::ingest::event::normalize(value, None, &meta)
            .map_err(|why| anyhow::anyhow!("bench event: {why}"))?;
        Ok(event.json)
    };
    // Normalising adds fields: measure them, then pad to the size.
    let bare = with_pad(0)?.len();
    with_pad(size.saturating_sub(bare))
}

/// Builds and runs the native baseline; nanoseconds per call.
fn native_transform_ns(event_file: &Path, repeat: u32) -> anyhow::Result<f64> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target/bench-guests");
    // The guest's profile, for the host's target.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "-p",
            "sluice-plugin-devnull",
            "--example",
            "native_transform",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "building the native baseline failed");
    let out = Command::new(target.join("plugin/examples/native_transform"))
        .arg(event_file)
        .arg(repeat.to_string())
        .output()
        .context("running the native baseline")?;
    anyhow::ensure!(
        out.status.success(),
        "the native baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the native baseline's output")
}

fn instance_spec(
    runtime: &PluginRuntime,
    plugin: Arc<sluice_runtime::LoadedPlugin>,
) -> anyhow::Result<InstanceSpec> {
    let config = serde_json::json!({});
    let allowlist = Allowlist::resolve(&plugin.manifest.allowed_hosts, &config)?;
    Ok(InstanceSpec {
        plugin,
        destination_id: "bench".into(),
        config_json: config.to_string(),
        allowlist: Arc::new(allowlist),
        http: runtime.outbound(&NetworkPolicy::new(Vec::new()))?,
        limiter: Arc::new(sluice_runtime::limiter::Limiter::new(8, 256)),
    })
}

/// Guest time per event of `transform-batch` calls of `jobs` copies of `event`, `repeat`
/// events in all after a warm-up, in nanoseconds. The jobs are built once, as a lane's call
/// builds them once.
async fn batch_time(
    instance: &mut PluginInstance,
    event: &str,
    jobs: usize,
    repeat: u32,
) -> anyhow::Result<f64> {
    let batch = BatchContext {
        workspace_id: "bench".into(),
        destination_id: "bench".into(),
    };
    let inputs: Vec<BatchJob> = (0..jobs)
        .map(|i| BatchJob {
            job_id: i as i64,
            idempotency_key: format!("bench-{i}:bench"),
            message_id: format!("bench-{i}"),
            source_id: "bench".into(),
            attempt: 0,
            event: event.to_string(),
        })
        .collect();
    let calls = (repeat as usize).div_ceil(jobs).max(1);
    let mut call = async || -> anyhow::Result<()> {
        let results = instance
            .transform_batch(&batch, &inputs)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            bail!("transform failed: {e:?}");
        }
        Ok(())
    };
    for _ in 0..(1000 / jobs).max(2) {
        call().await?;
    }
    let started = Instant::now();
    for _ in 0..calls {
        call().await?;
    }
    Ok(started.elapsed().as_nanos() as f64 / (calls * jobs) as f64)
}

/// `n` copies of a plugin under distinct names and hashes (a custom section tells them apart;
/// the code is the same, the compile cache sees `n` plugins).
fn distinct_copies(from: &Path, plugin: &str, dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let wasm = std::fs::read(from.join(format!("{plugin}.wasm")))?;
    let manifest = std::fs::read_to_string(from.join(format!("{plugin}.toml")))?;
    for i in 0..n {
        let name = format!("{plugin}{i}");
        std::fs::write(
            dir.join(format!("{name}.wasm")),
            with_custom_section(&wasm, "sluice-bench-copy", i.to_string().as_bytes()),
        )?;
        let renamed = manifest.replacen(
            &format!("name = \"{plugin}\""),
            &format!("name = \"{name}\""),
            1,
        );
        std::fs::write(dir.join(format!("{name}.toml")), renamed)?;
    }
    Ok(())
}

/// Appends a custom section (id 0: name and bytes, ignored by the runtime) to a component.
fn with_custom_section(wasm: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    fn leb128(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_section_keeps_the_module_valid() {
        // The smallest core module: magic and version.
        let module = b"\0asm\x01\0\0\0".to_vec();
        let out = with_custom_section(&module, "x", b"yz");
        assert_eq!(&out[8..], &[0, 4, 1, b'x', b'y', b'z']);
        wasmtime::Module::validate(&wasmtime::Engine::default(), &out).expect("still valid");
    }
}
