//! The operator web page in headless Chromium against a real host: a read-only token sees the
//! actions disabled; an operator finds a failing job, reads its attempts and error body, and
//! after the sink is fixed clicks Retry, confirms, and sees the job delivered. The catalog
//! view's forms are tested in `catalog_form`.

mod catalog_form;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::admin::{Api, OPS_TOKEN, READ_TOKEN, admin_section, admin_url, jobs};
use crate::harness::browser::Browser;
use crate::harness::*;

/// An hour's backoff: only the operator brings the failed job back during the test.
const SLOW_RETRY: &str =
    r#"{ min_backoff = "1h", max_backoff = "2h", max_attempts = 5, window = "3h" }"#;

/// Carried in an event property: the page must show it as text, never run or render it.
const MARKUP: &str = r#"<img id="pwned" src="x"><script>window.pwned = 1</script>"#;

/// Logs in with `token` through the page's form.
async fn log_in(b: &Browser, token: &str) {
    b.type_into("#token", token).await;
    b.click("#login-submit").await;
    b.find("#lanes button[data-lane='acme/hook']").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_failing_job_in_the_page_and_retries_it_after_the_fix() {
    // user-1 is refused until fixed; users 0 and 2 are delivered.
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let sink = Sink::with(SECRET, move |r| {
        if r.user == "user-1" && !f.load(Ordering::SeqCst) {
            500
        } else {
            200
        }
    });
    let config = format!(
        "{}{}",
        webhook_config(&sink.url, SLOW_RETRY, ""),
        admin_section()
    );
    let sluice = Sluice::start_with_server(&config, "stats_interval = \"1s\"");
    let mut batch = events(3, 9);
    batch[1]["properties"]["note"] = json!(MARKUP); // user-1's first event
    post_all(&sluice, &batch, 9).await;

    let api = Api::new(&sluice, Some(READ_TOKEN));
    let failed = [("destination", "hook"), ("state", "failed")];
    let head = wait_until(
        Duration::from_secs(30),
        "user-1's first job to fail",
        || async {
            let list = jobs(&api.ok("/api/v1/jobs", &failed).await);
            (list.len() == 1).then(|| list[0]["event_id"].as_i64().expect("an event id"))
        },
    )
    .await;
    let detail = api.ok(&format!("/api/v1/jobs/acme/hook/{head}"), &[]).await;
    let error_body = detail["attempts"][0]["error_text"]
        .as_str()
        .expect("the failed attempt's error body")
        .to_string();
    assert!(!error_body.is_empty(), "{detail}");

    // The page loads without a token, under a strict policy.
    let base = admin_url(&sluice);
    let resp = client()
        .get(format!("{base}/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");

    let b = Browser::start().await;
    b.client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");

    // A read-only token: the lane's actions are disabled and say why.
    log_in(&b, READ_TOKEN).await;
    b.text_when("#scope", "the read-only notice", |t| {
        t.contains("read-only")
    })
    .await;
    b.click("#lanes button[data-lane='acme/hook']").await;
    for button in ["#lane-retry", "#lane-pause"] {
        let title = b
            .attr_when(button, "title", |t| t.contains("read-only"))
            .await;
        assert!(title.contains("operator token"), "{button}: {title}");
        let disabled = b.find(button).await.attr("disabled").await.expect("attr");
        assert!(
            disabled.is_some(),
            "{button} is enabled for a read-only token"
        );
    }
    b.click("#logout").await;

    // An operator: the lane, its blocked key and failing job, the job's attempts and event.
    log_in(&b, OPS_TOKEN).await;
    let depth = b
        .text_when(
            "#lanes tr[data-lane='acme/hook'] td.num",
            "the lane's depth",
            |t| t == "3",
        )
        .await;
    assert_eq!(depth, "3", "user-1's three jobs wait");
    b.click("#lanes button[data-lane='acme/hook']").await;
    b.find(&format!("#blocked button[data-event-id='{head}']"))
        .await;
    b.click(&format!("#jobs tr[data-event-id='{head}'] button"))
        .await;
    b.attr_when("#job", "data-state", |s| s == "failed").await;
    b.text_when(
        "#attempts tbody tr[data-outcome='retry']",
        "the failed attempt",
        |t| t.contains("http_500"),
    )
    .await;
    let shown = b
        .text_when("#attempts .error-body", "the error body", |t| !t.is_empty())
        .await;
    assert_eq!(shown.trim(), error_body.trim());
    let event = b
        .text_when("#job-event", "the event", |t| t.contains("user-1-0"))
        .await;
    // The page shows the event as JSON text: the markup, with its quotes JSON-escaped.
    let as_json = serde_json::to_string(MARKUP).unwrap();
    assert!(
        event.contains(as_json.trim_matches('"')),
        "the markup is shown as text: {event}"
    );
    let injected = b
        .eval("return document.getElementById('pwned') !== null || window.pwned === 1")
        .await;
    assert_eq!(injected, json!(false), "event data became markup");

    // Fixed: Retry, confirmed in the dialog; the page and the store see the job delivered.
    fixed.store(true, Ordering::SeqCst);
    let question = b.click_and_confirm("#job-retry").await;
    assert!(question.contains(&format!("#{head}")), "{question}");
    b.text_when("#job-result", "the retry's result", |t| {
        t == "Retried: 1 job"
    })
    .await;
    b.attr_when("#job", "data-state", |s| s == "delivered")
        .await;
    b.find("#attempts tbody tr[data-outcome='delivered']").await;
    let pool = db(&sluice).await;
    let stored: String =
        sqlx::query_scalar("SELECT state::text FROM job_overview WHERE event_id = $1")
            .bind(head)
            .fetch_one(&pool)
            .await
            .expect("the job's state");
    assert_eq!(stored, "delivered");
    wait_until(
        Duration::from_secs(30),
        "user-1's jobs delivered",
        || async {
            let n = sink
                .accepted()
                .iter()
                .filter(|r| r.user == "user-1")
                .count();
            (n == 3).then_some(())
        },
    )
    .await;
    assert_in_order_exactly_once(&sink.received(), 3, 3);

    // The audit log names the operator's token.
    let audit = api.ok("/api/v1/audit", &[("destination", "hook")]).await;
    assert_eq!(audit["audit"][0]["actor"], "ops", "{audit}");
    assert_eq!(audit["audit"][0]["action"], "retry_now", "{audit}");
    b.close().await;
}
