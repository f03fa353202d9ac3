//! The running config with its secrets hidden (`GET /api/v1/config`).
//!
//! Hidden: write keys, the database URL's password, admin token secrets (only their names,
//! scopes and where the secret comes from are shown), and in each destination's `config`
//! the fields its plugin's manifest declares secret (`secrets = [...]`, the same paths the
//! runtime scrubs from logs). On top of those, as a second line for a plugin that forgot to
//! declare one, every value whose key looks secret ([`SECRET_KEY_PARTS`]) and any password
//! inside a URL.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use sluice_config::{Config, TokenSource};
use sluice_runtime::manifest::{Manifest, ManifestError};
use sluice_runtime::redact::redact_config;

/// Why a plugin's declared secret fields are unknown (shown as a destination's
/// `secrets_error`).
///
/// The text carries the underlying error's text, so `source()` does not return it too (a
/// reporter that prints the chain would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ManifestError),
}

/// A plugin's declared secret fields, read from its manifest in the plugins directory (the
/// file the next hot reload would load), or why they cannot be read.
pub fn declared_secrets(plugins_dir: &Path, plugin: &str) -> Result<Vec<String>, SecretsError> {
    let path = plugins_dir.join(format!("{plugin}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|error| SecretsError::Read {
        path: path.clone(),
        error,
    })?;
    Ok(Manifest::parse(&text, &path)?.secrets)
}

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// A config key containing any of these (case-insensitively) holds a secret.
pub const SECRET_KEY_PARTS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "key",
    "authorization",
    "credential",
    "private",
];

/// The config as JSON, with every secret replaced by [`REDACTED`]; `secrets` gives each
/// plugin's declared secret fields (see [`declared_secrets`]).
pub fn redacted_config(
    config: &Config,
    secrets: impl Fn(&str) -> Result<Vec<String>, SecretsError>,
) -> Value {
    let mut server = serde_json::to_value(&config.server).unwrap_or(Value::Null);
    if let Some(url) = server.get_mut("database_url")
        && let Some(text) = url.as_str()
    {
        *url = Value::String(redact_url(text));
    }
    let sources: Vec<Value> = config
        .sources
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "workspace": s.workspace,
                "write_key": REDACTED,
                "destinations": s.destinations,
            })
        })
        .collect();
    let destinations: Vec<Value> = config
        .destinations
        .iter()
        .map(|d| {
            let declared = secrets(&d.plugin);
            let config = redact_config(&d.config, declared.as_deref().unwrap_or_default());
            json!({
                "id": d.id,
                "workspace": d.workspace,
                "plugin": d.plugin,
                "config": redact_value(&config),
                "secrets": declared.as_ref().ok(),
                "secrets_error": declared.as_ref().err().map(ToString::to_string),
                "retry": d.retry,
                "ordering": d.ordering,
                "max_concurrency": d.max_concurrency,
                "rate_limit": d.rate_limit,
                "allowed_private_networks": d.allowed_private_networks,
            })
        })
        .collect();
    let admin = config.admin.as_ref().map(|a| {
        json!({
            "listen": a.listen.to_string(),
            "request_timeout": humantime::format_duration(a.request_timeout).to_string(),
            "tokens": a.tokens.iter().map(|t| json!({
                "name": t.name,
                "scope": t.scope,
                "secret_from": match &t.source {
                    TokenSource::Inline => "config file".to_string(),
                    TokenSource::Env(var) => format!("environment variable {var}"),
                    TokenSource::File(path) => format!("file {}", path.display()),
                },
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "path": config.path.as_ref().map(|p| p.display().to_string()),
        "server": server,
        "sources": sources,
        "destinations": destinations,
        "admin": admin,
    })
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| key.contains(p))
}

/// Replaces the values of secret-looking keys, at any depth, and passwords in URLs.
pub fn redact_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact_value(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::String(s) if s.contains("://") => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// Hides a URL's password (userinfo, or a `password` query parameter).
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return text.to_string();
    };
    // Nothing to hide: the text as written (a parsed URL may print differently, e.g. with a
    // trailing `/`, and a client that sends a config back must not change it by accident).
    if url.password().is_none() && !url.query_pairs().any(|(k, _)| is_secret_key(&k)) {
        return text.to_string();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query_pairs().any(|(k, _)| is_secret_key(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_and_url_passwords_are_hidden_at_any_depth() {
        let v = json!({
            "url": "https://user:hunter2@example.com/hook?api_key=abc&x=1",
            "secret": "whsec_x",
            "headers": { "Authorization": "Bearer t", "X-Other": "ok" },
            "list": [{ "apiKey": "k" }],
            "retries": 3,
        });
        let r = redact_value(&v).to_string();
        for secret in ["hunter2", "whsec_x", "Bearer t", "\"k\"", "abc"] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
        }
        assert!(
            r.contains("\"X-Other\":\"ok\"") && r.contains("\"retries\":3"),
            "{r}"
        );
        assert_eq!(
            redact_url("postgres://sluice:pw@db/sluice"),
            "postgres://sluice:***@db/sluice"
        );
    }

    const CONFIG: &str = r#"
[[source]]
id = "web"
workspace = "acme"
write_key = "wk_acme_web"
destinations = ["batch", "other"]

[[destination]]
id = "batch"
workspace = "acme"
plugin = "http-batch"
config = { url = "https://example.com/in", headers = { X-Tenant = "tenant-signature-1" } }

[[destination]]
id = "other"
workspace = "acme"
plugin = "gone"
config = { url = "https://example.com/in", api_key = "key-2", note = "visible" }
"#;

    #[test]
    fn declared_secret_fields_are_hidden_whatever_their_names() {
        let config = Config::parse(CONFIG, "sluice.toml").expect("a valid config");
        let v = redacted_config(&config, |plugin| match plugin {
            "http-batch" => Ok(vec!["headers".into()]),
            _ => Err(SecretsError::Read {
                path: "gone.toml".into(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            }),
        });
        let text = v.to_string();
        // `X-Tenant` looks like nothing secret: only the manifest says it is.
        assert!(!text.contains("tenant-signature-1"), "{text}");
        assert_eq!(v["destinations"][0]["config"]["headers"], REDACTED);
        assert_eq!(v["destinations"][0]["secrets"], json!(["headers"]));
        // Without a readable manifest the key names still protect, and the reason is shown.
        assert!(!text.contains("key-2"), "{text}");
        assert_eq!(v["destinations"][1]["config"]["note"], "visible");
        assert_eq!(
            v["destinations"][1]["secrets_error"],
            "cannot read gone.toml: no such file"
        );
        assert_eq!(v["sources"][0]["write_key"], REDACTED);
    }

    #[test]
    fn declared_secrets_are_read_from_the_plugins_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("p.toml"),
            "name = \"p\"\nsecrets = [\"api_key\", \"headers.X-Sig\"]\n",
        )
        .expect("write");
        assert_eq!(
            declared_secrets(dir.path(), "p").expect("readable"),
            ["api_key", "headers.X-Sig"]
        );
        let missing = declared_secrets(dir.path(), "q").expect_err("no manifest");
        assert!(
            matches!(&missing, SecretsError::Read { path, .. } if path.ends_with("q.toml")),
            "{missing:?}"
        );
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
        std::fs::write(dir.path().join("bad.toml"), "name = \"\"\n").expect("write");
        let invalid = declared_secrets(dir.path(), "bad").expect_err("invalid manifest");
        assert!(matches!(invalid, SecretsError::Invalid(_)), "{invalid:?}");
        assert!(
            invalid
                .to_string()
                .ends_with("bad.toml: name: must not be empty"),
            "{invalid}"
        );
    }
}
