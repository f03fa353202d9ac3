//! Outbound host allowlist: which URLs a plugin's HTTP requests may reach.
//!
//! A manifest's `allowed_hosts` entries are patterns, resolved once per destination:
//! - `*`: anything (for trusted plugins only);
//! - `api.example.com`, `api.example.com:8443`, `*.example.com`: host (any port unless given);
//! - `https://api.example.com[:port]`: scheme, host and port (the scheme's default port if none);
//! - a template `{{ config.FIELD }}` (dotted paths allowed) is replaced by the destination's
//!   config value first, so `"{{ config.url }}"` allows exactly the origin of the destination's
//!   `url`, like Spin's templated `allowed_outbound_hosts`. An entry whose field is missing
//!   allows nothing. A template must be the whole entry (a whole origin or host): spliced into
//!   a pattern (`https://{{ config.region }}.api.io`), a config value such as `evil.example/`
//!   would change which host the pattern names.
//!
//! Redirects are never followed by the host, so a response cannot lead a plugin elsewhere.

use url::Url;

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

/// An `allowed_hosts` entry that cannot be used; the text names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// `shown` is the resolved text, with any URL credentials redacted.
    #[error("allowed_hosts entry `{entry}` (`{shown}`) is not a host pattern")]
    NotAPattern { entry: String, shown: String },
    #[error(
        "allowed_hosts entry `{entry}`: a template must be the whole entry, like `{{{{ config.url }}}}` (the config value is the origin or host)"
    )]
    TemplateNotWhole { entry: String },
    #[error("allowed_hosts entry `{entry}`: one template per entry")]
    SeveralTemplates { entry: String },
    #[error("allowed_hosts entry `{entry}`: only `config.FIELD` templates are supported")]
    NotConfigTemplate { entry: String },
    #[error(
        "allowed_hosts entry `{entry}`: `config.` must be followed by a field path like `url` or `endpoint.host`"
    )]
    NotAFieldPath { entry: String },
    #[error("allowed_hosts entry `{entry}`: config field `{path}` is {kind}, not a string")]
    NotAString {
        entry: String,
        path: String,
        /// `a number`, `a boolean`, `an array` or `an object`.
        kind: &'static str,
    },
}

/// The resolved allowlist of one destination.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
    /// The entries as resolved, for error messages.
    described: Vec<String>,
}

impl Allowlist {
    /// Resolves manifest entries against a destination's config. Errors name the bad entry.
    pub fn resolve(
        entries: &[String],
        config: &serde_json::Value,
    ) -> Result<Allowlist, AllowlistError> {
        let mut list = Allowlist::default();
        for entry in entries {
            let Some(text) = substitute(entry, config)? else {
                continue;
            };
            let pattern = parse_pattern(&text).ok_or_else(|| AllowlistError::NotAPattern {
                entry: entry.clone(),
                // The value came from the config: a URL there may carry credentials.
                shown: super::redact::Scrubber::new(config, &[]).scrub(&text),
            })?;
            // Described by what it allows (`http://127.0.0.1:9000`), never by the config
            // value it came from (`…/hook?token=…`).
            list.described.push(pattern.to_string());
            list.patterns.push(pattern);
        }
        Ok(list)
    }

    /// Whether a request to `url` is allowed.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.matches(url.scheme(), &host, url.port_or_known_default())
    }

    /// Whether a request to `uri` is allowed (the host's form of a URL, as requests carry it).
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let scheme = uri.scheme_str().unwrap_or_default();
        let port = uri.port_u16().or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        self.matches(scheme, &host, port)
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.patterns.iter().any(|p| {
            p.scheme.as_deref().is_none_or(|s| s == scheme)
                && p.port.is_none_or(|want| Some(want) == port)
                && match &p.host {
                    HostPattern::Any => true,
                    HostPattern::Exact(h) => *h == host,
                    HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
                }
        })
    }

    /// Human-readable list for denial messages.
    pub fn describe(&self) -> String {
        if self.described.is_empty() {
            "nothing".into()
        } else {
            self.described.join(", ")
        }
    }
}

/// The config path of an entry that is a template (`{{ config.a.b }}` → `a.b`), `None` for a
/// plain pattern. Any other use of `{{ }}` is an error naming the entry.
pub fn template_path(entry: &str) -> Result<Option<&str>, AllowlistError> {
    let trimmed = entry.trim();
    if !trimmed.contains("{{") && !trimmed.contains("}}") {
        return Ok(None);
    }
    let entry = || entry.to_string();
    let inner = trimmed
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .ok_or_else(|| AllowlistError::TemplateNotWhole { entry: entry() })?;
    if inner.contains("{{") || inner.contains("}}") {
        return Err(AllowlistError::SeveralTemplates { entry: entry() });
    }
    let path = inner
        .trim()
        .strip_prefix("config.")
        .ok_or_else(|| AllowlistError::NotConfigTemplate { entry: entry() })?;
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !path.split('.').all(plain) {
        return Err(AllowlistError::NotAFieldPath { entry: entry() });
    }
    Ok(Some(path))
}

/// The entry's pattern text: a template's config value; `None` when that field is absent.
fn substitute(entry: &str, config: &serde_json::Value) -> Result<Option<String>, AllowlistError> {
    let Some(path) = template_path(entry)? else {
        return Ok(Some(entry.to_string()));
    };
    let mut value = config;
    for part in path.split('.') {
        match value.get(part) {
            Some(v) => value = v,
            None => return Ok(None),
        }
    }
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
        serde_json::Value::Null | serde_json::Value::String(_) => Ok(None),
        other => {
            let kind = match other {
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(AllowlistError::NotAString {
                entry: entry.to_string(),
                path: path.to_string(),
                kind,
            })
        }
    }
}

fn parse_pattern(text: &str) -> Option<Pattern> {
    let text = text.trim();
    if text == "*" {
        return Some(Pattern {
            scheme: None,
            host: HostPattern::Any,
            port: None,
        });
    }
    if text.contains("://") {
        let url = Url::parse(text).ok()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        return Some(Pattern {
            scheme: Some(url.scheme().to_string()),
            host: host_pattern(&host),
            port: url.port_or_known_default(),
        });
    }
    // host or host:port; parse through a dummy scheme to reuse the URL crate's host rules.
    let url = Url::parse(&format!(
        "sluice://{}",
        text.replace("*.", "wildcard-marker.")
    ))
    .ok()?;
    if url.path() != "" && url.path() != "/" {
        return None;
    }
    let host = url
        .host_str()?
        .replace("wildcard-marker.", "*.")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some(Pattern {
        scheme: None,
        host: host_pattern(&host),
        port: url.port(),
    })
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            HostPattern::Exact(h) => f.write_str(h)?,
            HostPattern::Suffix(s) => write!(f, "*{s}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

fn host_pattern(host: &str) -> HostPattern {
    match host.strip_prefix("*.") {
        Some(suffix) => HostPattern::Suffix(format!(".{suffix}")),
        None => HostPattern::Exact(host.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allows(entries: &[&str], config: serde_json::Value, url: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Allowlist::resolve(&entries, &config)
            .unwrap()
            .allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn config_template_allows_exactly_the_configured_origin() {
        let cfg = json!({"url": "http://127.0.0.1:9000/hook"});
        assert!(allows(
            &["{{ config.url }}"],
            cfg.clone(),
            "http://127.0.0.1:9000/other"
        ));
        assert!(!allows(
            &["{{ config.url }}"],
            cfg.clone(),
            "http://127.0.0.1:9001/hook"
        ));
        assert!(!allows(
            &["{{ config.url }}"],
            cfg.clone(),
            "https://127.0.0.1:9000/hook"
        ));
        assert!(!allows(
            &["{{ config.url }}"],
            cfg,
            "http://forbidden.example.invalid/"
        ));
    }

    #[test]
    fn missing_config_field_allows_nothing() {
        assert!(!allows(
            &["{{ config.url }}"],
            json!({}),
            "http://127.0.0.1/"
        ));
    }

    #[test]
    fn host_and_wildcard_patterns() {
        assert!(allows(
            &["api.example.com"],
            json!({}),
            "https://api.example.com/x"
        ));
        assert!(allows(
            &["api.example.com"],
            json!({}),
            "http://API.example.com:8080/x"
        ));
        assert!(!allows(
            &["api.example.com:443"],
            json!({}),
            "http://api.example.com/x"
        ));
        assert!(allows(
            &["*.example.com"],
            json!({}),
            "https://a.b.example.com/"
        ));
        assert!(!allows(
            &["*.example.com"],
            json!({}),
            "https://example.com/"
        ));
        assert!(!allows(
            &["*.example.com"],
            json!({}),
            "https://badexample.com/"
        ));
        assert!(allows(&["*"], json!({}), "http://anything:1/"));
        assert!(allows(
            &["{{ config.endpoint.host }}"],
            json!({"endpoint": {"host": "eu.api.io"}}),
            "https://eu.api.io/v1"
        ));
    }

    #[test]
    fn templates_must_be_whole_entries() {
        assert_eq!(template_path("{{ config.url }}"), Ok(Some("url")));
        assert_eq!(template_path(" {{config.a.b_c}} "), Ok(Some("a.b_c")));
        assert_eq!(template_path("api.example.com"), Ok(None));
        for (bad, why) in [
            ("https://{{ config.region }}.api.io", "whole entry"),
            ("{{ config.url }}/path", "whole entry"),
            ("{{ config.url", "whole entry"),
            ("config.url }}", "whole entry"),
            ("{{ config.a }}{{ config.b }}", "one template"),
            ("{{ env.HOME }}", "only `config.FIELD`"),
            ("{{ config. }}", "field path"),
            ("{{ config.a..b }}", "field path"),
            ("{{ config.a b }}", "field path"),
        ] {
            let err = template_path(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!("allowed_hosts entry `{bad}`")) && err.contains(why),
                "{bad}: {err}"
            );
        }
        let err = Allowlist::resolve(
            &["https://{{ config.region }}.api.io".into()],
            &json!({"region": "evil.example/"}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, AllowlistError::TemplateNotWhole { entry } if entry == "https://{{ config.region }}.api.io"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "allowed_hosts entry `https://{{ config.region }}.api.io`: a template must be the whole entry, like `{{ config.url }}` (the config value is the origin or host)"
        );
    }

    #[test]
    fn the_description_names_origins_not_config_values() {
        let list = Allowlist::resolve(
            &[
                "{{ config.url }}".into(),
                "*.example.com".into(),
                "api.io:8443".into(),
            ],
            &json!({"url": "http://user:pw@127.0.0.1:9000/hook?token=URLTOKEN"}),
        )
        .unwrap();
        assert_eq!(
            list.describe(),
            "http://127.0.0.1:9000, *.example.com, api.io:8443"
        );
    }

    #[test]
    fn non_string_template_value_is_an_error() {
        let err = Allowlist::resolve(&["{{ config.url }}".into()], &json!({"url": 5})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed_hosts entry `{{ config.url }}`: config field `url` is a number, not a string"
        );
    }

    #[test]
    fn a_bad_pattern_names_the_entry() {
        let err = Allowlist::resolve(&["a/b".into()], &json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed_hosts entry `a/b` (`a/b`) is not a host pattern"
        );
    }
}
