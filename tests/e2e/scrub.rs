//! Credentials in a destination's URL (user info, query values) never reach what the host
//! prints or stores, at any log level and whoever writes the text: the host, its HTTP client
//! (and hyper below it), the plugin refusing the config, or a receiver that echoes the whole
//! request back into its error body (the path it quotes has no scheme, so only the values
//! themselves give the secret away).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::harness::server::{Served, serve};
use crate::harness::*;

const PASSWORD: &str = "PASSW0RD";
const TOKEN: &str = "SECRETTOKEN123";
const API_KEY: &str = "APIKEYVALUE99";
/// A query value sent percent-encoded, which the receiver also echoes decoded.
const SIG_ENCODED: &str = "S1G%2BNATURE%2F42";
const SIG_DECODED: &str = "S1G+NATURE/42";
/// Declared secret by the webhook manifest (`headers.Authorization`).
const AUTH_VALUE: &str = "AUTHVALUE-5e1f";

/// The whole host at debug level: the outbound client names each origin it connects to there
/// (and hyper's pooled client, used before 2026-12-05, printed its keys, the URL's authority).
const DEBUG: [(&str, &str); 1] = [("RUST_LOG", "debug")];

/// A receiver that answers every request with a 500 quoting the request: its path and query
/// (raw and decoded), its headers and its body, in that order (the SDK keeps the first KB).
struct EchoReceiver {
    served: Served,
    /// The `authorization` header of each request received.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

impl EchoReceiver {
    fn start() -> EchoReceiver {
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(echo)
            .with_state(authorizations.clone());
        EchoReceiver {
            served: serve(app, "echo receiver"),
            authorizations,
        }
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.authorizations.lock().unwrap().clone()
    }
}

async fn echo(
    State(seen): State<Arc<Mutex<Vec<Option<String>>>>>,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    seen.lock()
        .unwrap()
        .push(headers.get("authorization").map(|v| text(v.as_bytes())));
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(text(v.as_bytes()))))
        .collect();
    let query: BTreeMap<String, String> = query.into_iter().collect();
    let echo = format!(
        r#"{{"echo_url": {}, "query": {}, "headers": {}, "body": {}}}"#,
        json!(uri.to_string()),
        json!(query),
        Value::Object(headers),
        json!(text(&body)),
    );
    (StatusCode::INTERNAL_SERVER_ERROR, echo).into_response()
}

/// `needles` appear nowhere in the host's output (stdout and stderr, every level).
fn assert_not_printed(sluice: &Sluice, needles: &[&str]) {
    let log = sluice.log_text();
    for needle in needles {
        assert!(
            !log.contains(needle),
            "`{needle}` in the host's output:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_echoed_by_a_receiver_never_reach_the_log_or_the_store() {
    let receiver = EchoReceiver::start();
    let url = format!(
        "http://user:{PASSWORD}@127.0.0.1:{}/hook?token={TOKEN}&api_key={API_KEY}&sig={SIG_ENCODED}",
        receiver.served.addr.port()
    );
    let config = format!(
        r#"{{ url = "{url}", secret = "{SECRET}", headers = {{ Authorization = "Bearer {AUTH_VALUE}" }} }}"#
    );
    // Three attempts, then aborted: the error text lands in every table that keeps one.
    let retry = r#"{ min_backoff = "1s", max_backoff = "1s", max_attempts = 3, window = "0s" }"#;
    let body = source_config(
        &["hook"],
        &destination_table("hook", "webhook", &config, retry),
    );
    let sluice = Sluice::start_with_env(&body, &DEBUG);
    post_all(&sluice, &events(2, 4), 4).await;
    let pool = db(&sluice).await;

    // Every attempt fails: error texts of attempts, of the jobs' state, and of aborted jobs.
    wait_until(Duration::from_secs(90), "4 jobs aborted", || async {
        (states(&pool, "hook").await == BTreeMap::from([("aborted".to_string(), 4)])).then_some(())
    })
    .await;
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT error_text FROM aborted_jobs WHERE destination_id = 'hook' AND error_code = 'http_500'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(texts.len(), 4, "{texts:?}");
    for text in &texts {
        // The echo made it into the error text, with the values masked.
        assert!(
            text.contains(r#""echo_url": "/hook?token=***&api_key=***&sig=***""#),
            "{text}"
        );
        assert!(text.contains(r#""authorization":"***""#), "{text}");
    }

    // The receiver saw every attempt, with the configured header and nothing made of the
    // user info (which is never sent).
    let seen = receiver.authorizations();
    assert!(seen.len() >= 12, "3 attempts of 4 jobs: {}", seen.len());
    let configured = format!("Bearer {AUTH_VALUE}");
    assert!(
        seen.iter()
            .all(|a| a.as_deref() == Some(configured.as_str())),
        "{seen:?}"
    );

    let needles = [
        PASSWORD,
        TOKEN,
        API_KEY,
        SIG_ENCODED,
        SIG_DECODED,
        AUTH_VALUE,
    ];
    assert_not_stored(&pool, &needles).await;
    // The log did carry the failures, and the client did name the origin at debug level.
    let failed = sluice.logs(|l| l["fields"]["message"] == "attempt failed");
    assert!(
        failed.iter().any(|l| l["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("token=***"))),
        "the failures were logged, masked:\n{}",
        sluice.log_text()
    );
    assert!(
        sluice.count_log(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("sluice_runtime::outbound")))
            > 0,
        "the client logged its connections at debug level:\n{}",
        sluice.log_text()
    );
    assert_not_printed(&sluice, &needles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_url_shows_no_credential_in_the_log_or_on_the_lane() {
    let url = format!("ftp://user:{PASSWORD}@127.0.0.1/x?token={TOKEN}");
    let config = format!(r#"{{ url = "{url}", secret = "{SECRET}" }}"#);
    let retry = r#"{ min_backoff = "1s" }"#;
    let body = source_config(
        &["refused"],
        &destination_table("refused", "webhook", &config, retry),
    );
    let sluice = Sluice::start_with_env(&body, &DEBUG);
    let pool = db(&sluice).await;

    let refused = sluice
        .find_log(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("plugin rejected for this destination"))
                && l["fields"]["destination"] == "refused"
        })
        .unwrap_or_else(|| panic!("no configure error at start:\n{}", sluice.log_text()));
    assert_eq!(refused["level"], "ERROR", "{refused}");
    let reason = refused["fields"]["error"].as_str().unwrap_or_default();
    // The reason still says what is wrong, and which URL, without its credentials.
    assert!(
        reason.contains("url: must start with http:// or https://")
            && reason.contains("ftp://***@127.0.0.1/x?***"),
        "{reason}"
    );
    let recorded: Option<String> = wait_until(
        Duration::from_secs(20),
        "the refusal on the lane",
        || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT plugin_error FROM lane_status WHERE destination_id = 'refused'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
            .flatten()
            .map(Some)
        },
    )
    .await;
    assert!(
        recorded
            .as_deref()
            .is_some_and(|e| e.contains("ftp://***@")),
        "{recorded:?}"
    );

    let needles = [PASSWORD, TOKEN];
    assert_not_stored(&pool, &needles).await;
    assert_not_printed(&sluice, &needles);
}
