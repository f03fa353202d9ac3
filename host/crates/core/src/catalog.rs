//! The catalog's items as every layer sees them: sources, destinations and the links between
//! them (docs/catalog.md).
//!
//! `sluice.toml` writes them (`sluice-config` parses and validates the file), the store keeps
//! them (`sluice-store::catalog`), the admin API and `sluice apply` change them, and the engine
//! runs what the store holds. One set of types for all of them, so that a field added here
//! reaches every path.

use std::collections::HashSet;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    AllowedOrigin, DestinationId, EventFilter, OrderingScope, RetryOverrides, SourceId,
    SourceLimits, WorkspaceId,
};

/// A `[[source]]` as a file writes it: one write key, in plain text (the store keeps only its
/// hash; see [`key_sha256`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: SourceId,
    pub workspace: WorkspaceId,
    pub write_key: String,
    /// Destinations of the same workspace.
    #[serde(default)]
    pub destinations: Vec<DestinationId>,
    /// Browser origins allowed to send with its key (CORS); none: browsers are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<AllowedOrigin>,
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub limits: SourceLimits,
}

fn is_default_limits(l: &SourceLimits) -> bool {
    *l == SourceLimits::default()
}

impl SourceConfig {
    pub fn settings(&self) -> SourceSettings {
        SourceSettings {
            allowed_origins: self.allowed_origins.clone(),
            limits: self.limits,
        }
    }
}

/// How a source takes events from browsers (`sources.settings` in the store).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// Origins whose pages may send with the source's key: a request carrying another
    /// `Origin` is refused (403) and nothing of it is stored. Requests without `Origin`
    /// (servers, apps) are not browsers and are not concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Rates and sizes (`source_limits`); a source that allows browsers gets safe defaults.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub limits: SourceLimits,
}

impl SourceSettings {
    /// A source that takes events from browser pages: its key is public.
    pub fn is_browser(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Whether a page of `origin` may send with the source's key.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.matches(origin))
    }
}

/// A destination: its plugin, the plugin's config, and how the host delivers to it. The
/// store keeps `retry`, `max_concurrency`, `rate_limit`, `allowed_private_networks` and
/// `filter` as one JSON document (`destinations.settings`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub id: DestinationId,
    pub workspace: WorkspaceId,
    pub plugin: String,
    /// Handed to the plugin's `configure` as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Overrides of the plugin manifest's retry policy, field by field.
    #[serde(default, skip_serializing_if = "RetryOverrides::is_empty")]
    pub retry: RetryOverrides,
    /// What is kept in order: `user` (default), `source_user` or `none`.
    #[serde(default)]
    pub ordering: OrderingScope,
    /// The most requests in flight to this destination at once; the actual limit adapts
    /// below it to how the destination answers.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// At most this many events per second to this destination (a vendor's quota), on top of
    /// the adaptive concurrency limit. None: no rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Private networks this destination's plugin may connect to, besides the server's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_private_networks: Vec<IpNet>,
    /// Which events go to this destination; the others never reach its plugin and are counted
    /// as `filtered`. Default: every event.
    #[serde(default, skip_serializing_if = "EventFilter::is_empty")]
    pub filter: EventFilter,
}

pub fn default_max_concurrency() -> usize {
    256
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Why a catalog item cannot be stored as it is; each names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidItem {
    pub field: String,
    pub message: String,
}

impl InvalidItem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> InvalidItem {
        InvalidItem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl DestinationConfig {
    /// The checks every path applies (file, API, apply): the plugin name, the config's shape,
    /// the retry overrides, the rate limit, the concurrency and the filter. Ids were checked
    /// when they were made.
    pub fn validate(&self) -> Result<(), InvalidItem> {
        if self.plugin.is_empty() {
            return Err(InvalidItem::new("plugin", "must not be empty"));
        }
        if !self.config.is_object() {
            return Err(InvalidItem::new(
                "config",
                "must be a table (a JSON object)",
            ));
        }
        let r = &self.retry;
        if let (Some(min), Some(max)) = (r.min_backoff, r.max_backoff)
            && min > max
        {
            return Err(InvalidItem::new(
                "retry",
                "min_backoff must not exceed max_backoff",
            ));
        }
        if r.min_backoff == Some(Duration::ZERO) {
            return Err(InvalidItem::new(
                "retry.min_backoff",
                "must be greater than zero",
            ));
        }
        if let Some(rate) = self.rate_limit
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(InvalidItem::new(
                "rate_limit",
                "must be a number of events per second greater than zero",
            ));
        }
        if self.max_concurrency == 0 {
            return Err(InvalidItem::new("max_concurrency", "must be at least 1"));
        }
        self.filter
            .validate()
            .map_err(|e| InvalidItem::new(format!("filter.{}", e.field), e.message))?;
        Ok(())
    }
}

/// A copy of `config` with the value at each secret path (dotted, e.g. `headers.Authorization`)
/// replaced by `"***"`. Paths that are absent are ignored; a path naming an object or array
/// masks all of it.
pub fn redact_config(config: &serde_json::Value, secrets: &[String]) -> serde_json::Value {
    let mut copy = config.clone();
    for path in secrets {
        let mut node = Some(&mut copy);
        for part in path.split('.') {
            node = node.and_then(|n| n.get_mut(part));
        }
        if let Some(value) = node {
            *value = serde_json::Value::String("***".into());
        }
    }
    copy
}

/// A config as people may see it (the store's `destinations.config`, the audit): the
/// declared secret paths masked (`None`: unknown, so everything is), and in every URL its user
/// info and query values, where webhook URLs carry tokens.
pub fn masked_config(
    config: &serde_json::Value,
    secret_paths: Option<&[String]>,
) -> serde_json::Value {
    use serde_json::Value;
    fn urls(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), urls(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(urls).collect()),
            Value::String(s) if s.contains("://") => Value::String(mask_url(s)),
            other => other.clone(),
        }
    }
    match secret_paths {
        Some(paths) => urls(&redact_config(config, paths)),
        None => Value::String("***".into()),
    }
}

/// A URL with its user info and each query value shown as `***` (the text unchanged when it
/// carries neither, or is not a URL).
pub fn mask_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return text.to_string();
    };
    if url.username().is_empty() && url.password().is_none() && url.query().is_none() {
        return text.to_string();
    }
    if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if url.password().is_some() {
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
    }
    url.to_string()
}

/// A write key as the store keeps it: its SHA-256, never the key.
pub type KeyHash = [u8; 32];

/// The SHA-256 of a write key: what the store keeps and what ingest looks keys up by.
pub fn key_sha256(key: &str) -> KeyHash {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// What people see of a key: its first four characters and its length.
pub fn key_hint(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    format!("{head}… ({} chars)", key.chars().count())
}

/// A source as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: SourceId,
    pub workspace: WorkspaceId,
    pub enabled: bool,
    pub keys: Vec<SourceKey>,
    pub settings: SourceSettings,
}

/// One of a source's write keys.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceKey {
    pub sha256: KeyHash,
    pub hint: String,
    pub created_at: OffsetDateTime,
    /// A rotated-out key works until then.
    pub expires_at: Option<OffsetDateTime>,
}

impl SourceKey {
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// A link: the destination gets the source's events with ids in `(from_id, until_id]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub source: SourceId,
    pub destination: DestinationId,
    pub from_id: i64,
    /// None: still linked.
    pub until_id: Option<i64>,
}

impl Link {
    pub fn is_live(&self) -> bool {
        self.until_id.is_none()
    }
}

/// Everything a host runs, as of one catalog version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub version: i64,
    pub workspaces: Vec<WorkspaceId>,
    pub sources: Vec<Source>,
    pub destinations: Vec<DestinationConfig>,
    pub links: Vec<Link>,
    /// Destinations deleted with `drain`, and since when: they take no new events, deliver
    /// what their sources accepted before, and are deleted once they have.
    pub draining: Vec<(DestinationId, OffsetDateTime)>,
}

impl Catalog {
    /// The destinations a source's new events go to (its live links).
    pub fn destinations_of(&self, source: &str) -> Vec<DestinationId> {
        self.links
            .iter()
            .filter(|l| l.is_live() && l.source == source)
            .map(|l| l.destination.clone())
            .collect()
    }

    /// The links feeding a destination, live or still draining.
    pub fn links_of(&self, destination: &str) -> Vec<Link> {
        self.links
            .iter()
            .filter(|l| l.destination == destination)
            .cloned()
            .collect()
    }

    pub fn destination(&self, id: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.id == id)
    }

    /// When the destination started draining (`None`: it is not).
    pub fn draining_since(&self, id: &str) -> Option<OffsetDateTime> {
        self.draining.iter().find(|(d, _)| d == id).map(|(_, t)| *t)
    }

    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// Workspaces named by `sources` or `destinations` (a file's tables).
    pub fn workspaces_of(
        sources: &[SourceConfig],
        destinations: &[DestinationConfig],
    ) -> Vec<WorkspaceId> {
        let mut seen = HashSet::new();
        sources
            .iter()
            .map(|s| &s.workspace)
            .chain(destinations.iter().map(|d| &d.workspace))
            .filter(|w| seen.insert((*w).clone()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn masked_configs_hide_declared_paths_and_url_credentials() {
        let config = json!({
            "url": "https://user:PASSW0RD@h.example/hook?token=SECRET1&x=1",
            "plain": "https://h.example/x",
            "secret": "whsec_abc",
        });
        let shown = masked_config(&config, Some(&["secret".to_string()]));
        let text = shown.to_string();
        for needle in ["PASSW0RD", "SECRET1", "whsec_abc", "user:"] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(shown["plain"], "https://h.example/x");
        assert_eq!(masked_config(&config, None), json!("***"));
    }

    #[test]
    fn a_destination_filter_is_validated_under_its_field() {
        let mut d: DestinationConfig = serde_json::from_value(json!({
            "id": "hook", "workspace": "acme", "plugin": "webhook",
            "filter": {"deny_types": ["identify"], "deny_events": ["Secret Event"]},
        }))
        .unwrap();
        assert!(d.validate().is_ok());
        assert_eq!(d.filter.deny_events, vec!["Secret Event"]);
        d.filter.deny_types.push("idnetify".into());
        let e = d.validate().unwrap_err();
        assert_eq!(e.field, "filter.deny_types");
        assert!(e.message.contains("`idnetify` is not an event type"), "{e}");
    }
}
