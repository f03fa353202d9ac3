//! Ingest: the Segment/RudderStack-compatible HTTP API.
//!
//! `POST /v1/batch` and the single-event endpoints `/v1/{track,identify,page,screen,group,alias}`
//! accept plain or gzip JSON, authenticate by write key, validate every event and answer 200
//! only after the events are committed to the log (`writer`, group commit). Errors: 400
//! (invalid JSON, `\u0000`, empty batch, invalid event), 401 (write key), 413 (body over
//! 4000 KB, before or after gzip), 503 (store unavailable; clients retry). Nothing is
//! half-written: a request is stored whole or not at all.
//!
//! Time: a request's `receivedAt` (and with it the dedup minute the store files its
//! messageIds under) comes from the [`SharedClock`] in [`IngestState`], never from the
//! system clock directly, so tests drive it with a `ManualClock`. Body and connection
//! timeouts are durations on tokio's monotonic clock (`body`, `server`).

mod auth;
mod body;
mod body_buf;
mod clock_skew;
mod cors;
mod error;
pub mod event;
mod handlers;
mod limits;
mod sdk_settings;
pub mod server;
mod write_queue;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use arc_swap::ArcSwap;
use limits::Limits;
use sluice_config::ServerConfig;
use sluice_core::AllowedOrigin;
use sluice_core::catalog::{Catalog, KeyHash, key_sha256};
use time::OffsetDateTime;

use crate::catalog::CatalogWatch;
use sluice_core::clock::SharedClock;
use sluice_store::Store;

pub use body::{BodyBudget, MAX_BODY_BYTES};
pub use error::ApiError;
pub use writer::Writer;

/// A source as ingest sees it.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: Arc<str>,
    pub workspace: Arc<str>,
    /// Where its new events go (its live links): the lanes ingest wakes.
    pub destinations: Arc<[String]>,
    /// Browser origins that may send with its keys (`cors`).
    pub allowed_origins: Arc<[AllowedOrigin]>,
    /// Its rate and size limits, with their buckets (`limits`).
    pub limits: Arc<Limits>,
}

/// The enabled sources by the SHA-256 of each of their write keys, as of one catalog version.
#[derive(Debug, Default)]
pub struct SourceKeys {
    by_key: HashMap<KeyHash, (Arc<Source>, Option<OffsetDateTime>)>,
    /// The keys of disabled sources: only the SDK settings answer tells them apart.
    disabled: HashMap<KeyHash, (Arc<Source>, Option<OffsetDateTime>)>,
    /// Every enabled source's allowed origins together: what a preflight is answered for.
    origins: Vec<AllowedOrigin>,
}

impl SourceKeys {
    /// The keys of `catalog`; sources whose settings did not change since `previous` keep
    /// their rate-limit buckets.
    pub fn of(catalog: &Catalog, previous: Option<&SourceKeys>) -> SourceKeys {
        let kept: HashMap<&str, &Arc<Limits>> = previous
            .map(|p| {
                p.by_key
                    .values()
                    .map(|(s, _)| (&*s.id, &s.limits))
                    .collect()
            })
            .unwrap_or_default();
        // Live links by source, in one pass (not a scan of every link per source: a big
        // catalog is rebuilt on every change).
        let mut live: HashMap<&str, Vec<String>> = HashMap::new();
        for l in catalog.links.iter().filter(|l| l.is_live()) {
            live.entry(l.source.as_str())
                .or_default()
                .push(l.destination.to_string());
        }
        let mut by_key = HashMap::new();
        let mut disabled = HashMap::new();
        let mut origins: Vec<AllowedOrigin> = Vec::new();
        for s in &catalog.sources {
            for o in s.settings.allowed_origins.iter().filter(|_| s.enabled) {
                if !origins.contains(o) {
                    origins.push(o.clone());
                }
            }
            let source = Arc::new(Source {
                id: s.id.as_str().into(),
                workspace: s.workspace.as_str().into(),
                destinations: live.remove(s.id.as_str()).unwrap_or_default().into(),
                allowed_origins: s.settings.allowed_origins.clone().into(),
                limits: match kept.get(s.id.as_str()) {
                    Some(l) if l.settings == s.settings => Arc::clone(l),
                    _ => Arc::new(Limits::new(&s.settings)),
                },
            });
            let keys = if s.enabled {
                &mut by_key
            } else {
                &mut disabled
            };
            for k in &s.keys {
                keys.insert(k.sha256, (source.clone(), k.expires_at));
            }
        }
        SourceKeys {
            by_key,
            disabled,
            origins,
        }
    }

    /// Whether some enabled source lets pages of `origin` send.
    pub fn any_allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.matches(origin))
    }

    /// The source `key` belongs to, if the key is known and not expired at `now`.
    pub fn find(&self, key: &str, now: OffsetDateTime) -> Option<Arc<Source>> {
        let (source, expires_at) = self.by_key.get(&key_sha256(key))?;
        expires_at.is_none_or(|t| now < t).then(|| source.clone())
    }

    /// The disabled source `key` belongs to, if any (it gets no events either way).
    pub fn find_disabled(&self, key: &str, now: OffsetDateTime) -> Option<Arc<Source>> {
        let (source, expires_at) = self.disabled.get(&key_sha256(key))?;
        expires_at.is_none_or(|t| now < t).then(|| source.clone())
    }
}

/// Shared state of the handlers.
pub struct IngestState {
    pub store: Store,
    /// Sources by write key; replaced whenever the catalog changes ([`IngestState::follow`]).
    pub sources: ArcSwap<SourceKeys>,
    /// Peers whose `X-Forwarded-For` names the client (`limits::client_ip`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub writer: Writer,
    /// Memory for request bodies in flight.
    pub budget: BodyBudget,
    /// Where `receivedAt` comes from (and so the dedup minute of a request), and the time
    /// write keys expire against.
    pub clock: SharedClock,
}

impl IngestState {
    pub fn new(
        server: &ServerConfig,
        catalog: &Catalog,
        store: Store,
        writer: Writer,
        clock: SharedClock,
    ) -> IngestState {
        IngestState {
            store,
            sources: ArcSwap::from_pointee(SourceKeys::of(catalog, None)),
            trusted_proxies: server.trusted_proxies.clone(),
            writer,
            budget: BodyBudget::new(usize::try_from(server.ingest_memory).unwrap_or(usize::MAX)),
            clock,
        }
    }

    /// The source of a write key, now.
    pub fn source(&self, key: &str) -> Option<Arc<Source>> {
        self.sources.load().find(key, self.clock.now())
    }

    /// Takes every catalog `watch` publishes: new, disabled and deleted sources and rotated
    /// keys count from the next request.
    pub async fn follow(self: Arc<Self>, mut catalog: CatalogWatch) {
        while catalog.changed().await.is_ok() {
            let current = catalog.borrow_and_update().clone();
            let next = SourceKeys::of(&current, Some(&self.sources.load()));
            self.sources.store(Arc::new(next));
        }
    }
}

/// The ingest routes (no listener: tests can drive it with `oneshot`).
pub fn router(state: Arc<IngestState>) -> Router {
    // `/beacon/v1/batch`: where RudderStack's SDK sends its beacons on page unload.
    let mut app = Router::new()
        .route("/v1/batch", post(handlers::batch))
        .route("/beacon/v1/batch", post(handlers::batch));
    for kind in event::EVENT_TYPES {
        app = app.route(&format!("/v1/{kind}"), post(handlers::single));
    }
    // Segment's browser SDK: `/v1/t` for a track, … and `/v1/b` for a batch.
    for (short, _) in handlers::SHORT_PATHS {
        app = app.route(&format!("/v1/{short}"), post(handlers::single));
    }
    app = app.route("/v1/b", post(handlers::batch));
    // What the browser SDKs fetch when a page loads them.
    app = app
        .route("/sourceConfig", get(sdk_settings::rudderstack))
        .route("/sourceConfig/", get(sdk_settings::rudderstack))
        .route("/v1/projects/{key}/settings", get(sdk_settings::segment));
    app.route("/health", get(handlers::health))
        .layer(cors::layer(state.clone()))
        .with_state(state)
}
