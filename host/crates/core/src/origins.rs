//! [`AllowedOrigin`]: a browser origin a source accepts events from (CORS), as an operator
//! writes it: an exact origin (`https://shop.example`, `http://localhost:3000`), a pattern for
//! its subdomains (`*.example.com`, any scheme, or `https://*.example.com`), or `*` for any
//! origin. Origins compare as browsers send them: scheme, host and port, lower case, no path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllowedOrigin {
    /// `*`.
    Any,
    /// `scheme://host[:port]`, lower case.
    Exact(String),
    /// `*.suffix` (any scheme) or `scheme://*.suffix`: hosts strictly below `suffix`, any port.
    Subdomains {
        scheme: Option<String>,
        suffix: String,
    },
}

/// Why an origin pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {why} (write `https://shop.example`, `*.example.com` or `*`)")]
pub struct InvalidOrigin {
    pub text: String,
    pub why: &'static str,
}

impl AllowedOrigin {
    pub fn parse(text: &str) -> Result<AllowedOrigin, InvalidOrigin> {
        let bad = |why| InvalidOrigin {
            text: text.to_string(),
            why,
        };
        let t = text.trim().to_ascii_lowercase();
        if t == "*" {
            return Ok(AllowedOrigin::Any);
        }
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) if s == "http" || s == "https" => (Some(s.to_string()), r),
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => (None, t.as_str()),
        };
        if rest.is_empty() {
            return Err(bad("no host"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("an origin has no path, query or fragment"));
        }
        if let Some(suffix) = rest.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') || suffix.contains(':') {
                return Err(bad("a pattern is `*.` followed by a domain, with no port"));
            }
            return Ok(AllowedOrigin::Subdomains {
                scheme,
                suffix: suffix.to_string(),
            });
        }
        if rest.contains('*') {
            return Err(bad(
                "`*` may only stand alone or start a pattern (`*.example.com`)",
            ));
        }
        match scheme {
            Some(s) => Ok(AllowedOrigin::Exact(format!("{s}://{rest}"))),
            None => Err(bad("an exact origin needs its scheme")),
        }
    }

    /// Whether a request's `Origin` header value is allowed.
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            AllowedOrigin::Any => true,
            AllowedOrigin::Exact(o) => *o == origin,
            AllowedOrigin::Subdomains { scheme, suffix } => {
                let Some((s, rest)) = origin.split_once("://") else {
                    return false;
                };
                if scheme.as_deref().is_some_and(|want| want != s) {
                    return false;
                }
                let host = rest.rsplit_once(':').map_or(rest, |(h, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) {
                        h
                    } else {
                        rest
                    }
                });
                host.strip_suffix(suffix.as_str())
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
        }
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedOrigin::Any => f.write_str("*"),
            AllowedOrigin::Exact(o) => f.write_str(o),
            AllowedOrigin::Subdomains {
                scheme: Some(s),
                suffix,
            } => write!(f, "{s}://*.{suffix}"),
            AllowedOrigin::Subdomains {
                scheme: None,
                suffix,
            } => write!(f, "*.{suffix}"),
        }
    }
}

impl Serialize for AllowedOrigin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowedOrigin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AllowedOrigin::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(pattern: &str, origin: &str) -> bool {
        AllowedOrigin::parse(pattern).unwrap().matches(origin)
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        assert!(allowed("https://shop.example", "https://shop.example"));
        assert!(allowed("https://Shop.Example", "https://shop.example"));
        assert!(!allowed("https://shop.example", "http://shop.example"));
        assert!(!allowed(
            "https://shop.example",
            "https://shop.example:8443"
        ));
        assert!(allowed("http://localhost:3000", "http://localhost:3000"));
        assert!(!allowed("https://shop.example", "https://evilshop.example"));
    }

    #[test]
    fn patterns_match_subdomains_only() {
        assert!(allowed("*.example.com", "https://shop.example.com"));
        assert!(allowed("*.example.com", "http://a.b.example.com:8080"));
        assert!(!allowed("*.example.com", "https://example.com"));
        assert!(!allowed("*.example.com", "https://evilexample.com"));
        assert!(!allowed("*.example.com", "https://example.com.evil.net"));
        assert!(allowed("https://*.example.com", "https://shop.example.com"));
        assert!(!allowed("https://*.example.com", "http://shop.example.com"));
        assert!(allowed("*", "https://anything.example"));
        assert!(allowed("*", "null"));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, why) in [
            ("ftp://shop.example", "scheme"),
            ("https://shop.example/path", "path"),
            ("shop.example", "needs its scheme"),
            ("https://shop.*.example", "stand alone"),
            ("*.", "a pattern"),
            ("https://", "no host"),
        ] {
            let e = AllowedOrigin::parse(text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn written_as_read() {
        for text in [
            "*",
            "https://shop.example",
            "*.example.com",
            "https://*.example.com",
        ] {
            assert_eq!(AllowedOrigin::parse(text).unwrap().to_string(), text);
        }
    }
}
