//! Typed configuration: defaults → `sluice.toml` → environment (`DATABASE_URL`, `SLUICE_LISTEN`).
//!
//! `load` either returns a config that is internally consistent (every source names existing
//! destinations, ids are unique, retry policies are sane) or a [`ConfigError`] naming the file,
//! the line and the field at fault. Relative paths are resolved against the config file's folder.
//!
//! - `server`: `[server]`, the process's settings and their defaults.
//! - `catalog`: `[[source]]` and `[[destination]]`, validated table by table.
//! - `admin`: `[admin]`, the admin API's listener and tokens.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod admin;
mod catalog;
mod server;

pub use admin::{AdminConfig, AdminToken, TokenScope, TokenSource};
pub use catalog::{DestinationConfig, SourceConfig};
pub use server::{DatasetConfig, ServerConfig};
pub(crate) use sluice_core::ids::valid_id;

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

/// The file as written, with spans kept for the fields that cross-reference each other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    source: Vec<Spanned<catalog::RawSource>>,
    #[serde(default)]
    destination: Vec<Spanned<catalog::RawDestination>>,
    #[serde(default)]
    admin: Option<admin::RawAdmin>,
}

/// Turns a span of the config text into the file and line an error names.
pub(crate) struct Locator<'a> {
    text: &'a str,
    name: &'a str,
}

impl Locator<'_> {
    pub(crate) fn invalid(&self, span: Range<usize>, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.name.to_string(),
            line: line_of(self.text, span.start),
            field: field.to_string(),
            message,
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.display().to_string();
        let mut config = Config::parse(&text, &name)?;
        config.path = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.read_admin_tokens(base, &name)?;
        config.apply_env();
        Ok(config)
    }

    /// Parses and validates config text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw = read_toml(text, name)?;
        let at = Locator { text, name };
        let destinations = catalog::destinations(raw.destination, &at)?;
        let sources = catalog::sources(raw.source, &destinations, &at)?;
        let admin = admin::parse(raw.admin, text, name)?;
        Ok(Config {
            path: None,
            server: raw.server,
            sources,
            destinations,
            admin,
        })
    }

    /// Relative folders are relative to the config file's folder (`base`).
    fn resolve_paths(&mut self, base: &Path) {
        let server = &mut self.server;
        server.plugins_dir = base.join(&server.plugins_dir);
        server.data_dir = base.join(&server.data_dir);
        server.plugin_cache_dir = server.plugin_cache_dir.take().map(|d| base.join(d));
        server.secrets_key_file = server.secrets_key_file.take().map(|f| base.join(f));
        for f in &mut server.secrets_old_key_files {
            *f = base.join(&*f);
        }
    }

    /// Reads the admin tokens kept in files, and warns about secrets written in the config.
    fn read_admin_tokens(&mut self, base: &Path, name: &str) -> Result<(), ConfigError> {
        let Some(admin) = &mut self.admin else {
            return Ok(());
        };
        admin.read_token_files(base, name)?;
        for t in admin
            .tokens
            .iter()
            .filter(|t| t.source == TokenSource::Inline)
        {
            tracing::warn!(token = %t.name, "admin token secret written in the config file; prefer token_env or token_file");
        }
        Ok(())
    }

    fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            self.server.database_url = Some(url);
        }
    }
}

/// The TOML syntax and shape; a problem here is reported with toml's own line and column.
fn read_toml(text: &str, name: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: name.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests;
