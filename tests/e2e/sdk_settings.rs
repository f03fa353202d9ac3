//! The settings the browser SDKs fetch at load (docs/sources.md): RudderStack's
//! `sourceConfig` and Segment's project settings, for an enabled, a disabled and an unknown
//! key, and only for the origins the source allows.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::{Api, OPS_TOKEN, admin_section};
use crate::harness::*;

async fn get(
    sluice: &Sluice,
    path: &str,
    origin: &str,
    basic: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = client().get(sluice.url(path)).header("origin", origin);
    if let Some(k) = basic {
        req = req.basic_auth(k, Some(""));
    }
    let resp = req.send().await.expect("ingest answers");
    let status = resp.status().as_u16();
    let allow = resp
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, allow, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_get_their_settings_for_an_allowed_page_and_not_configured_otherwise() {
    let sink = Sink::ok(SECRET);
    let body = webhook_config(&sink.url, r#"{ min_backoff = "1s" }"#, "").replace(
        "destinations = [\"hook\"]",
        "destinations = [\"hook\"]\nallowed_origins = [\"https://shop.example\"]",
    );
    let sluice = Sluice::start(&format!("{body}{}", admin_section()));
    let shop = "https://shop.example";
    let rudder = format!("/sourceConfig/?p=npm&v=3.34.1&build=modern&writeKey={WRITE_KEY}");

    let (status, allow, v) = get(&sluice, &rudder, shop, Some(WRITE_KEY)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(allow.as_deref(), Some(shop));
    assert_eq!(v["source"]["writeKey"], WRITE_KEY);
    assert_eq!(v["source"]["id"], "web");
    assert_eq!(v["source"]["enabled"], true);
    assert_eq!(v["source"]["config"], json!({}));
    assert_eq!(v["source"]["destinations"], json!([]), "no device mode");

    let segment = format!("/v1/projects/{WRITE_KEY}/settings");
    let (status, allow, v) = get(&sluice, &segment, shop, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(allow.as_deref(), Some(shop));
    let io = &v["integrations"]["Segment.io"];
    assert_eq!(io["apiKey"], WRITE_KEY);
    assert_eq!(io["apiHost"], format!("{}/v1", sluice.addr));
    assert_eq!(v["integrations"].as_object().map(|o| o.len()), Some(1));
    assert_eq!(v["metrics"]["sampleRate"], 0);

    // An unknown key: not configured; another origin: refused.
    let (status, _, _) = get(
        &sluice,
        "/sourceConfig/?writeKey=wk_nope",
        shop,
        Some("wk_nope"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&sluice, "/v1/projects/wk_nope/settings", shop, None).await;
    assert_eq!(status, 404);
    let (status, _, v) = get(&sluice, &segment, "https://evil.example", None).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("origin_not_allowed"))
    );

    // A disabled source: RudderStack is told so, Segment finds nothing.
    let api = Api::new(&sluice, Some(OPS_TOKEN));
    let (status, v) = api
        .put(
            "/api/v1/catalog/sources/acme/web",
            &json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_until(Duration::from_secs(5), "the disabled source", || async {
        let (status, _, v) = get(&sluice, &rudder, shop, Some(WRITE_KEY)).await;
        (status == 200 && v["source"]["enabled"] == false).then_some(())
    })
    .await;
    let (status, _, _) = get(&sluice, &segment, shop, None).await;
    assert_eq!(status, 404);
}
