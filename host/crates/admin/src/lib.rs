//! The admin HTTP API (`[admin] listen`): its own listener, bearer tokens with a scope, JSON
//! everywhere, an OpenAPI document at `/api/openapi.json`. See docs/admin.md.
//!
//! ```text
//! GET  /api/v1/jobs                      list (filters, cursor)
//! GET  /api/v1/jobs/{ws}/{dest}/{id}     one job: attempts and event
//! POST /api/v1/jobs/{retry,abort,replay} by ids, filter or whole lane → {"jobs": n}
//! GET  /api/v1/destinations              lanes: depth, age, rates, limit, breaker, lease
//! GET  /api/v1/destinations/{ws}/{dest}/{stats,blocked}
//! POST /api/v1/destinations/{ws}/{dest}/{pause,resume}
//! GET  /api/v1/plugins, /api/v1/config, /api/v1/audit
//! GET|POST|PUT|DELETE /api/v1/catalog/…   sources, destinations, links, keys (`catalog`)
//! ```
//! Every request passes [`auth::authorize`] first (origin, token, scope). Mutations call the
//! operator SQL functions with the token's name as actor, and the audit row records the
//! filter (`store::admin`).

pub mod auth;
pub mod catalog;
pub mod error;
mod info;
mod input;
mod jobs;
mod lanes;
pub mod openapi;
pub mod redact;
mod web;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use error::ApiError;
use sluice_config::{AdminConfig, Config};
use sluice_store::Store;

/// Request bodies larger than this are refused (an action lists at most 10,000 ids).
const MAX_BODY: usize = 1 << 20;

/// What the handlers share.
pub struct AdminState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Asks the plugins whether a destination would run (before any catalog write).
    pub check: Arc<dyn catalog::CatalogCheck>,
}

/// The admin API's routes behind authorization, timeout and body limit.
pub fn router(
    state: Arc<AdminState>,
    admin: &AdminConfig,
) -> Result<axum::Router, auth::MissingSecret> {
    let tokens = Arc::new(auth::Tokens::new(admin)?);
    let doc = Arc::new(serde_json::to_value(openapi::ApiDoc::openapi()).unwrap_or_default());
    let api = axum::Router::new()
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/retry", post(jobs::retry))
        .route("/api/v1/jobs/abort", post(jobs::abort))
        .route("/api/v1/jobs/replay", post(jobs::replay))
        .route(
            "/api/v1/jobs/{workspace}/{destination}/{event_id}",
            get(jobs::show),
        )
        .route("/api/v1/destinations", get(lanes::list))
        .route(
            "/api/v1/destinations/{workspace}/{destination}/stats",
            get(lanes::stats),
        )
        .route(
            "/api/v1/destinations/{workspace}/{destination}/blocked",
            get(lanes::blocked),
        )
        .route(
            "/api/v1/destinations/{workspace}/{destination}/pause",
            post(lanes::pause),
        )
        .route(
            "/api/v1/destinations/{workspace}/{destination}/resume",
            post(lanes::resume),
        )
        .route("/api/v1/catalog", get(catalog::show))
        .route("/api/v1/catalog/audit", get(catalog::audit))
        .route("/api/v1/catalog/apply", post(catalog::apply))
        .route("/api/v1/catalog/plugins", get(catalog::plugins::plugins))
        .route(
            "/api/v1/catalog/destinations",
            post(catalog::create_destination),
        )
        .route(
            "/api/v1/catalog/destinations/{workspace}/{destination}",
            get(catalog::show_destination)
                .put(catalog::update_destination)
                .delete(catalog::delete_destination),
        )
        .route("/api/v1/catalog/sources", post(catalog::create_source))
        .route(
            "/api/v1/catalog/sources/{workspace}/{source}",
            get(catalog::show_source)
                .put(catalog::update_source)
                .delete(catalog::delete_source),
        )
        .route(
            "/api/v1/catalog/sources/{workspace}/{source}/keys",
            post(catalog::add_key),
        )
        .route("/api/v1/plugins", get(info::plugins))
        .route("/api/v1/config", get(info::config))
        .route("/api/v1/audit", get(info::audit))
        .route("/api/v1/whoami", get(info::whoami))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(error::ErrorBody {
                    error: "method not allowed".into(),
                    field: None,
                }),
            )
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::authorize,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            admin.request_timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // The page's files need no token (they hold no data): merged outside the API's layers.
    Ok(api.merge(web::router()))
}

/// Serves the admin API until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
