//! Sluice: Segment-compatible ingest, a PostgreSQL job store, WebAssembly destinations.
//!
//! [`run`] is the one place that wires the parts together:
//! ```text
//! ingest (axum) ──one tx──▶ store (Postgres) ──claim──▶ router ──▶ plugin (wasm) ──▶ destination
//! ```

pub mod config;
pub mod embedded_pg;
pub mod ingest;
pub mod plugin_build;
pub mod plugin_call;
pub mod router;
pub mod runtime;
pub mod sink;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Config;
use embedded_pg::EmbeddedPostgres;
use router::Router;
use runtime::PluginRuntime;
use store::Store;

/// How often expired dedup keys are removed.
const DEDUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Runs Sluice until `shutdown` fires. `listener` lets callers bind first (port 0 in tests);
/// otherwise `config.server.listen` is bound.
pub async fn run(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (url, embedded) = match &config.server.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = EmbeddedPostgres::start(&config.server.data_dir)
                .await
                .context("starting the embedded PostgreSQL")?;
            (pg.url().to_string(), Some(pg))
        }
    };
    tracing::info!(url = %redact(&url), "database");

    let result = serve(&config, &url, listener, shutdown).await;
    if let Some(pg) = embedded
        && let Err(e) = pg.stop().await
    {
        tracing::error!(error = %e, "stopping the embedded PostgreSQL failed");
    }
    result
}

async fn serve(
    config: &Config,
    url: &str,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::connect(url).await.context("opening the job store")?;
    let recovered = store.job_recover_executing().await?;
    if recovered > 0 {
        tracing::warn!(
            jobs = recovered,
            "jobs were executing when sluice last stopped; they will be retried"
        );
    }

    let cache_dir = config
        .server
        .plugin_cache_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("plugin-cache"));
    let runtime = PluginRuntime::new(Some(cache_dir))?;
    let (plugins, errors) = runtime.load_dir(&config.server.plugins_dir).await;
    for e in &errors {
        tracing::error!(error = %e, "plugin not loaded");
    }
    for p in &plugins {
        tracing::info!(plugin = %p.name, version = %p.manifest.version, sha256 = %&p.sha256[..12], "plugin loaded");
    }

    let router = Router::start(
        config,
        &plugins,
        store.clone(),
        runtime,
        shutdown.child_token(),
    );
    let ingest = ingest::IngestState::new(config, store.clone(), router.wakers());
    let app = ingest::router(Arc::new(ingest))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http());

    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "sluice listening on http://{addr}");

    let maintenance = tokio::spawn(expire_dedup_keys(
        store.clone(),
        config.server.dedup_window,
        shutdown.clone(),
    ));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP");
    // HTTP stopped (shutdown or error): stop the routers too, then let them finish.
    shutdown.cancel();
    router.join().await;
    let _ = maintenance.await;
    store.close().await;
    served
}

async fn expire_dedup_keys(store: Store, window: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEDUP_EXPIRY_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        match store.dedup_expire(window).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "expired dedup keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring dedup keys failed"),
        }
    }
}

/// Hides a password in a database URL for logging.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
