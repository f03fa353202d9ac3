//! `sluice serve`: the one place that wires the crates together (see docs/architecture.md).
//!
//! ```text
//! ingest (axum) ──one tx──▶ store (Postgres) ──read──▶ delivery ──▶ plugin (wasm) ──▶ destination
//!                              ▲
//! admin API (axum, own listener) ── reads views, calls operator functions
//! ```

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use sluice_admin as admin;
use sluice_config::Config;
use sluice_core::catalog::Catalog;
use sluice_core::clock;
use sluice_engine::delivery::stats as lane_stats;
use sluice_engine::delivery::{Delivery, DeliverySettings, hot_reload, idle_instances};
use sluice_engine::maintenance::{self, Maintenance};
use sluice_engine::wake::{PeerWakes, listen_for_peers};
use sluice_engine::{catalog, ingest, metrics};
use sluice_runtime::PluginRuntime;
use sluice_store::embedded_pg::EmbeddedPostgres;
use sluice_store::{Dedup, HostInfo, Store, StoreOptions};

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
    let server = &config.server;
    let store = Store::connect_with(
        url,
        &StoreOptions {
            max_connections: server.db_connections,
            dedup_memory: server.dedup_memory,
        },
    )
    .await
    .context("opening the job store")?
    .with_sealer(crate::secrets_key::sealer(server)?);
    let clock = clock::system();
    let host = HostInfo {
        incarnation: uuid::Uuid::new_v4(),
        host_name: maintenance::local_host_name(),
        pid: std::process::id(),
    };
    store
        .host_register(&host)
        .await
        .context("registering this host")?;
    tracing::info!(incarnation = %host.incarnation, "host registered");
    let catalog = seed_and_load(config, &store).await?;
    let (publish, catalog_watch) = watch::channel(Arc::new(catalog));

    let cache_dir = server
        .plugin_cache_dir
        .clone()
        .unwrap_or_else(|| server.data_dir.join("plugin-cache"));
    let runtime = PluginRuntime::new(Some(cache_dir))?;
    let router = Arc::new(Delivery::new(
        server.allowed_private_networks.clone(),
        store.clone(),
        runtime,
        &DeliverySettings {
            me: host.incarnation,
            lease_ttl: server.lease_ttl,
            linger: server.lane_linger,
            lane_max_bytes: usize::try_from(server.lane_memory).unwrap_or(usize::MAX),
        },
        clock.clone(),
        shutdown.child_token(),
    ));
    router.apply(&catalog_watch.borrow().clone()).await;
    // Every destination is configured before ingest opens: a config its plugin refuses is
    // reported now (log and `lane_status.plugin_error`), not at its first delivery.
    let plugins = router.plugins();
    plugins.sync_dir(&server.plugins_dir).await;
    let watching = tokio::spawn(hot_reload::watch(
        server.plugins_dir.clone(),
        plugins.clone(),
        shutdown.clone(),
    ));
    let trimming = tokio::spawn(idle_instances::run(plugins, shutdown.clone()));
    let catalog_changed = Arc::new(Notify::new());
    let following = tokio::spawn(catalog::follow(
        store.clone(),
        publish,
        catalog_changed.clone(),
        shutdown.clone(),
    ));
    let lanes_following = tokio::spawn(router.clone().follow(catalog_watch.clone()));
    let dedup = Dedup {
        window: server.dedup_window,
    };
    {
        // Before listening: a workspace's first write would otherwise load them while its
        // requests wait.
        let catalog = catalog_watch.borrow().clone();
        let workspaces: Vec<&str> = catalog.workspaces.iter().map(|w| w.as_str()).collect();
        let started = std::time::Instant::now();
        store
            .dedup_warm(&workspaces, dedup, clock.now())
            .await
            .context("loading the dedup keys of the window")?;
        tracing::info!(
            keys = store.dedup_memory_stats().0,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dedup keys of the window loaded"
        );
    }
    let maintenance_wake = Arc::new(Notify::new());
    let writer = ingest::Writer::start(
        server.ingest_writers,
        store.clone(),
        dedup,
        router.wakers(),
        maintenance_wake.clone(),
        host.incarnation,
    );
    let ingest = Arc::new(ingest::IngestState::new(
        server,
        &catalog_watch.borrow().clone(),
        store.clone(),
        writer,
        clock.clone(),
    ));
    let ingest_following = tokio::spawn(ingest.clone().follow(catalog_watch.clone()));
    let metrics_handle = metrics::install();
    let metrics_store = store.clone();
    let app = ingest::router(ingest)
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (handle, store) = (metrics_handle.clone(), metrics_store.clone());
                async move {
                    match handle {
                        Some(h) => metrics::render(&h, &store).await,
                        None => String::from("# metrics recorder unavailable\n"),
                    }
                }
            }),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http());

    let listener = match listener {
        Some(l) => l,
        None => ingest::server::bind(server.listen)
            .with_context(|| format!("binding {}", server.listen))?,
    };
    // The admin API binds before ingest announces itself, so that its address is logged
    // by the time anyone reads "sluice listening".
    let admin = match &config.admin {
        Some(admin_config) => {
            let state = Arc::new(admin::AdminState {
                store: store.clone(),
                config: Arc::new(config.clone()),
                check: Arc::new(crate::catalog_check::EngineCheck(router.plugins())),
            });
            let app = admin::router(state, admin_config)?;
            let admin_listener = TcpListener::bind(admin_config.listen)
                .await
                .with_context(|| format!("binding the admin API on {}", admin_config.listen))?;
            let admin_addr = admin_listener.local_addr()?;
            tracing::info!(%admin_addr, "admin API listening on http://{admin_addr}");
            Some(tokio::spawn(admin::serve(
                admin_listener,
                app,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let stats = lane_stats::Flusher {
        store: store.clone(),
        host_id: host.incarnation,
        catalog: catalog_watch.clone(),
    };
    // Stopped after the lanes, so that it writes their last counts.
    let stats_stop = CancellationToken::new();
    let stats_flushing = tokio::spawn(stats.clone().run(server.stats_interval, stats_stop.clone()));

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "sluice listening on http://{addr}");

    let maintenance = tokio::spawn(
        Maintenance {
            store: store.clone(),
            wakers: router.wakers(),
            share: router.share(),
            host_stale_after: (server.maintenance_interval * 3).max(server.lease_ttl),
            clock: clock.clone(),
            datasets: server.datasets.policy(),
            dedup,
            interval: server.maintenance_interval,
            host: host.clone(),
            wake: maintenance_wake.clone(),
            shutdown: shutdown.clone(),
            stats,
            stats_expired_at: Default::default(),
        }
        .run(),
    );
    let listening = tokio::spawn(listen_for_peers(
        store.clone(),
        PeerWakes {
            wakers: router.wakers(),
            maintenance: maintenance_wake,
            catalog: catalog_changed,
        },
        host.incarnation,
        shutdown.clone(),
    ));
    let limits = ingest::server::ServerLimits {
        max_connections: server
            .max_connections
            .unwrap_or_else(ingest::server::default_max_connections),
        header_timeout: server.header_timeout,
    };
    tracing::info!(max_connections = limits.max_connections, "ingest limits");
    let served = ingest::server::serve(listener, app, limits, shutdown.clone())
        .await
        .context("serving HTTP");
    // HTTP stopped (shutdown or error): stop the lanes too, then let them finish.
    shutdown.cancel();
    router.join().await;
    stats_stop.cancel();
    let _ = stats_flushing.await;
    if let Some(admin) = admin
        && let Ok(Err(e)) = admin.await
    {
        tracing::warn!(error = %e, "the admin API stopped with an error");
    }
    let _ = maintenance.await;
    let _ = listening.await;
    let _ = watching.await;
    let _ = trimming.await;
    let _ = following.await;
    let _ = lanes_following.await;
    ingest_following.abort();
    if let Err(e) = store.host_stop(host.incarnation).await {
        tracing::warn!(error = %e, "could not mark this host stopped");
    }
    store.close().await;
    served
}

/// Seeds the catalog from the file's `[[source]]`/`[[destination]]` tables (only workspaces the
/// store does not have yet), then reads it.
async fn seed_and_load(config: &Config, store: &Store) -> anyhow::Result<Catalog> {
    let plugins_dir = &config.server.plugins_dir;
    let secrets = |plugin: &str| admin::redact::declared_secrets(plugins_dir, plugin).ok();
    let seed = store
        .catalog_seed(&config.sources, &config.destinations, &secrets)
        .await
        .context("seeding the catalog from the config file")?;
    if !seed.seeded.is_empty() {
        tracing::info!(workspaces = ?seed.seeded, "catalog seeded from the config file");
    }
    if !seed.kept.is_empty() {
        tracing::info!(workspaces = ?seed.kept, "the store's catalog holds these workspaces; the config file's tables for them are not used");
    }
    let catalog = store.catalog_load().await.context("reading the catalog")?;
    let resealed = store
        .catalog_reseal()
        .await
        .context("sealing configs again under the current secrets key")?;
    if resealed > 0 {
        tracing::info!(
            destinations = resealed,
            "configs sealed under a previous secrets key were sealed again under the current one"
        );
    }
    tracing::info!(
        version = catalog.version,
        destinations = catalog.destinations.len(),
        sources = catalog.sources.len(),
        "catalog"
    );
    Ok(catalog)
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
