//! The scrubber and URL redaction, on the texts they meet: echoed requests, refusals quoting
//! a config, truncated error bodies.

use serde_json::json;

use super::*;

fn paths(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[test]
fn redact_config_masks_the_secret_paths_only() {
    let config = json!({
        "url": "https://x.example/in",
        "api_key": "k-123456",
        "headers": {"Authorization": "Bearer abc", "X-Other": "keep"},
        "nested": {"list": ["a", "b"]},
    });
    let secrets = paths(&["api_key", "headers.Authorization", "nested", "absent.path"]);
    let redacted = redact_config(&config, &secrets);
    assert_eq!(
        redacted,
        json!({
            "url": "https://x.example/in",
            "api_key": "***",
            "headers": {"Authorization": "***", "X-Other": "keep"},
            "nested": "***",
        })
    );
    assert_eq!(config["api_key"], "k-123456", "the original is untouched");
}

#[test]
fn the_scrubber_masks_every_occurrence_of_every_secret_value() {
    let config = json!({"secret": "S3CRET-value", "headers": {"Authorization": "Bearer tok-42"}, "pin": 12345, "short": "ab"});
    let scrubber = Scrubber::new(
        &config,
        &paths(&["secret", "headers.Authorization", "pin", "short"]),
    );
    assert_eq!(
        scrubber.scrub("bad S3CRET-value (S3CRET-value) with Bearer tok-42 and 12345; ab stays"),
        "bad *** (***) with *** and ***; ab stays"
    );
    assert_eq!(
        Scrubber::from_json("not json", &paths(&["secret"])).scrub("S3CRET"),
        "S3CRET"
    );
}

#[test]
fn urls_lose_user_info_query_and_fragment() {
    assert_eq!(
        redact_url("https://user:pw@hooks.example/in?token=URLTOKEN&x=1"),
        "https://***@hooks.example/in?***"
    );
    assert_eq!(
        redact_url("http://127.0.0.1:9/hook#frag"),
        "http://127.0.0.1:9/hook#***"
    );
    assert_eq!(redact_url("http://h?t=1"), "http://h?***");
    assert_eq!(redact_url("http://h/plain"), "http://h/plain");
    assert_eq!(
        redact_urls(
            "error sending request for url (HTTP://127.0.0.1:9/hook?token=URLTOKEN): refused; see \"https://a@b/c\""
        ),
        "error sending request for url (HTTP://127.0.0.1:9/hook?*** refused; see \"https://***@b/c\""
    );
    assert!(matches!(redact_urls("no urls here"), Cow::Borrowed(_)));
    let nested = redact_urls("http://x/?next=https://y/?token=T");
    assert!(!nested.contains("token=T"), "{nested}");
}

#[test]
fn urls_of_any_scheme_lose_their_credentials() {
    assert_eq!(
        redact_urls(r#"url: got "ftp://user:PASSW0RD@127.0.0.1/x?token=T" (1+ftp://a@b)"#),
        r#"url: got "ftp://***@127.0.0.1/x?***" (1+ftp://***@b)"#
    );
    assert_eq!(
        redact_urls("postgres://sluice:pw@db/x and svn+ssh://u@h/r"),
        "postgres://***@db/x and svn+ssh://***@h/r"
    );
    assert!(matches!(redact_urls("a :// b, 9://x"), Cow::Borrowed(_)));
}

const URL: &str =
    "http://user:PASSW0RD@127.0.0.1:9/hook?token=SECRETTOKEN123&api_key=APIKEYVALUE99";

#[test]
fn url_credentials_anywhere_in_the_config_are_masked_where_a_receiver_echoes_them() {
    let config = json!({
        "url": URL,
        "more": {"fallbacks": ["see https://h.example/in?key=NESTEDKEY1#FRAGMENT9"]},
        "n": 5,
    });
    let scrubber = Scrubber::new(&config, &[]);
    // A 500 that echoes the request: its path has no scheme for `redact_urls` to spot.
    assert_eq!(
        scrubber.scrub(
            r#"HTTP 500: {"echo_url": "/hook?token=SECRETTOKEN123&api_key=APIKEYVALUE99", "pw": "PASSW0RD"}"#
        ),
        r#"HTTP 500: {"echo_url": "/hook?token=***&api_key=***", "pw": "***"}"#
    );
    assert_eq!(
        scrubber.scrub("user said NESTEDKEY1 at FRAGMENT9"),
        "*** said *** at ***"
    );
    // What the config names, and nothing else.
    assert_eq!(
        scrubber.scrub("/hook?token=other-value"),
        "/hook?token=other-value"
    );
}

#[test]
fn a_debug_print_of_a_scrubber_shows_no_value() {
    let scrubber = Scrubber::new(&json!({ "url": URL }), &[]);
    let printed = format!("{scrubber:?}");
    assert!(!printed.contains("SECRETTOKEN123"), "{printed}");
}

#[test]
fn values_shorter_than_the_minimum_are_left_in_the_text() {
    let config = json!({"url": "https://a:b@h/x?x=1&id=abc&flag&long=LONGVALUE"});
    let scrubber = Scrubber::new(&config, &[]);
    assert_eq!(
        scrubber.scrub("a b 1 abc flag LONGVALUE"),
        "a b 1 abc *** ***"
    );
}

#[test]
fn percent_encoded_and_decoded_spellings_are_masked() {
    let config = json!({
        "url": "https://us%40er:caf%C3%A9-pass@h/x?token=s%2Fecret+val&q=quo\"ted",
    });
    let scrubber = Scrubber::new(&config, &[]);
    for (text, expected) in [
        ("token=s%2Fecret+val", "token=***"),
        ("token=s/ecret+val", "token=***"),
        ("token: s/ecret val", "token: ***"),
        ("token=s%2Fecret%20val", "token=***"),
        ("login us@er / café-pass", "login *** / ***"),
        ("login us%40er / caf%C3%A9-pass", "login *** / ***"),
        // As the host sent it: WHATWG parsing encodes the quote.
        ("q=quo%22ted", "q=***"),
        (r#"q=quo"ted"#, "q=***"),
    ] {
        assert_eq!(scrubber.scrub(text), expected, "{text}");
    }
}

#[test]
fn a_secret_cut_off_at_the_end_of_a_text_is_masked() {
    let scrubber = Scrubber::new(&json!({ "url": URL }), &[]);
    // The SDK keeps the first KB of an error body: the cut can fall inside a token.
    assert_eq!(
        scrubber.scrub("HTTP 500: /hook?token=SECRETTOK"),
        "HTTP 500: /hook?token=***"
    );
    assert_eq!(scrubber.scrub("ends in SECR"), "ends in ***");
    assert_eq!(
        scrubber.scrub("ends in SEC"),
        "ends in SEC",
        "shorter than the minimum"
    );
    assert_eq!(
        scrubber.scrub("SECRETTOK in the middle"),
        "SECRETTOK in the middle",
        "only a text's end is a cut"
    );
}

#[test]
fn a_refused_config_quoting_its_url_shows_no_credential() {
    let url = "ftp://user:PASSW0RD@127.0.0.1/x?token=SECRETTOKEN123";
    let scrubber = Scrubber::new(&json!({ "url": url, "secret": "s" }), &[]);
    let message =
        format!("url: must start with http:// or https://, got {url:?}; or was it {url} ?");
    let scrubbed = scrubber.scrub(&message);
    for needle in ["PASSW0RD", "SECRETTOKEN123"] {
        assert!(!scrubbed.contains(needle), "{scrubbed}");
    }
    assert!(
        scrubbed.starts_with("url: must start with http:// or https://, got \"ftp://***@"),
        "{scrubbed}"
    );
}

#[test]
fn declared_secrets_and_url_credentials_are_masked_together_longest_first() {
    let config = json!({
        "url": "https://h/x?token=TOKEN-1",
        "secret": "TOKEN-1-and-more",
    });
    let scrubber = Scrubber::new(&config, &paths(&["secret"]));
    assert_eq!(scrubber.scrub("TOKEN-1-and-more, TOKEN-1"), "***, ***");
}
