//! The plugin manifest: `NAME.toml` beside `NAME.wasm` in the plugins directory.
//!
//! ```toml
//! name = "webhook"
//! version = "0.1.0"
//! allowed_hosts = ["{{ config.url }}"]   # see runtime::allowlist
//! batch_size = 50                         # jobs per claim / send call
//! max_in_flight = 4                       # concurrent batches per destination
//! ordered_batches = false                 # several jobs of one key per call, in order
//! secrets = ["secret", "headers.Authorization"]  # config paths scrubbed from logs and errors
//! [limits]
//! memory = "64MiB"                        # linear memory cap per instance
//! deadline = "2s"                         # guest time per call (host HTTP time excluded)
//! response_size = "4MiB"                  # largest HTTP response body a plugin may receive
//! http_timeout = "30s"                    # longest outbound request (timeout-ms is clamped)
//! [retry]                                 # defaults for destinations using this plugin
//! min_backoff = "10s"
//! [[config]]                              # optional: the config fields, for forms (`fields`)
//! name = "url"
//! type = "url"
//! required = true
//! ```
//! `sluice plugin build` writes it from the crate's `[package.metadata.sluice]` table.

mod fields;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use sluice_core::RetryOverrides;
use sluice_core::size::ByteSize;

pub use fields::{ConfigField, FieldType};

/// Default guest time per call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);
/// Default linear-memory cap per instance.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::mib(64);
/// Hard ceiling on any plugin's memory cap, whatever its manifest asks for.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Default cap on one outbound response body (the guest has to hold it in memory).
pub const DEFAULT_RESPONSE_SIZE: ByteSize = ByteSize::mib(4);
/// Hard ceiling on `limits.response_size`.
pub const MAX_RESPONSE_SIZE: u64 = 256 << 20;
/// Default (and, for a request's own `timeout-ms`, maximum) time for one outbound request.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Hard ceiling on `limits.http_timeout`.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// One call may carry several consecutive jobs of one ordering key, in order, for APIs
    /// that apply an array in order. Without it a call carries at most one job per key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered_batches: bool,
    /// Config field paths (`api_key`, `headers.Authorization`) whose values are secret: they
    /// reach `configure` unchanged but are scrubbed from logs, error texts and CLI output
    /// (see `runtime::redact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "is_default_retry")]
    pub retry: RetryOverrides,
    /// The config fields the plugin declares, in form order (`None`: it declares none, and a
    /// form offers the config as JSON). Last: TOML writes arrays of tables after the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<ConfigField>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// Largest response body an outbound request may return; larger ones fail the request.
    #[serde(default = "default_response_size")]
    pub response_size: ByteSize,
    /// Longest an outbound request may take; a request's own `timeout-ms` is clamped to it.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            deadline: DEFAULT_DEADLINE,
            response_size: DEFAULT_RESPONSE_SIZE,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }
}

fn default_version() -> String {
    "0.0.0".into()
}
fn default_batch_size() -> usize {
    50
}
fn default_max_in_flight() -> usize {
    4
}
fn default_memory() -> ByteSize {
    DEFAULT_MEMORY
}
fn default_deadline() -> Duration {
    DEFAULT_DEADLINE
}
fn default_response_size() -> ByteSize {
    DEFAULT_RESPONSE_SIZE
}
fn default_http_timeout() -> Duration {
    DEFAULT_HTTP_TIMEOUT
}
fn is_default_retry(r: &RetryOverrides) -> bool {
    *r == RetryOverrides::default()
}

/// A manifest file that cannot be used: the file, and what is wrong with it.
///
/// The text carries the underlying error's text, so `source()` does not return it too (a
/// reporter that prints the chain would say it twice).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub problem: ManifestProblem,
}

/// What is wrong with a manifest; the text names the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    /// Not TOML, or not a manifest: names the field (`limits.memory: …`) where serde knows
    /// it, and the line.
    #[error("{}{source}", path_prefix(.path))]
    Toml {
        path: String,
        /// Boxed: the TOML error is large, and every `Result` that carries a problem pays for
        /// its size.
        source: Box<toml::de::Error>,
    },
    #[error("name: must not be empty")]
    EmptyName,
    #[error("batch_size: must be between 1 and 10000")]
    BatchSize,
    #[error("max_in_flight: must be between 1 and 256")]
    MaxInFlight,
    #[error("limits.memory: must be between 1MiB and 4GiB")]
    MemoryRange,
    #[error("limits.deadline: must be greater than zero")]
    ZeroDeadline,
    #[error("limits.response_size: must be between 1KiB and 256MiB")]
    ResponseSizeRange,
    #[error("limits.http_timeout: must be greater than zero and at most 5m")]
    HttpTimeout,
    #[error("secrets: `{0}` is not a config field path like `api_key` or `headers.Authorization`")]
    SecretPath(String),
    /// A declared config field that a form could not be built from; the text names it.
    #[error("config: {0}")]
    ConfigField(String),
}

fn path_prefix(path: &str) -> String {
    match path {
        "" | "." => String::new(),
        p => format!("{p}: "),
    }
}

/// Deserializes manifest text, keeping the path of the field that failed.
fn parse_toml(text: &str) -> Result<Manifest, ManifestProblem> {
    let toml_error = |path: String, source| ManifestProblem::Toml {
        path,
        source: Box::new(source),
    };
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(String::new(), e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        toml_error(path, e.into_inner())
    })
}

impl Manifest {
    /// Parses and validates manifest text; errors name the file and the field.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let in_file = |problem| ManifestError {
            path: path.to_path_buf(),
            problem,
        };
        let manifest: Manifest = parse_toml(text).map_err(in_file)?;
        manifest.validate().map_err(in_file)?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestProblem> {
        if self.name.is_empty() {
            return Err(ManifestProblem::EmptyName);
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ManifestProblem::BatchSize);
        }
        if !(1..=256).contains(&self.max_in_flight) {
            return Err(ManifestProblem::MaxInFlight);
        }
        let memory = self.memory_bytes();
        if !((1 << 20)..=MAX_MEMORY).contains(&memory) {
            return Err(ManifestProblem::MemoryRange);
        }
        if self.limits.deadline.is_zero() {
            return Err(ManifestProblem::ZeroDeadline);
        }
        let response = self.response_size_bytes();
        if !((1 << 10)..=MAX_RESPONSE_SIZE).contains(&response) {
            return Err(ManifestProblem::ResponseSizeRange);
        }
        if self.limits.http_timeout.is_zero() || self.limits.http_timeout > MAX_HTTP_TIMEOUT {
            return Err(ManifestProblem::HttpTimeout);
        }
        for path in &self.secrets {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(ManifestProblem::SecretPath(path.clone()));
            }
        }
        if let Some(config) = &self.config {
            fields::validate(config).map_err(ManifestProblem::ConfigField)?;
        }
        Ok(())
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.limits.memory.bytes()
    }

    /// The response body cap in bytes.
    pub fn response_size_bytes(&self) -> u64 {
        self.limits.response_size.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(
            r#"
name = "webhook"
version = "0.1.0"
allowed_hosts = ["{{ config.url }}"]
batch_size = 20
[limits]
memory = "32MiB"
deadline = "500ms"
[retry]
max_attempts = 5
"#,
            Path::new("webhook.toml"),
        )
        .unwrap();
        assert_eq!(m.memory_bytes(), 32 << 20);
        assert_eq!(m.limits.deadline, Duration::from_millis(500));
        assert_eq!(m.max_in_flight, 4);
        assert_eq!(m.retry.max_attempts, Some(5));
    }

    #[test]
    fn errors_name_file_and_field() {
        let err =
            Manifest::parse("name = \"x\"\nbatch_size = 0\n", Path::new("p/x.toml")).unwrap_err();
        assert!(matches!(err.problem, ManifestProblem::BatchSize), "{err:?}");
        assert_eq!(
            err.to_string(),
            "p/x.toml: batch_size: must be between 1 and 10000"
        );
        let err = Manifest::parse(
            "name = \"x\"\n[limits]\nmemory = \"lots\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        // A size that does not parse names the file, the field and the line.
        assert!(err.starts_with("x.toml: limits.memory: "), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("`lots` is not a size like `64MiB`"), "{err}");
    }

    #[test]
    fn outbound_limits_and_secrets_default_and_are_validated() {
        let m = Manifest::parse("name = \"x\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(m.limits.response_size, DEFAULT_RESPONSE_SIZE);
        assert_eq!(m.limits.http_timeout, DEFAULT_HTTP_TIMEOUT);
        assert!(m.secrets.is_empty());
        let m = Manifest::parse(
            "name = \"x\"\nsecrets = [\"api_key\", \"headers.Authorization\"]\n[limits]\nresponse_size = \"64KiB\"\nhttp_timeout = \"5s\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(m.response_size_bytes(), 64 << 10);
        assert_eq!(m.limits.http_timeout, Duration::from_secs(5));
        assert_eq!(m.secrets, ["api_key", "headers.Authorization"]);
        for (text, field) in [
            (
                "[limits]\nresponse_size = \"1GiB\"\n",
                "limits.response_size:",
            ),
            (
                "[limits]\nresponse_size = \"big\"\n",
                "limits.response_size:",
            ),
            ("[limits]\nhttp_timeout = \"0s\"\n", "limits.http_timeout:"),
            ("[limits]\nhttp_timeout = \"1h\"\n", "limits.http_timeout:"),
            ("secrets = [\"headers.\"]\n", "secrets:"),
        ] {
            let err = Manifest::parse(&format!("name = \"x\"\n{text}"), Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("x.toml: {field}")),
                "{text}: {err}"
            );
        }
    }
}
