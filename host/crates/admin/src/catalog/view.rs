//! The catalog as the API shows it: secrets masked, write keys as hints.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::CatalogCheck;
use super::mask::masked;
use sluice_core::EventFilter;
use sluice_core::catalog::{Catalog, DestinationConfig, Source};

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogView {
    /// Bumped by every change.
    pub version: i64,
    pub workspaces: Vec<String>,
    pub sources: Vec<SourceView>,
    pub destinations: Vec<DestinationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationView {
    pub id: String,
    pub workspace: String,
    pub plugin: String,
    /// Secrets shown as `***`.
    #[schema(value_type = Object)]
    pub config: Value,
    #[schema(value_type = Object)]
    pub retry: Value,
    /// `user`, `source_user` or `none`.
    pub ordering: String,
    pub max_concurrency: usize,
    pub rate_limit: Option<f64>,
    pub allowed_private_networks: Vec<String>,
    /// Which events go to it (`{}`: every event).
    #[schema(value_type = Object)]
    pub filter: EventFilter,
    /// The sources linked to it now.
    pub sources: Vec<String>,
    /// Set when it was deleted with `drain` (RFC 3339): it takes no new events and is deleted
    /// once it has delivered what it had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub id: String,
    pub workspace: String,
    pub enabled: bool,
    /// The destinations its new events go to.
    pub destinations: Vec<String>,
    pub keys: Vec<KeyView>,
    /// Browser origins allowed to send with its keys (CORS).
    pub allowed_origins: Vec<String>,
    /// The limits it sets (a browser source gets defaults for the rest: docs/sources.md).
    #[schema(value_type = Object)]
    pub limits: sluice_core::SourceLimits,
}

/// A write key: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Its first characters and length.
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<OffsetDateTime>,
}

pub async fn destination(
    d: &DestinationConfig,
    catalog: &Catalog,
    check: &dyn CatalogCheck,
) -> DestinationView {
    let secrets = check.secret_paths(&d.plugin).await;
    DestinationView {
        id: d.id.to_string(),
        workspace: d.workspace.to_string(),
        plugin: d.plugin.clone(),
        config: masked(&d.config, secrets.as_deref()),
        retry: serde_json::to_value(&d.retry).unwrap_or_default(),
        ordering: serde_json::to_value(d.ordering)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        max_concurrency: d.max_concurrency,
        rate_limit: d.rate_limit,
        allowed_private_networks: d
            .allowed_private_networks
            .iter()
            .map(ToString::to_string)
            .collect(),
        filter: d.filter.clone(),
        sources: catalog
            .links
            .iter()
            .filter(|l| l.is_live() && l.destination == d.id)
            .map(|l| l.source.to_string())
            .collect(),
        draining_since: catalog.draining_since(&d.id).and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
    }
}

pub fn source(s: &Source, catalog: &Catalog) -> SourceView {
    SourceView {
        id: s.id.to_string(),
        workspace: s.workspace.to_string(),
        enabled: s.enabled,
        destinations: catalog
            .destinations_of(&s.id)
            .iter()
            .map(ToString::to_string)
            .collect(),
        keys: s
            .keys
            .iter()
            .map(|k| KeyView {
                hint: k.hint.clone(),
                created_at: k.created_at,
                expires_at: k.expires_at,
            })
            .collect(),
        allowed_origins: s
            .settings
            .allowed_origins
            .iter()
            .map(ToString::to_string)
            .collect(),
        limits: s.settings.limits,
    }
}

pub async fn catalog(catalog: &Catalog, check: &dyn CatalogCheck) -> CatalogView {
    let mut destinations = Vec::with_capacity(catalog.destinations.len());
    for d in &catalog.destinations {
        destinations.push(destination(d, catalog, check).await);
    }
    CatalogView {
        version: catalog.version,
        workspaces: catalog.workspaces.iter().map(ToString::to_string).collect(),
        sources: catalog.sources.iter().map(|s| source(s, catalog)).collect(),
        destinations,
    }
}
