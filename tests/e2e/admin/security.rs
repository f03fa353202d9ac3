//! Security of the admin API and ingest: tokens and scopes, cross-site requests, secrets never
//! shown, filters that are data (never SQL or patterns), and write keys bound to their source.

use std::time::Duration;

use serde_json::json;

use super::*;

const HEADER_SECRET: &str = "hdr-secret-value-42";

const READS: &[&str] = &[
    "/api/openapi.json",
    "/api/v1/jobs",
    "/api/v1/jobs/acme/hook/1",
    "/api/v1/destinations",
    "/api/v1/destinations/acme/hook/stats",
    "/api/v1/destinations/acme/hook/blocked",
    "/api/v1/plugins",
    "/api/v1/catalog/plugins",
    "/api/v1/config",
    "/api/v1/audit",
    "/api/v1/whoami",
];

const MUTATIONS: &[&str] = &[
    "/api/v1/jobs/retry",
    "/api/v1/jobs/abort",
    "/api/v1/jobs/replay",
    "/api/v1/destinations/acme/hook/pause",
    "/api/v1/destinations/acme/hook/resume",
];

fn action_body() -> Value {
    json!({ "workspace": "acme", "destination": "hook", "all": true })
}

async fn start() -> (Sluice, Sink) {
    let sink = Sink::ok(SECRET);
    let extra = format!(r#"headers = {{ Authorization = "Bearer {HEADER_SECRET}" }}"#);
    let body = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, "").replace(
        &format!(r#"secret = "{SECRET}" }}"#),
        &format!(r#"secret = "{SECRET}", {extra} }}"#),
    );
    assert!(body.contains(HEADER_SECRET), "{body}");
    let sluice = Sluice::start(&format!("{body}{}", admin_section()));
    (sluice, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_bad_tokens_read_tokens_on_changes_and_foreign_origins() {
    let (sluice, _sink) = start().await;
    let anonymous = Api::new(&sluice, None);
    let wrong = Api::new(&sluice, Some("not-a-token-0123456789"));
    let read = Api::new(&sluice, Some(READ_TOKEN));
    for path in READS {
        for api in [&anonymous, &wrong] {
            let (status, body) = api.get(path).await;
            assert_eq!(status, 401, "GET {path}: {body}");
            assert!(body["error"].is_string(), "a JSON reason: {body}");
        }
        let (status, body) = read.get(path).await;
        assert!(
            status == 200 || status == 404,
            "GET {path} with a read token: {body}"
        );
    }
    for path in MUTATIONS {
        let (status, _) = anonymous.post(path, &action_body()).await;
        assert_eq!(status, 401, "POST {path} without a token");
        let (status, body) = read.post(path, &action_body()).await;
        assert_eq!(status, 403, "POST {path} with a read token: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    let audit = read.ok("/api/v1/audit", &[]).await;
    assert_eq!(audit["audit"], json!([]), "nothing was done");

    // Each token can learn its own name and scope (the page disables actions with it).
    let me = read.ok("/api/v1/whoami", &[]).await;
    assert_eq!(me, json!({ "name": "viewer", "scope": "read" }));
    let ops = Api::new(&sluice, Some(OPS_TOKEN));
    let me = ops.ok("/api/v1/whoami", &[]).await;
    assert_eq!(me, json!({ "name": "ops", "scope": "operator" }));

    // A page on another site cannot use the API, even with a token; the same origin can.
    let base = admin_url(&sluice);
    let foreign = client()
        .get(format!("{base}/api/v1/destinations"))
        .bearer_auth(OPS_TOKEN)
        .header("Origin", "http://evil.example");
    let (status, body) = send(foreign).await;
    assert_eq!(status, 403, "{body}");
    let own = client()
        .get(format!("{base}/api/v1/destinations"))
        .bearer_auth(OPS_TOKEN)
        .header("Origin", base.clone());
    assert_eq!(send(own).await.0, 200);

    // The OpenAPI document describes the endpoints.
    let doc = read.ok("/api/openapi.json", &[]).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/api/v1/jobs"]["get"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_hides_secrets_and_filters_are_data_not_sql_or_patterns() {
    let (sluice, sink) = start().await;
    let read = Api::new(&sluice, Some(READ_TOKEN));
    let ops = Api::new(&sluice, Some(OPS_TOKEN));

    let config = read.ok("/api/v1/config", &[]).await;
    let text = config.to_string();
    for secret in [WRITE_KEY, SECRET, HEADER_SECRET, READ_TOKEN, OPS_TOKEN] {
        assert!(!text.contains(secret), "{secret} shown in {text}");
    }
    assert_eq!(config["sources"][0]["write_key"], "***");
    assert_eq!(config["admin"]["tokens"][1]["name"], "ops");
    // The webhook plugin's manifest declares its secret fields; they are what is hidden.
    assert_eq!(
        config["destinations"][0]["secrets"],
        json!(["secret", "headers.Authorization"]),
        "{config}"
    );
    assert_eq!(config["destinations"][0]["config"]["secret"], "***");
    // The embedded database URL carries no password; any would be hidden.
    assert!(!text.contains("password="), "{text}");

    // Users whose keys are full of pattern and quoting characters.
    let nasty_user = r"50%_off\'";
    let mut batch = events(2, 4);
    batch.push(json!({ "type": "track", "userId": nasty_user, "event": "E",
                       "messageId": "nasty-1", "properties": { "seq": 0 } }));
    post_all(&sluice, &batch, 5).await;
    wait_until(Duration::from_secs(30), "deliveries", || async {
        (sink.accepted().len() >= 5).then_some(())
    })
    .await;

    let exact = read.ok("/api/v1/jobs", &[("user", nasty_user)]).await;
    assert_eq!(jobs(&exact).len(), 1, "{exact}");
    for pattern in ["%", "_", "50%", "user-_", "%\\%", ".*"] {
        let v = read.ok("/api/v1/jobs", &[("user", pattern)]).await;
        assert_eq!(jobs(&v).len(), 0, "`{pattern}` matched as a pattern: {v}");
    }
    let all = read.ok("/api/v1/jobs", &[]).await;
    assert_eq!(jobs(&all).len(), 5);

    let long = "x".repeat(5000);
    let nasty = [
        "'",
        "\"",
        "%",
        "_",
        "\\",
        "'; DROP TABLE events; --",
        "\u{0}",
        "a\u{0}b",
        "ü🦀",
        "\u{202e}evil",
        "%%",
        "$1",
        "\u{ffff}",
        long.as_str(),
        "",
        " ",
    ];
    let fields = [
        "workspace",
        "source",
        "destination",
        "user",
        "state",
        "error_code",
        "error",
        "since",
        "until",
        "cursor",
        "limit",
    ];
    for field in fields {
        for value in nasty {
            let (status, body) = read.get_q("/api/v1/jobs", &[(field, value)]).await;
            assert!(
                status == 200 || status == 400,
                "{field}={value:?} gave {status}: {body}"
            );
            assert!(
                body["jobs"].is_array() || body["error"].is_string(),
                "{body}"
            );
            if value.contains('\u{0}') && !value.is_empty() {
                assert_eq!(status, 400, "{field}={value:?}");
            }
        }
        let (status, body) = read.get_q("/api/v1/audit", &[(field, "'\u{0}%")]).await;
        assert!(
            status == 200 || status == 400,
            "audit {field}: {status} {body}"
        );
    }
    for value in nasty {
        for filter_field in ["user", "source", "error_code", "error", "since"] {
            let body = json!({ "workspace": "acme", "destination": "hook",
                               "filter": { filter_field: value } });
            for action in ["retry", "abort", "replay"] {
                let (status, answer) = ops.post(&format!("/api/v1/jobs/{action}"), &body).await;
                assert!(
                    status == 200 || status == 400,
                    "{action} {filter_field}={value:?}: {status} {answer}"
                );
            }
        }
        let path = format!("/api/v1/jobs/{}/hook/1", urlencode(value));
        let (status, _) = read.get(&path).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    // Nothing matched, nothing changed, and the log is intact.
    let pool = db(&sluice).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 5);
    let audit = read.ok("/api/v1/audit", &[("limit", "1000")]).await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["jobs"] == 0)
    );
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_key_writes_only_to_its_own_source() {
    let sink_a = Sink::ok(SECRET);
    let sink_b = Sink::ok(SECRET);
    let dest = |id: &str, url: &str| {
        format!(
            "[[destination]]\nid = \"{id}\"\nworkspace = \"acme\"\nplugin = \"webhook\"\n\
             config = {{ url = \"{url}\", secret = \"{SECRET}\" }}\n"
        )
    };
    let config = format!(
        "[[source]]\nid = \"a\"\nworkspace = \"acme\"\nwrite_key = \"wk_source_a\"\n\
         destinations = [\"to_a\"]\n\n[[source]]\nid = \"b\"\nworkspace = \"acme\"\n\
         write_key = \"wk_source_b\"\ndestinations = [\"to_b\"]\n\n{}\n{}",
        dest("to_a", &sink_a.url),
        dest("to_b", &sink_b.url)
    );
    let sluice = Sluice::start(&config);
    let post = |key: &'static str, body: Value| {
        let url = sluice.url("/v1/batch");
        async move {
            let resp = client()
                .post(url)
                .basic_auth(key, Some(""))
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    let batch = |prefix: &str| {
        json!({ "batch": (0..5).map(|i| json!({
            "type": "track", "userId": "u", "event": "E",
            "messageId": format!("{prefix}-{i}"), "properties": { "seq": i },
        })).collect::<Vec<_>>() })
    };
    assert_eq!(post("wk_source_a", batch("a")).await, 200);
    // A body naming the other source's key does not redirect the events.
    let mut sneaky = batch("sneaky");
    sneaky["writeKey"] = json!("wk_source_b");
    let status = post("wk_source_a", sneaky).await;
    assert!(status == 200 || status == 401, "{status}");
    assert_eq!(post("wk_source_c", batch("c")).await, 401);
    assert_eq!(post("wk_source_b", batch("b")).await, 200);

    wait_until(Duration::from_secs(30), "both sinks", || async {
        (sink_a.accepted().len() >= 5 && sink_b.accepted().len() >= 5).then_some(())
    })
    .await;
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "to_b", 5).await;
    assert!(
        sink_b
            .received()
            .iter()
            .all(|r| r.message_id.starts_with("b-"))
    );
    assert!(
        sink_a
            .received()
            .iter()
            .all(|r| r.message_id.starts_with("a-") || r.message_id.starts_with("sneaky-")),
        "source a's key only reaches source a's destination"
    );
    let sources: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT source_id FROM job_overview WHERE destination_id = 'to_b'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sources, vec!["b".to_string()]);
}
