//! Outbound host allowlist: which URLs a plugin's HTTP requests may reach.
//!
//! A manifest's `allowed_hosts` entries are patterns, resolved once per destination:
//! - `*`: anything (for trusted plugins only);
//! - `api.example.com`, `api.example.com:8443`, `*.example.com`: host (any port unless given);
//! - `https://api.example.com[:port]`: scheme, host and port (the scheme's default port if none);
//! - templates `{{ config.FIELD }}` (dotted paths allowed) are replaced by the destination's
//!   config value first, so `"{{ config.url }}"` allows exactly the origin of the destination's
//!   `url`, like Spin's templated `allowed_outbound_hosts`. An entry whose field is missing
//!   allows nothing.
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

/// The resolved allowlist of one destination.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
    /// The entries as resolved, for error messages.
    described: Vec<String>,
}

impl Allowlist {
    /// Resolves manifest entries against a destination's config. Errors name the bad entry.
    pub fn resolve(entries: &[String], config: &serde_json::Value) -> Result<Allowlist, String> {
        let mut list = Allowlist::default();
        for entry in entries {
            let Some(text) = substitute(entry, config)? else {
                continue;
            };
            let pattern = parse_pattern(&text).ok_or_else(|| {
                format!("allowed_hosts entry `{entry}` (`{text}`) is not a host pattern")
            })?;
            list.patterns.push(pattern);
            list.described.push(text);
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

/// Replaces `{{ config.a.b }}` templates; `None` when a referenced field is absent.
fn substitute(entry: &str, config: &serde_json::Value) -> Result<Option<String>, String> {
    let mut out = String::new();
    let mut rest = entry;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("allowed_hosts entry `{entry}` has an unclosed `{{{{`"))?;
        let name = after[..end].trim();
        let path = name.strip_prefix("config.").ok_or_else(|| {
            format!("allowed_hosts entry `{entry}`: only `config.FIELD` templates are supported")
        })?;
        let mut value = config;
        for part in path.split('.') {
            match value.get(part) {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        match value {
            serde_json::Value::String(s) if !s.is_empty() => out.push_str(s),
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(_) => return Ok(None),
            other => {
                return Err(format!(
                    "allowed_hosts entry `{entry}`: config field `{path}` is {other}, not a string"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(Some(out))
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
            &["https://{{ config.region }}.api.io"],
            json!({"region": "eu"}),
            "https://eu.api.io/v1"
        ));
    }

    #[test]
    fn non_string_template_value_is_an_error() {
        let err = Allowlist::resolve(&["{{ config.url }}".into()], &json!({"url": 5})).unwrap_err();
        assert!(err.contains("not a string"), "{err}");
    }
}
