//! `sluice demo`: everything needed to watch events flow, in one command.
//!
//! Builds the shipped `webhook` plugin, writes a config with one source and one destination
//! pointing at a built-in sink, starts that sink (it prints every delivery and whether its
//! signature verified) and runs Sluice with an embedded PostgreSQL under `--dir`, with the
//! admin API and operator page on their own listener (a fresh operator token each run).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::plugin_build::{self, BuildOptions};
use sluice_config::Config;

const WRITE_KEY: &str = "wk_demo";
/// `whsec_` + base64("sluice-demo-secret").
const SECRET: &str = "whsec_c2x1aWNlLWRlbW8tc2VjcmV0";

/// Where the demo listens.
pub struct Addresses {
    /// Ingest.
    pub listen: SocketAddr,
    /// The built-in webhook receiver.
    pub sink: SocketAddr,
    /// The admin API and operator page.
    pub admin: SocketAddr,
}

pub async fn run(dir: &Path, at: Addresses, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Addresses {
        listen,
        sink,
        admin,
    } = at;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let plugins = dir.join("plugins");
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/webhook");
    println!(
        "building the webhook plugin from {} ...",
        crate_dir.display()
    );
    plugin_build::build(&BuildOptions {
        crate_dir,
        out_dir: plugins.clone(),
        target_dir: None,
        debug: false,
    })
    .await
    .context("building the webhook plugin")?;

    // A new operator token each run, kept in a file only this user can read.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_path = dir.join("admin.token");
    write_private(&token_path, &token)?;

    let config_path = dir.join("sluice.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"# Written by `sluice demo`.
[server]
listen = "{listen}"
plugins_dir = "plugins"
data_dir = "data"
# The demo's sink listens on loopback; plugins reach only public addresses unless allowed.
allowed_private_networks = ["127.0.0.0/8"]

[[source]]
id = "demo-web"
workspace = "demo"
write_key = "{WRITE_KEY}"
destinations = ["demo-hook"]

[[destination]]
id = "demo-hook"
workspace = "demo"
plugin = "webhook"
config = {{ url = "http://{sink}/hook", secret = "{SECRET}" }}
retry = {{ min_backoff = "2s", max_backoff = "30s", max_attempts = 5, window = "10m" }}

[admin]
listen = "{admin}"

[[admin.tokens]]
name = "demo"
scope = "operator"
token_file = "admin.token"
"#
        ),
    )?;
    let config = Config::load(&config_path)?;

    let sink_listener = tokio::net::TcpListener::bind(sink)
        .await
        .with_context(|| format!("binding the demo sink on {sink}"))?;
    let sink_task = tokio::spawn(crate::sink::serve(
        sink_listener,
        SECRET.into(),
        shutdown.clone(),
    ));

    println!(
        "\nSluice demo\n  config:        {}\n  write key:     {WRITE_KEY}\n  sink:          http://{sink}/hook (deliveries are printed below)\n  operator page: http://{admin}/ (token: {token})\n\nSend an event from another terminal:\n  curl -u {WRITE_KEY}: -H 'content-type: application/json' \\\n    -d '{{\"batch\":[{{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Signed Up\"}}]}}' \\\n    http://{listen}/v1/batch\n\nOperate it from the command line:\n  export SLUICE_ADMIN_URL=http://{admin} SLUICE_ADMIN_TOKEN={token}\n  sluice destinations list\nAdd a second destination while it runs (no restart; docs/catalog.md):\n  sluice destinations create demo second --plugin webhook --source demo-web \\\n    --set url=http://{sink}/second --set secret={SECRET}\n\nInspect the store with psql and the URL from the `database url=...` log line, e.g.\n  SELECT * FROM lane_backlog;  SELECT * FROM failed_jobs;\nPress Ctrl-C to stop.\n",
        config_path.display()
    );
    let result = crate::server::run(config, None, shutdown.clone()).await;
    shutdown.cancel();
    let _ = sink_task.await;
    result
}

/// Writes `text` to `path`, readable by this user only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
