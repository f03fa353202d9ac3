//! Ingest: the Segment/RudderStack-compatible HTTP API.
//!
//! `POST /v1/batch` and the single-event endpoints `/v1/{track,identify,page,screen,group,alias}`
//! accept plain or gzip JSON, authenticate by write key, validate every event, fan each one out
//! to the source's destinations and answer 200 only after the jobs are committed.
//! Errors: 400 (invalid JSON, empty batch, invalid event), 401 (write key), 413 (body over
//! 4000 KB, before or after gzip), 503 (store unavailable; clients retry). Nothing is half-written:
//! a request is stored whole or not at all.

mod auth;
mod body;
mod error;
pub mod event;
mod handlers;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::config::Config;
use crate::router::Wakers;
use crate::store::Store;

pub use body::MAX_BODY_BYTES;
pub use error::ApiError;

/// A source as ingest sees it.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub workspace: String,
    pub destinations: Vec<String>,
}

/// Shared state of the handlers.
pub struct IngestState {
    pub store: Store,
    /// Sources by write key.
    pub sources: HashMap<String, Arc<Source>>,
    pub wakers: Wakers,
}

impl IngestState {
    pub fn new(config: &Config, store: Store, wakers: Wakers) -> IngestState {
        let sources = config
            .sources
            .iter()
            .map(|s| {
                (
                    s.write_key.clone(),
                    Arc::new(Source {
                        id: s.id.clone(),
                        workspace: s.workspace.clone(),
                        destinations: s.destinations.clone(),
                    }),
                )
            })
            .collect();
        IngestState {
            store,
            sources,
            wakers,
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
