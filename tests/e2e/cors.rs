//! CORS on ingest, per source (docs/sources.md), at the HTTP level: preflights are answered
//! for origins a source allows; a request from another origin is refused with 403 and nothing
//! of it is stored, also when it comes without a preflight (`text/plain`, the key in the
//! body, or a beacon with the key in the URL); requests without `Origin` (servers) are not
//! concerned; a change of a source's origins through the admin API applies on the next
//! request.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::{Api, OPS_TOKEN, admin_section};
use crate::harness::*;

const SERVER_KEY: &str = "wk_server_only";

fn config(sink: &Sink) -> String {
    let web = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, "").replace(
        "destinations = [\"hook\"]",
        "destinations = [\"hook\"]\nallowed_origins = [\"https://shop.example\", \"*.example.com\"]",
    );
    format!(
        "{web}\n[[source]]\nid = \"server\"\nworkspace = \"acme\"\nwrite_key = \"{SERVER_KEY}\"\ndestinations = [\"hook\"]\n{}",
        admin_section()
    )
}

/// A browser-style send: `text/plain`, the key in the body, from `origin` (if any).
async fn send(
    sluice: &Sluice,
    key: &str,
    origin: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    // Each send its own messageId: dedup must not hide a stored event.
    static SEQ: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({ "batch": [track("u1", seq)], "writeKey": key }).to_string();
    let mut req = client()
        .post(sluice.url("/v1/batch"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = req.send().await.expect("ingest answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn stored(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_send_only_from_the_origins_their_source_allows() {
    let sink = Sink::ok(SECRET);
    let sluice = Sluice::start(&config(&sink));
    let pool = db(&sluice).await;

    // The preflight the RudderStack SDK sends (Basic auth and JSON need one).
    let preflight = |origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, sluice.url("/v1/batch"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,anonymousid",
            )
            .send()
    };
    let ok = preflight("https://shop.example").await.expect("an answer");
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "7200");
    let allowed_headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let refused = preflight("https://evil.example").await.expect("an answer");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS grant for an origin no source allows"
    );

    // Without a preflight, from an origin the source does not allow: 403, nothing stored.
    let (status, _, body) = send(&sluice, WRITE_KEY, Some("https://evil.example")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "origin_not_allowed");
    // An origin another source allows is still not this source's.
    let (status, headers, body) = send(&sluice, SERVER_KEY, Some("https://shop.example")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        headers["access-control-allow-origin"], "https://shop.example",
        "the page may read why"
    );
    assert_eq!(
        stored(&pool).await,
        0,
        "nothing of a refused request is stored"
    );

    // Allowed: an exact origin and a subdomain of a pattern; servers send without Origin.
    for origin in [
        Some("https://shop.example"),
        Some("https://m.example.com"),
        None,
    ] {
        let (status, headers, body) = send(&sluice, WRITE_KEY, origin).await;
        assert_eq!(status, 200, "{origin:?}: {body}");
        if let Some(o) = origin {
            assert_eq!(headers["access-control-allow-origin"], o);
            assert_eq!(headers["access-control-expose-headers"], "retry-after");
        }
    }
    let (status, _, _) = send(&sluice, SERVER_KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(stored(&pool).await, 4);

    // A beacon on page unload: no headers of its own, the key in the URL.
    let beacon = |origin: &'static str, seq: i64| {
        client()
            .post(sluice.url(&format!("/beacon/v1/batch?writeKey={WRITE_KEY}")))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("origin", origin)
            .body(json!({ "batch": [track("u2", seq)] }).to_string())
            .send()
    };
    let ok = beacon("https://shop.example", 0).await.expect("an answer");
    assert_eq!(ok.status().as_u16(), 200);
    let refused = beacon("https://evil.example", 1).await.expect("an answer");
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(stored(&pool).await, 5);

    // Segment's browser SDK: `/v1/t` for one track, `/v1/b` for a batch, text/plain, the key
    // in the body (and as Basic auth).
    let segment = |path: &str, body: Value| {
        client()
            .post(sluice.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "text/plain")
            .header("origin", "https://shop.example")
            .body(body.to_string())
            .send()
    };
    let mut one = track("u3", 0);
    one.as_object_mut().expect("an object").remove("type");
    one["writeKey"] = json!(WRITE_KEY);
    let r = segment("/v1/t", one).await.expect("an answer");
    assert_eq!(r.status().as_u16(), 200);
    let r = segment(
        "/v1/b",
        json!({ "writeKey": WRITE_KEY, "batch": [track("u3", 1), track("u3", 2)] }),
    )
    .await
    .expect("an answer");
    assert_eq!(r.status().as_u16(), 200);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event::json->>'type' FROM events WHERE event::json->>'userId' = 'u3' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(types, vec!["track", "track", "track"]);
    assert_eq!(stored(&pool).await, 8);

    // A change through the admin API holds from the next request.
    let api = Api::new(&sluice, Some(OPS_TOKEN));
    let (status, body) = api
        .put(
            "/api/v1/catalog/sources/acme/web",
            &json!({ "allowed_origins": ["https://new.example"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["source"]["allowed_origins"],
        json!(["https://new.example"])
    );
    wait_until(
        Duration::from_secs(5),
        "the new origins to apply",
        || async {
            let (now_new, _, _) = send(&sluice, WRITE_KEY, Some("https://new.example")).await;
            let (now_old, _, _) = send(&sluice, WRITE_KEY, Some("https://shop.example")).await;
            (now_new == 200 && now_old == 403).then_some(())
        },
    )
    .await;
    let (status, body) = api
        .put(
            "/api/v1/catalog/sources/acme/web",
            &json!({ "allowed_origins": ["https://shop.example/cart"] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "allowed_origins[0]", "{body}");
}
