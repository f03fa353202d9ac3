//! `sluice plugin call`: run one plugin on one event outside the server, under the same sandbox,
//! and report what it produced and how long a call takes.
//!
//! Useful for plugin authors (does my transform do what I think?) and for measuring the cost of
//! a plugin call per event (`--repeat N`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use sluice_runtime::allowlist::Allowlist;
use sluice_runtime::bindings::{BatchContext, BatchJob, JobContext, Request};
use sluice_runtime::{InstanceSpec, NetworkPolicy, PluginInstance, PluginRuntime};

/// What `plugin call` measured.
#[derive(Debug)]
pub struct CallReport {
    /// Payloads from the first `transform`, lossy UTF-8.
    pub payloads: Vec<String>,
    /// Outcomes of `send`, if it was asked for.
    pub outcomes: Option<Vec<String>>,
    pub transform_calls: u32,
    pub transform_mean: Duration,
    /// How long `send` took, if it was asked for (HTTP time included).
    pub send_time: Option<Duration>,
    /// The most linear memory the plugin had, in bytes.
    pub peak_memory: usize,
}

pub async fn call(
    wasm: &Path,
    config: &str,
    event: &str,
    repeat: u32,
    send: bool,
) -> anyhow::Result<CallReport> {
    let runtime = PluginRuntime::new(None)?;
    let plugin = runtime
        .load_file(wasm)
        .await
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", wasm.display()))?;
    let config_value: serde_json::Value =
        serde_json::from_str(config).context("--config is not valid JSON")?;
    let allowlist = Allowlist::resolve(&plugin.manifest.allowed_hosts, &config_value)?;
    // `plugin call` runs on the author's machine, for the author: it may reach a receiver on
    // loopback (the usual way to try a plugin), and no other private network.
    let policy = NetworkPolicy::new(vec![
        "127.0.0.0/8".parse().context("loopback network")?,
        "::1/128".parse().context("loopback network")?,
    ]);
    let spec = InstanceSpec {
        plugin: Arc::new(plugin),
        destination_id: "cli".into(),
        config_json: config.to_string(),
        allowlist: Arc::new(allowlist),
        http: runtime.outbound(&policy)?,
        limiter: Arc::new(sluice_runtime::limiter::Limiter::new(8, 256)),
    };
    let mut instance = PluginInstance::new(&runtime, &spec)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let context = JobContext {
        job_id: 1,
        idempotency_key: "cli-1:cli".into(),
        message_id: "cli-1".into(),
        workspace_id: "cli".into(),
        source_id: "cli".into(),
        destination_id: "cli".into(),
        attempt: 0,
    };
    let batch = BatchContext {
        workspace_id: context.workspace_id.clone(),
        destination_id: context.destination_id.clone(),
    };

    // The plugin sees the event as a stored job would be: validated and normalised by ingest
    // (messageId, receivedAt).
    let received_at = sluice_engine::ingest::event::now_rfc3339();
    let value: &serde_json::value::RawValue =
        serde_json::from_str(event).context("--event is not valid JSON")?;
    let meta = sluice_engine::ingest::event::RequestMeta {
        received_at: &received_at,
        sent_at: None,
    };
    let normalized = sluice_engine::ingest::event::normalize(value, None, &meta)
        .map_err(|why| anyhow::anyhow!("--event is not a valid event: {why}"))?;
    let job = [BatchJob {
        job_id: context.job_id,
        idempotency_key: context.idempotency_key.clone(),
        message_id: context.message_id.clone(),
        source_id: context.source_id.clone(),
        attempt: context.attempt,
        event: normalized.json,
    }];

    let repeat = repeat.max(1);
    let mut first = None;
    let started = Instant::now();
    for _ in 0..repeat {
        let mut results = instance
            .transform_batch(&batch, &job)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if first.is_none() {
            first = results.pop();
        }
    }
    let transform_mean = started.elapsed() / repeat;
    let payloads = match first {
        Some(Ok(p)) => p,
        Some(Err(e)) => bail!("transform failed: {e:?}"),
        None => Vec::new(),
    };

    let mut send_time = None;
    let outcomes = if send && !payloads.is_empty() {
        let requests: Vec<Request> = payloads
            .iter()
            .map(|body| Request {
                context: context.clone(),
                body: body.clone(),
            })
            .collect();
        let sending = Instant::now();
        let outcomes = instance
            .send(&requests)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        send_time = Some(sending.elapsed());
        Some(outcomes.iter().map(|o| format!("{o:?}")).collect())
    } else {
        None
    };
    // The report is printed: the manifest's secrets (and URL credentials) are masked in it,
    // as the instance already masks them in failures and log lines.
    let scrubber = instance.scrubber().clone();
    Ok(CallReport {
        payloads: payloads
            .iter()
            .map(|p| scrubber.scrub(&String::from_utf8_lossy(p)))
            .collect(),
        outcomes,
        transform_calls: repeat,
        transform_mean,
        send_time,
        peak_memory: instance.peak_memory(),
    })
}
