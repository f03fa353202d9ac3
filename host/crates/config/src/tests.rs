use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"

[[source]]
id = "web"
workspace = "acme"
write_key = "wk_acme_web"
destinations = ["hook"]

[[destination]]
id = "hook"
workspace = "acme"
plugin = "webhook"
config = { url = "http://127.0.0.1:9000/hook", secret = "whsec_test" }
retry = { min_backoff = "10s", max_backoff = "5m", max_attempts = 3, window = "3h" }
"#;

#[test]
fn parses_the_documented_shape() {
    let c = Config::parse(GOOD, "sluice.toml").unwrap();
    assert_eq!(c.sources[0].destinations, vec!["hook"]);
    assert_eq!(
        c.destinations[0].config["url"],
        "http://127.0.0.1:9000/hook"
    );
    assert_eq!(
        c.destinations[0].retry.max_backoff,
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        c.destinations[0].retry.window,
        Some(Duration::from_secs(3 * 3600))
    );
}

#[test]
fn unknown_destination_names_file_line_and_field() {
    let text = GOOD.replace(r#"destinations = ["hook"]"#, r#"destinations = ["hok"]"#);
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "sluice.toml:9: source[0].destinations: unknown destination `hok`"
    );
}

#[test]
fn allowed_origins_are_read_and_a_bad_one_names_file_line_and_field() {
    let with = |origins: &str| {
        GOOD.replace(
            r#"destinations = ["hook"]"#,
            &format!("destinations = [\"hook\"]\nallowed_origins = {origins}"),
        )
    };
    let c = Config::parse(
        &with(r#"["https://shop.example", "*.example.com"]"#),
        "sluice.toml",
    )
    .unwrap();
    let settings = c.sources[0].settings();
    assert!(settings.allows_origin("https://shop.example"));
    assert!(settings.allows_origin("https://a.example.com"));
    assert!(!settings.allows_origin("https://evil.example"));
    let err = Config::parse(&with(r#"["https://shop.example/cart"]"#), "sluice.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("sluice.toml:10: source[0].allowed_origins: `https://shop.example/cart`: an origin has no path"),
        "{err}"
    );
}

#[test]
fn ids_are_validated_with_file_line_and_field() {
    let rule = "is not a valid id: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'";
    let err = |from: &str, to: &str| {
        let text = GOOD.replacen(from, to, 1);
        Config::parse(&text, "sluice.toml").unwrap_err().to_string()
    };
    assert_eq!(
        err(r#"id = "web""#, r#"id = "web site""#),
        format!("sluice.toml:6: source[0].id: `web site` {rule}")
    );
    assert_eq!(
        err(r#"workspace = "acme""#, r#"workspace = "ac/me""#),
        format!("sluice.toml:7: source[0].workspace: `ac/me` {rule}")
    );
    assert_eq!(
        err(r#"destinations = ["hook"]"#, r#"destinations = ["hook?"]"#),
        format!("sluice.toml:9: source[0].destinations: `hook?` {rule}")
    );
    assert_eq!(
        err(r#"id = "hook""#, r#"id = """#),
        format!("sluice.toml:12: destination[0].id: `` {rule}")
    );
    let long = "w".repeat(65);
    assert_eq!(
        err(
            "workspace = \"acme\"\nplugin",
            &format!("workspace = \"{long}\"\nplugin")
        ),
        format!("sluice.toml:13: destination[0].workspace: `{long}` {rule}")
    );
}

#[test]
fn duplicate_ids_and_foreign_workspaces_are_rejected() {
    let text = format!(
        "{GOOD}\n[[destination]]\nid = \"hook\"\nworkspace = \"acme\"\nplugin = \"webhook\"\n"
    );
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "sluice.toml:19: destination[1].id: duplicate destination id `hook`"
    );
    let text = GOOD.replace(
        "workspace = \"acme\"\nplugin",
        "workspace = \"other\"\nplugin",
    );
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "sluice.toml:9: source[0].destinations: destination `hook` belongs to workspace `other`, not `acme`"
    );
}

#[test]
fn unknown_field_is_a_parse_error_with_line() {
    let text = GOOD.replace("plugin = \"webhook\"", "plugn = \"webhook\"");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("sluice.toml: TOML parse error at line"),
        "{err}"
    );
    assert!(err.contains("plugn"), "{err}");
}

#[test]
fn bad_duration_is_reported() {
    let text = GOOD.replace("\"10s\"", "\"ten seconds\"");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("line 16"), "{err}");
}

#[test]
fn min_backoff_above_max_is_rejected() {
    let text = GOOD.replace("\"10s\"", "\"10m\"");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.contains("min_backoff must not exceed max_backoff"),
        "{err}"
    );
    assert!(
        err.starts_with("sluice.toml:16: destination[0].retry"),
        "{err}"
    );
}

#[test]
fn duplicate_write_key_is_rejected() {
    let text = format!(
        "{GOOD}\n[[source]]\nid = \"app\"\nworkspace = \"acme\"\nwrite_key = \"wk_acme_web\"\n"
    );
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("source[1].write_key"), "{err}");
}

#[test]
fn rate_limit_is_events_per_second_above_zero() {
    let text = format!("{GOOD}rate_limit = 250\n");
    let c = Config::parse(&text, "sluice.toml").unwrap();
    assert_eq!(c.destinations[0].rate_limit, Some(250.0));
    let text = format!("{GOOD}rate_limit = 0\n");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("sluice.toml:17: destination[0].rate_limit: must be"),
        "{err}"
    );
}

const ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:0"

[[admin.tokens]]
name = "viewer"
scope = "read"
token = "read-secret-0123456789"

[[admin.tokens]]
name = "ops"
scope = "operator"
token_file = "ops.token"
"#;

#[test]
fn admin_tokens_parse_and_files_are_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops.token"), "operator-secret-0123456789\n").unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, format!("{GOOD}{ADMIN}")).unwrap();
    let c = Config::load(&path).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.tokens.len(), 2);
    assert_eq!(admin.tokens[0].scope, TokenScope::Read);
    assert_eq!(
        admin.tokens[1].secret.as_deref(),
        Some("operator-secret-0123456789")
    );
    assert!(!format!("{:?}", admin.tokens[1]).contains("operator-secret"));
}

#[test]
fn admin_is_off_without_listen() {
    let c = Config::parse(GOOD, "sluice.toml").unwrap();
    assert!(c.admin.is_none());
}

#[test]
fn admin_token_errors_name_file_line_and_field() {
    let text = format!("{GOOD}{ADMIN}").replace("scope = \"read\"", "scope = \"admin\"");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("sluice.toml:23: admin.tokens[0].scope: `admin` is not a scope"),
        "{err}"
    );
    let text = format!("{GOOD}{ADMIN}").replace("\"read-secret-0123456789\"", "\"short\"");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("sluice.toml:24: admin.tokens[0].token: the secret must be"),
        "{err}"
    );
    let text = format!("{GOOD}{ADMIN}").replace(
        "token = \"read-secret-0123456789\"",
        "token_env = \"SLUICE_TEST_SURELY_UNSET_VARIABLE\"",
    );
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("sluice.toml:24: admin.tokens[0].token_env: environment variable"),
        "{err}"
    );
}

#[test]
fn a_destination_filter_parses_inline_or_as_a_table() {
    let text = format!(
        "{GOOD}filter = {{ deny_types = [\"identify\"], deny_events = [\"Secret Event\"] }}\n"
    );
    let c = Config::parse(&text, "sluice.toml").unwrap();
    let f = &c.destinations[0].filter;
    assert_eq!(f.deny_types, vec!["identify"]);
    assert_eq!(f.deny_events, vec!["Secret Event"]);
    let text = format!("{GOOD}\n[destination.filter]\nallow_events = [\"Signed Up\"]\n");
    let c = Config::parse(&text, "sluice.toml").unwrap();
    assert_eq!(c.destinations[0].filter.allow_events, vec!["Signed Up"]);
    assert!(
        Config::parse(GOOD, "sluice.toml").unwrap().destinations[0]
            .filter
            .is_empty()
    );
}

#[test]
fn filter_errors_name_file_line_and_field() {
    // A bad entry is reported on its own line.
    let text = format!(
        "{GOOD}\n[destination.filter]\ndeny_types = [\n  \"identify\",\n  \"idnetify\",\n]\n"
    );
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "sluice.toml:21: destination[0].filter.deny_types: `idnetify` is not an event type"
        ),
        "{err}"
    );
    let text = format!("{GOOD}filter = {{ allow_events = [\"A\"], deny_events = [\"B\"] }}\n");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "sluice.toml:17: destination[0].filter.allow_events: set allow_events or deny_events, not both"
    );
    let text = format!("{GOOD}filter = {{ deny_type = [\"identify\"] }}\n");
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("deny_type"), "{err}");
}
