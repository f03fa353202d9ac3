//! The shipped batch plugins (http-batch, amplitude, posthog) through the real host, each
//! against a local mock of its vendor's API: request bodies, per-user order, and one error
//! mapping end to end, recorded in the store with its code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

const FAST_RETRY: &str =
    r#"{ min_backoff = "1s", max_backoff = "5s", max_attempts = 3, window = "1h" }"#;

fn destination(id: &str, plugin: &str, config: &str) -> String {
    destination_table(id, plugin, config, FAST_RETRY)
}

/// `users` users with `per_user` track events each (harness `track`), interleaved.
fn tracks(users: usize, per_user: i64) -> Vec<Value> {
    (0..per_user)
        .flat_map(|seq| (0..users).map(move |u| track(&format!("user-{u}"), seq)))
        .collect()
}

/// Waits until the store records `want` (state → count) for `destination`.
async fn wait_states(pool: &PgPool, destination: &str, want: &[(&str, i64)]) {
    let want: BTreeMap<String, i64> = want.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let what = format!("{destination} to reach {want:?}");
    wait_until(Duration::from_secs(60), &what, || async {
        (states(pool, destination).await == want).then_some(())
    })
    .await;
}

/// State and error code of the job of `message_id` at `destination`.
async fn job(pool: &PgPool, destination: &str, message_id: &str) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT state::text, error_code FROM job_overview
         WHERE destination_id = $1 AND message_id = $2",
    )
    .bind(destination)
    .bind(message_id)
    .fetch_one(pool)
    .await
    .expect("the job")
}

/// Per user, the sequence numbers in the accepted calls' items, in arrival order.
fn accepted_seqs(
    calls: &[Call],
    items: impl Fn(&Value) -> Vec<Value>,
    user_and_seq: impl Fn(&Value) -> Option<(String, i64)>,
) -> BTreeMap<String, Vec<i64>> {
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.status == 200) {
        for item in items(&call.body) {
            if let Some((user, seq)) = user_and_seq(&item) {
                by_user.entry(user).or_default().push(seq);
            }
        }
    }
    by_user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_batch_posts_arrays_in_order_and_aborts_the_items_the_receiver_rejects() {
    // The receiver takes the array and rejects, by index, the events marked as poison.
    let api = MockApi::start(|_, body| {
        let errors: Vec<Value> = body
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| e["properties"]["poison"] == true)
            .map(|(i, _)| json!({"index": i, "message": "poisoned", "code": "poison"}))
            .collect();
        (200, json!({ "errors": errors }))
    });
    let url = format!("{}/collect", api.base);
    let table = destination(
        "batch",
        "http-batch",
        &format!(r#"{{ url = "{url}", item_errors = "errors", max_items = 4 }}"#),
    );
    let sluice = Sluice::start(&source_config(&["batch"], &table));
    let mut events = tracks(3, 6);
    for e in &mut events {
        if e["messageId"] == "user-1-3" {
            e["properties"]["poison"] = json!(true);
        }
    }
    post_all(&sluice, &events, 100).await;

    let pool = db(&sluice).await;
    wait_states(&pool, "batch", &[("aborted", 1), ("delivered", 17)]).await;
    assert_eq!(
        job(&pool, "batch", "user-1-3").await,
        ("aborted".to_string(), Some("poison".to_string()))
    );

    let calls = api.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.path == "/collect" && c.body.is_array())
    );
    assert!(
        calls
            .iter()
            .all(|c| c.body.as_array().is_some_and(|a| a.len() <= 4)),
        "max_items splits calls"
    );
    let by_user = accepted_seqs(
        &calls,
        |body| body.as_array().cloned().unwrap_or_default(),
        |e| {
            let poisoned = e["properties"]["poison"] == true;
            let user = e["userId"].as_str()?.to_string();
            (!poisoned).then(|| (user, e["properties"]["seq"].as_i64().unwrap_or(-1)))
        },
    );
    let all: Vec<i64> = (0..6).collect();
    assert_eq!(by_user["user-0"], all);
    assert_eq!(
        by_user["user-1"],
        [0, 1, 2, 4, 5],
        "the rest of user-1 went on in order"
    );
    assert_eq!(by_user["user-2"], all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplitude_gets_its_event_format_and_invalid_events_are_dropped_from_the_request() {
    // Like Amplitude: a request holding an invalid event is rejected whole with its index.
    let api = MockApi::start(|_, body| {
        let bad: Vec<usize> = body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| e["event_properties"]["bad_time"] == true)
            .map(|(i, _)| i)
            .collect();
        if bad.is_empty() {
            (200, json!({"code": 200}))
        } else {
            let error = "Invalid field values on some events";
            let fields = json!({"time": bad});
            (
                400,
                json!({"code": 400, "error": error, "events_with_invalid_fields": fields}),
            )
        }
    });
    let table = destination(
        "amp",
        "amplitude",
        &format!(
            r#"{{ api_key = "amp-key", endpoint = "{}/2/httpapi" }}"#,
            api.base
        ),
    );
    let sluice = Sluice::start(&source_config(&["amp"], &table));
    let mut events = tracks(3, 5);
    for e in &mut events {
        if e["messageId"] == "user-2-1" {
            e["properties"]["bad_time"] = json!(true);
        }
    }
    post_all(&sluice, &events, 100).await;

    let pool = db(&sluice).await;
    wait_states(&pool, "amp", &[("aborted", 1), ("delivered", 14)]).await;
    assert_eq!(
        job(&pool, "amp", "user-2-1").await,
        (
            "aborted".to_string(),
            Some("amplitude_invalid_field".to_string())
        )
    );

    let calls = api.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.path == "/2/httpapi" && c.body["api_key"] == "amp-key")
    );
    let first = calls
        .iter()
        .flat_map(|c| c.body["events"].as_array().cloned().unwrap_or_default())
        .find(|e| e["insert_id"] == "user-0-0")
        .expect("user-0's first event");
    assert_eq!(first["event_type"], "Order Completed");
    assert_eq!(first["user_id"], "user-0");
    assert_eq!(
        first["time"], 1_795_564_800_000_i64,
        "2026-11-25T00:00:00Z in ms"
    );
    assert_eq!(first["event_properties"]["seq"], 0);
    let by_user = accepted_seqs(
        &calls,
        |body| body["events"].as_array().cloned().unwrap_or_default(),
        |e| {
            let user = e["user_id"].as_str()?.to_string();
            Some((user, e["event_properties"]["seq"].as_i64().unwrap_or(-1)))
        },
    );
    let all: Vec<i64> = (0..5).collect();
    assert_eq!(by_user["user-0"], all);
    assert_eq!(by_user["user-1"], all);
    assert_eq!(
        by_user["user-2"],
        [0, 2, 3, 4],
        "user-2's valid events, once each, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_gets_capture_events_in_order_and_a_wrong_key_aborts_with_a_clear_code() {
    let api = MockApi::start(|_, body| {
        if body["api_key"] == "phc_good" {
            (200, json!({"status": 1}))
        } else {
            (
                401,
                json!({"type": "authentication_error", "code": "invalid_api_key"}),
            )
        }
    });
    let tables = [
        destination(
            "ph",
            "posthog",
            &format!(r#"{{ api_key = "phc_good", host = "{}" }}"#, api.base),
        ),
        destination(
            "ph-bad",
            "posthog",
            &format!(r#"{{ api_key = "phc_wrong", host = "{}" }}"#, api.base),
        ),
    ]
    .concat();
    let sluice = Sluice::start(&source_config(&["ph", "ph-bad"], &tables));
    let identify = json!({
        "type": "identify", "userId": "user-0", "anonymousId": "anon-0",
        "messageId": "user-0-identify", "traits": {"plan": "pro"},
    });
    let mut events = vec![identify];
    events.extend(tracks(2, 4));
    post_all(&sluice, &events, 100).await;

    let pool = db(&sluice).await;
    wait_states(&pool, "ph", &[("delivered", 9)]).await;
    wait_states(&pool, "ph-bad", &[("aborted", 9)]).await;
    assert_eq!(
        job(&pool, "ph-bad", "user-1-2").await,
        (
            "aborted".to_string(),
            Some("posthog_unauthorized".to_string())
        )
    );

    let calls = api.calls();
    assert!(calls.iter().all(|c| c.path == "/batch/"));
    let accepted: Vec<Value> = calls
        .iter()
        .filter(|c| c.status == 200)
        .flat_map(|c| c.body["batch"].as_array().cloned().unwrap_or_default())
        .collect();
    let of_user_0: Vec<&Value> = accepted
        .iter()
        .filter(|e| e["distinct_id"] == "user-0")
        .collect();
    assert_eq!(
        of_user_0[0]["event"], "$identify",
        "identify came first and stays first"
    );
    assert_eq!(of_user_0[0]["properties"]["$set"], json!({"plan": "pro"}));
    assert_eq!(of_user_0[0]["properties"]["$anon_distinct_id"], "anon-0");
    assert_eq!(of_user_0[1]["event"], "Order Completed");
    assert_eq!(of_user_0[1]["timestamp"], "2026-11-25T00:00:00Z");
    let by_user = accepted_seqs(
        &calls,
        |body| body["batch"].as_array().cloned().unwrap_or_default(),
        |e| {
            let user = e["distinct_id"].as_str()?.to_string();
            let seq = e["properties"]["seq"].as_i64()?;
            Some((user, seq))
        },
    );
    let all: Vec<i64> = (0..4).collect();
    assert_eq!(by_user["user-0"], all);
    assert_eq!(by_user["user-1"], all);
}
