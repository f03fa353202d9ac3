//! Typed configuration: defaults → `sluice.toml` → environment (`DATABASE_URL`, `SLUICE_LISTEN`).
//!
//! `load` either returns a config that is internally consistent (every source names existing
//! destinations, ids are unique, retry policies are sane) or a [`ConfigError`] naming the file,
//! the line and the field at fault. Relative paths are resolved against the config file's folder.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use sluice_core::{OrderingScope, RetryOverrides};

mod admin;
pub use admin::{AdminConfig, AdminToken, TokenScope, TokenSource};

/// Everything `sluice serve` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (for messages); `None` when built in code.
    pub path: Option<PathBuf>,
    pub server: ServerConfig,
    pub sources: Vec<SourceConfig>,
    pub destinations: Vec<DestinationConfig>,
    /// The admin API (`[admin]`); `None`: disabled.
    pub admin: Option<AdminConfig>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Compiled plugins are cached here (default: `<data_dir>/plugin-cache`).
    #[serde(default)]
    pub plugin_cache_dir: Option<PathBuf>,
    /// Use this PostgreSQL server instead of the embedded one. `DATABASE_URL` overrides it.
    #[serde(default)]
    pub database_url: Option<String>,
    /// A resent `messageId` from the same source within this window creates no new jobs
    /// (`0s` turns dedup off).
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long a host's hold on a lane lasts without renewal; another host takes the lane
    /// over after that (hosts' clocks must agree to well within a third of it).
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a lane that ran dry keeps its lease before giving it back.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub lane_linger: Duration,
    /// Event bytes one lane may hold in memory (read ahead, queued, in flight).
    #[serde(default = "default_lane_memory", deserialize_with = "size")]
    pub lane_memory: u64,
    /// Connections to PostgreSQL.
    #[serde(default = "default_db_connections")]
    pub db_connections: u32,
    /// How often maintenance runs while there is work (rescue, datasets, dedup expiry).
    #[serde(default = "default_maintenance_interval", with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// When datasets (partitions of the log) rotate and are dropped.
    #[serde(default)]
    pub datasets: DatasetConfig,
    /// Open ingest connections at most (default: three quarters of the file limit).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A connection must send a complete request head within this long of waiting for one
    /// (slow clients, idle keep-alive connections).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Memory for request bodies in flight; past it, requests get 503 and retry.
    #[serde(default = "default_ingest_memory", deserialize_with = "size")]
    pub ingest_memory: u64,
    /// Private networks (CIDRs) every destination's plugin may connect to. Empty (the
    /// default): only public addresses (see `runtime::net_policy`).
    #[serde(default)]
    pub allowed_private_networks: Vec<IpNet>,
    /// How often a host writes the per-lane counts behind the admin API's rates
    /// (`lane_stats`); only lanes that moved are written.
    #[serde(default = "default_stats_interval", with = "humantime_serde")]
    pub stats_interval: Duration,
}

fn default_stats_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ingest_memory() -> u64 {
    256 << 20
}

/// `[server.datasets]`: see `store::datasets`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    #[serde(default = "default_dataset_events")]
    pub max_events: i64,
    #[serde(default = "default_dataset_bytes", deserialize_with = "size")]
    pub max_bytes: u64,
    #[serde(default = "default_dataset_age", with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(default = "default_compact_below")]
    pub compact_below: i64,
    #[serde(default = "default_aborted_retention", with = "humantime_serde")]
    pub aborted_retention: Duration,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            max_events: default_dataset_events(),
            max_bytes: default_dataset_bytes(),
            max_age: default_dataset_age(),
            compact_below: default_compact_below(),
            aborted_retention: default_aborted_retention(),
        }
    }
}

impl DatasetConfig {
    pub fn policy(&self) -> sluice_core::DatasetPolicy {
        sluice_core::DatasetPolicy {
            max_events: self.max_events.max(1),
            max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            max_age: self.max_age,
            compact_below: self.compact_below.max(0),
            aborted_retention: self.aborted_retention,
        }
    }
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_linger() -> Duration {
    Duration::from_secs(5)
}
fn default_lane_memory() -> u64 {
    32 << 20
}
fn default_db_connections() -> u32 {
    16
}
fn default_maintenance_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_dataset_events() -> i64 {
    1_000_000
}
fn default_dataset_bytes() -> u64 {
    1 << 30
}
fn default_dataset_age() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_compact_below() -> i64 {
    10_000
}
fn default_aborted_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// A size such as `32MiB` (or a number of bytes).
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(b) => Ok(b),
        Size::Text(t) => sluice_core::size::parse_size(&t).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: String,
    pub workspace: String,
    pub write_key: String,
    #[serde(default)]
    pub destinations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub id: String,
    pub workspace: String,
    pub plugin: String,
    /// Handed to the plugin's `configure` as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Overrides of the plugin manifest's retry policy, field by field.
    #[serde(default)]
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
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Private networks this destination's plugin may connect to, besides the server's.
    #[serde(default)]
    pub allowed_private_networks: Vec<IpNet>,
}

fn default_max_concurrency() -> usize {
    256
}

/// Errors from loading the config; each names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        message: String,
    },
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins.d")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("var")
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(3600)
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            plugins_dir: default_plugins_dir(),
            data_dir: default_data_dir(),
            plugin_cache_dir: None,
            database_url: None,
            dedup_window: default_dedup_window(),
            lease_ttl: default_lease_ttl(),
            lane_linger: default_linger(),
            lane_memory: default_lane_memory(),
            db_connections: default_db_connections(),
            maintenance_interval: default_maintenance_interval(),
            datasets: DatasetConfig::default(),
            max_connections: None,
            header_timeout: default_header_timeout(),
            ingest_memory: default_ingest_memory(),
            allowed_private_networks: Vec::new(),
            stats_interval: default_stats_interval(),
        }
    }
}

/// The file as written, with spans kept for the fields that cross-reference each other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    destination: Vec<Spanned<RawDestination>>,
    #[serde(default)]
    admin: Option<admin::RawAdmin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: Spanned<String>,
    workspace: String,
    write_key: Spanned<String>,
    #[serde(default)]
    destinations: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    id: Spanned<String>,
    workspace: Spanned<String>,
    plugin: Spanned<String>,
    #[serde(default)]
    config: Option<Spanned<toml::Value>>,
    #[serde(default)]
    retry: Option<Spanned<RetryOverrides>>,
    #[serde(default)]
    ordering: OrderingScope,
    #[serde(default = "default_max_concurrency")]
    max_concurrency: usize,
    #[serde(default)]
    rate_limit: Option<Spanned<f64>>,
    #[serde(default)]
    allowed_private_networks: Vec<IpNet>,
}

impl Config {
    /// Reads, parses and validates the file at `path`, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.server.plugins_dir = base.join(&config.server.plugins_dir);
        config.server.data_dir = base.join(&config.server.data_dir);
        config.server.plugin_cache_dir = config.server.plugin_cache_dir.map(|d| base.join(d));
        config.path = Some(path.to_path_buf());
        if let Some(admin) = &mut config.admin {
            admin.read_token_files(base, &path.display().to_string())?;
            for t in admin
                .tokens
                .iter()
                .filter(|t| t.source == TokenSource::Inline)
            {
                tracing::warn!(token = %t.name, "admin token secret written in the config file; prefer token_env or token_file");
            }
        }
        config.apply_env();
        Ok(config)
    }

    /// Parses and validates config text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let invalid =
            |span: std::ops::Range<usize>, field: &str, message: String| ConfigError::Invalid {
                path: name.to_string(),
                line: line_of(text, span.start),
                field: field.to_string(),
                message,
            };

        let mut destinations = Vec::new();
        let mut dest_ids = HashSet::new();
        for (i, d) in raw.destination.into_iter().enumerate() {
            let d = d.into_inner();
            let field = |f: &str| format!("destination[{i}].{f}");
            if !valid_id(d.id.get_ref()) {
                return Err(invalid(d.id.span(), &field("id"), id_rule(d.id.get_ref())));
            }
            if !dest_ids.insert(d.id.get_ref().clone()) {
                return Err(invalid(
                    d.id.span(),
                    &field("id"),
                    format!("duplicate destination id `{}`", d.id.get_ref()),
                ));
            }
            if d.plugin.get_ref().is_empty() {
                return Err(invalid(
                    d.plugin.span(),
                    &field("plugin"),
                    "must not be empty".into(),
                ));
            }
            let config = match d.config {
                None => empty_object(),
                Some(c) => {
                    let span = c.span();
                    let value = serde_json::to_value(c.into_inner())
                        .map_err(|e| invalid(span.clone(), &field("config"), e.to_string()))?;
                    if !value.is_object() {
                        return Err(invalid(span, &field("config"), "must be a table".into()));
                    }
                    value
                }
            };
            let retry = match d.retry {
                None => RetryOverrides::default(),
                Some(r) => {
                    let span = r.span();
                    let r = r.into_inner();
                    if let (Some(min), Some(max)) = (r.min_backoff, r.max_backoff)
                        && min > max
                    {
                        return Err(invalid(
                            span,
                            &field("retry"),
                            "min_backoff must not exceed max_backoff".into(),
                        ));
                    }
                    if r.min_backoff == Some(Duration::ZERO) {
                        return Err(invalid(
                            span,
                            &field("retry.min_backoff"),
                            "must be greater than zero".into(),
                        ));
                    }
                    r
                }
            };
            let rate_limit = match d.rate_limit {
                None => None,
                Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => Some(r.into_inner()),
                Some(r) => {
                    return Err(invalid(
                        r.span(),
                        &field("rate_limit"),
                        "must be a number of events per second greater than zero".into(),
                    ));
                }
            };
            destinations.push(DestinationConfig {
                id: d.id.into_inner(),
                workspace: d.workspace.into_inner(),
                plugin: d.plugin.into_inner(),
                config,
                retry,
                ordering: d.ordering,
                max_concurrency: d.max_concurrency.max(1),
                rate_limit,
                allowed_private_networks: d.allowed_private_networks,
            });
        }

        let mut sources = Vec::new();
        let mut source_ids = HashSet::new();
        let mut keys = HashSet::new();
        for (i, s) in raw.source.into_iter().enumerate() {
            let s = s.into_inner();
            let field = |f: &str| format!("source[{i}].{f}");
            if !valid_id(s.id.get_ref()) {
                return Err(invalid(s.id.span(), &field("id"), id_rule(s.id.get_ref())));
            }
            if !source_ids.insert(s.id.get_ref().clone()) {
                return Err(invalid(
                    s.id.span(),
                    &field("id"),
                    format!("duplicate source id `{}`", s.id.get_ref()),
                ));
            }
            if s.write_key.get_ref().is_empty() || !keys.insert(s.write_key.get_ref().clone()) {
                return Err(invalid(
                    s.write_key.span(),
                    &field("write_key"),
                    "must be non-empty and unique across sources".into(),
                ));
            }
            for d in &s.destinations {
                if !dest_ids.contains(d.get_ref()) {
                    return Err(invalid(
                        d.span(),
                        &field("destinations"),
                        format!("unknown destination `{}`", d.get_ref()),
                    ));
                }
                let dest = destinations.iter().find(|x| &x.id == d.get_ref());
                if let Some(dest) = dest
                    && dest.workspace != s.workspace
                {
                    return Err(invalid(
                        d.span(),
                        &field("destinations"),
                        format!(
                            "destination `{}` belongs to workspace `{}`, not `{}`",
                            dest.id, dest.workspace, s.workspace
                        ),
                    ));
                }
            }
            sources.push(SourceConfig {
                id: s.id.into_inner(),
                workspace: s.workspace,
                write_key: s.write_key.into_inner(),
                destinations: s
                    .destinations
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
            });
        }

        Ok(Config {
            path: None,
            server: raw.server,
            sources,
            destinations,
            admin: admin::parse(raw.admin, text, name)?,
        })
    }

    fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            self.server.database_url = Some(url);
        }
    }
}

/// Ids appear in SQL views, URLs and logs: keep them to a safe alphabet.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn id_rule(id: &str) -> String {
    format!("`{id}` is not a valid id: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'")
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests;
