//! `[admin]`: the admin HTTP API's listener and its bearer tokens.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:8081"          # absent: no admin API
//! [[admin.tokens]]
//! name = "ops"                       # shown in the audit log
//! scope = "operator"                 # or "read"
//! token_env = "SLUICE_OPS_TOKEN"     # or token_file = "ops.token", or token = "..." (discouraged)
//! ```
//!
//! Secrets from `token` and `token_env` are read when the config is parsed; `token_file` is
//! read by `Config::load` (relative to the config file's folder). A secret is never printed:
//! `Debug` of a token hides it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, line_of, valid_id};

/// Secrets shorter than this are refused: a bearer token must not be guessable.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<AdminToken>,
    /// A request taking longer gets 503.
    pub request_timeout: Duration,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Every GET.
    Read,
    /// Every GET, and retry, abort, replay, pause and resume.
    Operator,
}

/// Where a token's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Inline,
    Env(String),
    File(PathBuf),
}

#[derive(Clone)]
pub struct AdminToken {
    pub name: String,
    pub scope: TokenScope,
    pub source: TokenSource,
    /// The secret; `None` until a `token_file` is read by `Config::load`.
    pub secret: Option<String>,
    /// The line of the token's table, for messages.
    pub line: usize,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("source", &self.source)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    scope: Spanned<String>,
    #[serde(default)]
    token: Option<Spanned<String>>,
    #[serde(default)]
    token_env: Option<Spanned<String>>,
    #[serde(default)]
    token_file: Option<Spanned<PathBuf>>,
}

/// Validates `[admin]`; `None` when it has no `listen` (the API is off).
pub(super) fn parse(
    raw: Option<RawAdmin>,
    text: &str,
    name: &str,
) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let invalid =
        |span: std::ops::Range<usize>, field: String, message: String| ConfigError::Invalid {
            path: name.to_string(),
            line: line_of(text, span.start),
            field,
            message,
        };
    let Some(listen) = raw.listen else {
        return Ok(None);
    };
    if raw.tokens.is_empty() {
        return Err(ConfigError::Invalid {
            path: name.to_string(),
            line: 1,
            field: "admin.tokens".into(),
            message: "the admin API needs at least one [[admin.tokens]]".into(),
        });
    }
    let mut tokens: Vec<AdminToken> = Vec::new();
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let line = line_of(text, t.span().start);
        let t = t.into_inner();
        let field = |f: &str| format!("admin.tokens[{i}].{f}");
        if !valid_id(t.name.get_ref()) {
            return Err(invalid(
                t.name.span(),
                field("name"),
                "use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'".into(),
            ));
        }
        if tokens.iter().any(|x| &x.name == t.name.get_ref()) {
            return Err(invalid(
                t.name.span(),
                field("name"),
                format!("duplicate token name `{}`", t.name.get_ref()),
            ));
        }
        let scope = match t.scope.get_ref().as_str() {
            "read" => TokenScope::Read,
            "operator" => TokenScope::Operator,
            other => {
                return Err(invalid(
                    t.scope.span(),
                    field("scope"),
                    format!("`{other}` is not a scope: use \"read\" or \"operator\""),
                ));
            }
        };
        let (source, secret, span, which) = match (t.token, t.token_env, t.token_file) {
            (Some(s), None, None) => (
                TokenSource::Inline,
                Some(s.get_ref().clone()),
                s.span(),
                "token",
            ),
            (None, Some(var), None) => {
                let value = std::env::var(var.get_ref()).unwrap_or_default();
                if value.is_empty() {
                    return Err(invalid(
                        var.span(),
                        field("token_env"),
                        format!("environment variable `{}` is not set", var.get_ref()),
                    ));
                }
                (
                    TokenSource::Env(var.get_ref().clone()),
                    Some(value),
                    var.span(),
                    "token_env",
                )
            }
            (None, None, Some(path)) => (
                TokenSource::File(path.get_ref().clone()),
                None,
                path.span(),
                "token_file",
            ),
            _ => {
                return Err(invalid(
                    t.name.span(),
                    field("token"),
                    "give exactly one of token, token_env or token_file".into(),
                ));
            }
        };
        if let Some(s) = &secret {
            check_secret(s).map_err(|e| invalid(span.clone(), field(which), e.to_string()))?;
        }
        tokens.push(AdminToken {
            name: t.name.into_inner(),
            scope,
            source,
            secret,
            line,
        });
    }
    let config = AdminConfig {
        listen,
        tokens,
        request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(30)),
    };
    unique_secrets(&config, name)?;
    Ok(Some(config))
}

/// A token secret shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret must be at least {min} characters", min = MIN_SECRET_LEN)]
pub struct SecretTooShort;

fn check_secret(secret: &str) -> Result<(), SecretTooShort> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretTooShort);
    }
    Ok(())
}

fn unique_secrets(config: &AdminConfig, name: &str) -> Result<(), ConfigError> {
    for (i, t) in config.tokens.iter().enumerate() {
        let Some(s) = &t.secret else { continue };
        if config.tokens[..i]
            .iter()
            .any(|x| x.secret.as_ref() == Some(s))
        {
            return Err(ConfigError::Invalid {
                path: name.to_string(),
                line: t.line,
                field: format!("admin.tokens[{i}]"),
                message: "two tokens have the same secret".into(),
            });
        }
    }
    Ok(())
}

impl AdminConfig {
    /// Reads every `token_file` (relative to `base`). Called by `Config::load`.
    pub(super) fn read_token_files(&mut self, base: &Path, name: &str) -> Result<(), ConfigError> {
        for (i, t) in self.tokens.iter_mut().enumerate() {
            let TokenSource::File(path) = &mut t.source else {
                continue;
            };
            *path = base.join(&*path);
            let invalid = |message: String| ConfigError::Invalid {
                path: name.to_string(),
                line: t.line,
                field: format!("admin.tokens[{i}].token_file"),
                message,
            };
            let text = std::fs::read_to_string(&*path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let secret = text.trim().to_string();
            check_secret(&secret).map_err(|e| invalid(e.to_string()))?;
            t.secret = Some(secret);
        }
        unique_secrets(self, name)
    }
}
