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
mod error;
pub mod event;
mod handlers;
pub mod server;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use sluice_config::Config;
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
    pub destinations: Arc<[String]>,
}

/// Shared state of the handlers.
pub struct IngestState {
    pub store: Store,
    /// Sources by write key.
    pub sources: HashMap<String, Arc<Source>>,
    pub writer: Writer,
    /// Memory for request bodies in flight.
    pub budget: BodyBudget,
    /// Where `receivedAt` comes from (and so the dedup minute of a request).
    pub clock: SharedClock,
}

impl IngestState {
    pub fn new(config: &Config, store: Store, writer: Writer, clock: SharedClock) -> IngestState {
        let sources = config
            .sources
            .iter()
            .map(|s| {
                (
                    s.write_key.clone(),
                    Arc::new(Source {
                        id: s.id.as_str().into(),
                        workspace: s.workspace.as_str().into(),
                        destinations: s.destinations.iter().map(|d| d.to_string()).collect(),
                    }),
                )
            })
            .collect();
        IngestState {
            store,
            sources,
            writer,
            budget: BodyBudget::new(
                usize::try_from(config.server.ingest_memory).unwrap_or(usize::MAX),
            ),
            clock,
        }
    }
}

/// The ingest routes (no listener: tests can drive it with `oneshot`).
pub fn router(state: Arc<IngestState>) -> Router {
    let mut app = Router::new().route("/v1/batch", post(handlers::batch));
    for kind in event::EVENT_TYPES {
        app = app.route(&format!("/v1/{kind}"), post(handlers::single));
    }
    app.route("/health", get(handlers::health))
        .with_state(state)
}
