//! The page's catalog view in headless Chromium against a real host: an operator creates a
//! webhook destination from the form its plugin's declared fields build, sees the plugin's
//! refusal of a bad URL beside the URL field, fixes it, links the source, and sees events
//! delivered in order; saves it again with its secret shown as `***` (kept as stored); creates
//! a source whose write key is shown once and works. A read-only token sees the forms disabled.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::{Api, OPS_TOKEN, READ_TOKEN, admin_section, admin_url};
use crate::harness::browser::Browser;
use crate::harness::*;

const URL_FIELD: &str = "#destination-form [name='config.url']";
const URL_ERROR: &str = "#destination-form .field[data-field='config.url'] .field-error";

/// Logs in with `token` and opens the catalog view, once it lists the source `acme/web`.
async fn open_catalog(b: &Browser, token: &str) {
    b.type_into("#token", token).await;
    b.click("#login-submit").await;
    b.click("#view-catalog").await;
    b.find("#sources button[data-source='acme/web']").await;
}

/// Waits until the sink accepted `n` requests.
async fn accepted(sink: &Sink, n: usize) -> Vec<Received> {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} deliveries"),
        || async {
            let got = sink.accepted();
            (got.len() >= n).then_some(got)
        },
    )
    .await
}

/// POSTs a batch with another source's write key.
async fn post_with_key(sluice: &Sluice, key: &str, events: &[Value]) -> u16 {
    client()
        .post(sluice.url("/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .expect("post batch")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_a_destination_from_its_form_fixes_a_field_error_and_sees_events_delivered()
 {
    let sink = Sink::ok(SECRET);
    // Only the source: the destination is made in the page.
    let config = format!("{}{}", source_config(&[], ""), admin_section());
    let sluice = Sluice::start(&config);

    // The endpoint the form is built from: the webhook's declared fields, its secret marked.
    let api = Api::new(&sluice, Some(READ_TOKEN));
    let plugins = api.ok("/api/v1/catalog/plugins", &[]).await;
    let webhook = plugins["plugins"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "webhook"))
        .unwrap_or_else(|| panic!("the webhook plugin is listed: {plugins}"));
    let fields: Vec<(&str, &str, bool)> = webhook["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("the webhook declares its fields: {webhook}"))
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default(),
                f["type"].as_str().unwrap_or_default(),
                f["secret"] == true,
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("url", "url", false),
            ("secret", "string", true),
            ("headers", "string_map", false),
            ("timeout_ms", "integer", false),
        ]
    );

    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/", admin_url(&sluice)))
        .await
        .expect("open the page");
    open_catalog(&b, OPS_TOKEN).await;

    // A new webhook destination: the plugin's fields make the form.
    b.click("#destination-new").await;
    b.type_into("#destination-workspace", "acme").await;
    b.type_into("#destination-id", "hook").await;
    b.find("#destination-plugin option[value='webhook']").await;
    b.find("#destination-plugin")
        .await
        .select_by_value("webhook")
        .await
        .expect("choose the webhook plugin");
    b.find(URL_FIELD).await;
    let secret_type = b
        .attr_when("#destination-form [name='config.secret']", "type", |_| true)
        .await;
    assert_eq!(
        secret_type, "password",
        "a secret field is a password input"
    );
    b.type_into(URL_FIELD, "ftp://127.0.0.1/hook").await;
    b.type_into("#destination-form [name='config.secret']", SECRET)
        .await;
    b.click("#destination-sources input[value='web']").await;
    b.click("#destination-save").await;

    // The plugin refused the URL: its words beside the URL field, the form still open.
    let error = b
        .text_when(URL_ERROR, "the URL's error beside it", |t| !t.is_empty())
        .await;
    // The plugin's own words, without the path (the field says which it is).
    assert!(
        error.starts_with("must start with http:// or https://"),
        "{error}"
    );
    let form_error = b.find("#destination-form .form-error").await.text().await;
    assert_eq!(
        form_error.ok().as_deref(),
        Some(""),
        "not a form-level error"
    );
    assert_eq!(
        b.find("#destination-form").await.attr("hidden").await.ok(),
        Some(None),
        "the form stays open"
    );
    let catalog = api.ok("/api/v1/catalog", &[]).await;
    assert_eq!(catalog["destinations"], json!([]), "nothing was written");

    // Fixed: saved, listed, linked to the source.
    b.type_into(URL_FIELD, &sink.url).await;
    b.click("#destination-save").await;
    b.text_when(
        "#destinations tr[data-destination='acme/hook']",
        "the new destination in the list",
        |t| t.contains("webhook") && t.contains("web"),
    )
    .await;
    b.text_when("#catalog-result", "the result", |t| {
        t == "Created destination acme/hook."
    })
    .await;
    let dest = api.ok("/api/v1/catalog/destinations/acme/hook", &[]).await;
    assert_eq!(dest["destination"]["sources"], json!(["web"]), "{dest}");
    assert_eq!(dest["destination"]["config"]["secret"], "***", "{dest}");

    // Events through ingest reach the sink, signed with the secret typed in the form, in order.
    post_all(&sluice, &events(3, 9), 9).await;
    let got = accepted(&sink, 9).await;
    assert!(got.iter().all(|r| r.signature_ok), "signed with the secret");
    assert_in_order_exactly_once(&got, 3, 3);
    let users: Vec<&str> = got.iter().map(|r| r.user.as_str()).collect();
    for u in ["user-0", "user-1", "user-2"] {
        assert!(users.contains(&u), "{u} delivered: {users:?}");
    }

    // Edited: the secret shows as `***` and is kept when saved as shown.
    b.click("#destinations button[data-destination='acme/hook']")
        .await;
    let shown = b
        .find("#destination-form [name='config.secret']")
        .await
        .prop("value")
        .await
        .expect("the secret input's value");
    assert_eq!(shown.as_deref(), Some("***"));
    b.type_into("#destination-form [name='config.timeout_ms']", "5000")
        .await;
    b.click("#destination-save").await;
    b.text_when("#catalog-result", "the save", |t| {
        t == "Saved destination acme/hook."
    })
    .await;
    let dest = api.ok("/api/v1/catalog/destinations/acme/hook", &[]).await;
    assert_eq!(dest["destination"]["config"]["timeout_ms"], 5000, "{dest}");

    // A new source linked to it: its write key is shown once, and works.
    b.click("#source-new").await;
    b.type_into("#source-workspace", "acme").await;
    b.type_into("#source-id", "app").await;
    b.click("#source-destinations input[value='hook']").await;
    b.click("#source-save").await;
    let key = b
        .text_when("#source-write-key", "the new write key", |t| t.len() >= 32)
        .await;
    b.find("#sources button[data-source='acme/app']").await;
    let late = [track("late", 0), track("late", 1)];
    wait_until(Duration::from_secs(10), "the new key to work", || async {
        (post_with_key(&sluice, &key, &late).await == 200).then_some(())
    })
    .await;
    let got = accepted(&sink, 11).await;
    let late_seqs: Vec<i64> = got
        .iter()
        .filter(|r| r.user == "late")
        .map(|r| r.seq)
        .collect();
    assert_eq!(late_seqs, [0, 1], "after the edit, still signed: {got:?}");
    assert!(got.iter().all(|r| r.signature_ok), "the secret was kept");
    b.click("#logout").await;

    // A read-only token: the forms open, but nothing in them can be changed.
    open_catalog(&b, READ_TOKEN).await;
    let title = b
        .attr_when("#destination-new", "title", |t| t.contains("read-only"))
        .await;
    assert!(title.contains("operator token"), "{title}");
    b.click("#destinations button[data-destination='acme/hook']")
        .await;
    for css in [
        "#destination-save",
        "#destination-delete",
        URL_FIELD,
        "#destination-plugin",
    ] {
        b.find(css).await;
        let disabled = b.find(css).await.attr("disabled").await.expect("attr");
        assert!(disabled.is_some(), "{css} is enabled for a read-only token");
    }
    for css in ["#destination-new", "#source-new"] {
        let disabled = b.find(css).await.attr("disabled").await.expect("attr");
        assert!(disabled.is_some(), "{css} is enabled for a read-only token");
    }
    b.close().await;
}
