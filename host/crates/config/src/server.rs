//! `[server]`: the process's own settings (listeners, folders, database, lanes, ingest limits,
//! datasets), each with its default. Sizes are written as people write them (`32MiB`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

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
    /// Memory for the dedup keys of the window, which ingest probes there; past it, keys are
    /// recorded one by one in PostgreSQL (slower ingest, same dedup).
    #[serde(default = "default_dedup_memory", deserialize_with = "size")]
    pub dedup_memory: u64,
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
    /// Ingest transactions that run at once (group commit per writer; a workspace always goes
    /// to the same writer, so its ids stay in commit order). 1 is one transaction at a time.
    #[serde(default = "default_ingest_writers")]
    pub ingest_writers: usize,
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
    /// Proxies in front of ingest whose `X-Forwarded-For` names the client (for the
    /// per-client rate limits of sources); from any other peer the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
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
    /// The key destination configs are sealed with in the store (32 bytes, base64; every host
    /// of a database needs the same). `SLUICE_SECRETS_KEY` wins over it. Neither: the file
    /// `secrets.key` in `data_dir`, made on first start (docs/catalog.md).
    #[serde(default)]
    pub secrets_key_file: Option<PathBuf>,
    /// Keys configs may still be sealed with (a rotation in progress): read, never written.
    #[serde(default)]
    pub secrets_old_key_files: Vec<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            plugins_dir: default_plugins_dir(),
            data_dir: default_data_dir(),
            plugin_cache_dir: None,
            secrets_key_file: None,
            secrets_old_key_files: Vec::new(),
            database_url: None,
            dedup_window: default_dedup_window(),
            dedup_memory: default_dedup_memory(),
            lease_ttl: default_lease_ttl(),
            lane_linger: default_linger(),
            lane_memory: default_lane_memory(),
            db_connections: default_db_connections(),
            ingest_writers: default_ingest_writers(),
            maintenance_interval: default_maintenance_interval(),
            datasets: DatasetConfig::default(),
            max_connections: None,
            header_timeout: default_header_timeout(),
            trusted_proxies: Vec::new(),
            ingest_memory: default_ingest_memory(),
            allowed_private_networks: Vec::new(),
            stats_interval: default_stats_interval(),
        }
    }
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
fn default_dedup_memory() -> u64 {
    256 << 20
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
fn default_ingest_writers() -> usize {
    4
}
fn default_maintenance_interval() -> Duration {
    Duration::from_secs(5)
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
    /// Keep closed datasets (delivered events included) this long, for backfill.
    #[serde(default, with = "humantime_serde")]
    pub retain: Duration,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            max_events: default_dataset_events(),
            max_bytes: default_dataset_bytes(),
            max_age: default_dataset_age(),
            compact_below: default_compact_below(),
            aborted_retention: default_aborted_retention(),
            retain: Duration::ZERO,
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
            retain: self.retain,
        }
    }
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
