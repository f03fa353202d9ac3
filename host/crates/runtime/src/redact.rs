//! Keeping secrets out of logs, error texts and CLI output.
//!
//! Two kinds of secret, both found in a destination's config:
//! - config values a manifest marks secret (`secrets = ["api_key", "headers.Authorization"]`);
//! - credentials in any URL in the config (`https://user:pass@host/…?token=…#…`): the user name,
//!   the password, every query value and the fragment, since webhook URLs routinely carry
//!   tokens.
//!
//! The plugin's `configure` gets them unchanged. Any text the plugin hands back or causes
//! (failure messages, log lines, trap output, configure refusals, outbound errors) has every
//! occurrence of those values replaced by `***` before the host stores or prints it
//! ([`Scrubber`]). Matching the values, not URL syntax, is what catches a receiver that echoes
//! the request back (`HTTP 500: {"path": "/hook?token=…"}`): the path it quotes has no scheme
//! and no host. A value is also caught percent-decoded and percent-encoded, and when a
//! truncated text ends partway through it. On top of that, the user info, query string and
//! fragment of every URL in such text are masked ([`redact_urls`]), for URLs the config does
//! not name. An admin API shows configs through [`redact_config`].

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

/// What a redacted value or URL part is replaced by.
pub const MASK: &str = "***";

/// Secret values shorter than this are not scrubbed from free text: replacing every `ab` in a
/// message would make it unreadable, and a value that short protects nothing anyway. It is
/// also the shortest start of a secret masked at the end of a truncated text.
const MIN_SCRUBBED_LEN: usize = 4;

pub use sluice_core::catalog::redact_config;

/// What encoders of URL components leave alone (RFC 3986's unreserved characters): how
/// `encodeURIComponent`-style code and most HTTP servers print a value they re-encode.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The text values of `config` at the secret paths (every string leaf below a path that names
/// an object or array; numbers too, as written).
fn secret_values(config: &Value, secrets: &[String]) -> Vec<String> {
    fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
            Value::Null | Value::Bool(_) => {}
        }
    }
    let mut out = Vec::new();
    for path in secrets {
        let mut node = Some(config);
        for part in path.split('.') {
            node = node.and_then(|n| n.get(part));
        }
        if let Some(value) = node {
            leaves(value, &mut out);
        }
    }
    out
}

/// The credentials of every URL in every string of `config`, whatever its field: a URL's
/// field is the plugin's business, and a token is as secret in `endpoint` as in `url`.
fn url_credentials(config: &Value, out: &mut Vec<String>) {
    match config {
        Value::String(s) => {
            // A URL as free text ends it (at a quote, say), and as the whole word, since a
            // config value may well be a URL with a quote in its query.
            let words = s.split_whitespace().filter_map(|word| {
                let (start, _end) = url_spans(word).into_iter().next()?;
                Some(&word[start..])
            });
            let spans = url_spans(s).into_iter().map(|(start, end)| &s[start..end]);
            for url in spans.chain(words) {
                credentials_of(url, out);
                // As the host sends it: WHATWG parsing percent-encodes some characters (a
                // `"` in the query, non-ASCII in the password), and a receiver echoes that.
                if let Ok(parsed) = url::Url::parse(url) {
                    credentials_of(parsed.as_str(), out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| url_credentials(v, out)),
        Value::Object(map) => map.values().for_each(|v| url_credentials(v, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The user name, password, query values (a query item without `=` counts whole) and
/// fragment of one URL, as written in it.
fn credentials_of(url: &str, out: &mut Vec<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return;
    };
    let rest = &url[scheme_end..];
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if let Some((userinfo, _host)) = authority.rsplit_once('@') {
        match userinfo.split_once(':') {
            Some((user, password)) => out.extend([user.to_string(), password.to_string()]),
            None => out.push(userinfo.to_string()),
        }
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    if let Some((_path, query)) = before_fragment.split_once('?') {
        for item in query.split('&') {
            let value = item.split_once('=').map_or(item, |(_name, value)| value);
            out.push(value.to_string());
        }
    }
    out.extend(fragment.map(str::to_string));
}

/// The ways a receiver or a library may print `value`: as written, percent-decoded (and with
/// `+` read as a space, as form decoding reads a query), and each of those percent-encoded.
fn spellings(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    if let Ok(decoded) = percent_decode_str(value).decode_utf8() {
        out.push(decoded.into_owned());
    }
    if value.contains('+')
        && let Ok(decoded) = percent_decode_str(&value.replace('+', " ")).decode_utf8()
    {
        out.push(decoded.into_owned());
    }
    let encoded: Vec<String> = out
        .iter()
        .map(|v| utf8_percent_encode(v, COMPONENT).to_string())
        .collect();
    out.extend(encoded);
    out
}

/// Scrubs the secret values and URL credentials of one destination's config from text the
/// plugin produced or caused.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first, so that a secret containing another is masked whole.
    values: Vec<String>,
}

/// Says how many values it masks, never which: a debug print must not be the leak.
impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("values", &self.values.len())
            .finish()
    }
}

impl Scrubber {
    /// The scrubber for a destination's config under a manifest's `secrets`: those values,
    /// and the credentials of every URL in the config.
    pub fn new(config: &Value, secrets: &[String]) -> Scrubber {
        let mut found = secret_values(config, secrets);
        url_credentials(config, &mut found);
        let mut values: Vec<String> = found
            .iter()
            .flat_map(|v| spellings(v))
            .filter(|v| v.len() >= MIN_SCRUBBED_LEN)
            .collect();
        // Equal values end up side by side, so that `dedup` sees them.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Scrubber { values }
    }

    /// The same, from the config's JSON text (unparseable text has no secrets to find).
    pub fn from_json(config_json: &str, secrets: &[String]) -> Scrubber {
        match serde_json::from_str::<Value>(config_json) {
            Ok(config) => Scrubber::new(&config, secrets),
            Err(_) => Scrubber::default(),
        }
    }

    /// `text` with every secret value and every URL's credentials masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        if let Some(cut) = self.secret_cut_at_end(&out) {
            let mut text = out.into_owned();
            text.truncate(cut);
            text.push_str(MASK);
            out = Cow::Owned(text);
        }
        redact_urls(&out).into_owned()
    }

    /// Where the longest tail of `text` that is the start of a secret value (at least
    /// [`MIN_SCRUBBED_LEN`] bytes of it) begins. Texts get cut to a length (the SDK keeps the
    /// first KB of an error body, say), and the cut can fall inside an echoed secret.
    fn secret_cut_at_end(&self, text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        self.values
            .iter()
            .filter_map(|value| {
                let earliest = bytes.len().saturating_sub(value.len().saturating_sub(1));
                let latest = bytes.len().checked_sub(MIN_SCRUBBED_LEN)?;
                (earliest..=latest).find(|&at| value.as_bytes().starts_with(&bytes[at..]))
            })
            .min()
    }

    /// [`Scrubber::scrub`] in place.
    pub fn scrub_in_place(&self, text: &mut String) {
        let scrubbed = self.scrub(text);
        if scrubbed != *text {
            *text = scrubbed;
        }
    }
}

/// Where each URL in `text` starts and ends: a scheme (a letter, then letters, digits, `+`,
/// `-` or `.`) and `://`, up to whitespace, a quote, `<`, `>` or a backtick. A URL inside
/// another (`?next=https://…`) is part of the outer one.
fn url_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let is_scheme_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let separator = from + found;
        let mut start = separator;
        while start > from && is_scheme_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < separator && !bytes[start].is_ascii_alphabetic() {
            start += 1;
        }
        if start == separator {
            from = separator + 3;
            continue; // `://` with no scheme before it
        }
        let end = text[separator..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |n| separator + n);
        spans.push((start, end));
        from = end;
    }
    spans
}

/// `text` with the user info, query string and fragment of every URL in it (any scheme)
/// replaced by `***`: `https://u:p@h/x?token=t` becomes `https://***@h/x?***`.
///
/// Works on the text, not on a parsed URL, so that nothing that fails to parse slips through:
/// a URL runs until whitespace, a quote, `<`, `>` or a backtick.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    let spans = url_spans(text);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        out.push_str(&text[copied..start]);
        out.push_str(&redact_url(&text[start..end]));
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// One URL with its user info, query string and fragment masked.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match tail.find(['?', '#']) {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str(&tail[q..=q]);
            out.push_str(MASK);
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests;
