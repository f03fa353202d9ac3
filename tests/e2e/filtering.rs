//! Destination filters: the events a destination's `filter` denies are never sent, are counted
//! as `filtered` (in `lane_stats` and on `/metrics`) rather than as deliveries or failures, and
//! do not hold back the later events of their user. A filter changed through the admin API
//! applies to the next events without configuring the plugin again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::{Api, OPS_TOKEN, admin_section};
use crate::delivery::FAST_RETRY;
use crate::harness::*;

const USERS: usize = 5;
/// Events per user in the first round: four kinds, twice over.
const PER_USER: i64 = 8;

/// User `user`'s event `seq`, by `seq % 4`: an allowed track event, an identify (denied by
/// type), a track event named `Secret Event` (denied by name), and a page carrying that name
/// (allowed: names only concern track events).
fn event(user: &str, seq: i64) -> Value {
    let mut e = track(user, seq);
    match seq % 4 {
        1 => {
            e["type"] = json!("identify");
            e["traits"] = json!({ "plan": "pro" });
            if let Some(o) = e.as_object_mut() {
                o.remove("event");
            }
        }
        2 => e["event"] = json!("Secret Event"),
        3 => {
            e["type"] = json!("page");
            e["name"] = json!("Secret Event");
            if let Some(o) = e.as_object_mut() {
                o.remove("event");
            }
        }
        _ => {}
    }
    e
}

fn denied(seq: i64) -> bool {
    matches!(seq % 4, 1 | 2)
}

/// Each user's events `from..to`, round-robin over the users, in order.
fn round(from: i64, to: i64) -> Vec<Value> {
    (from..to)
        .flat_map(|seq| (0..USERS).map(move |u| event(&format!("user-{u}"), seq)))
        .collect()
}

/// The value of the `sluice_jobs_total` sample of `hook` with this outcome.
fn jobs_total(page: &str, outcome: &str) -> Option<f64> {
    let want = format!(r#"outcome="{outcome}""#);
    page.lines()
        .filter(|l| l.starts_with("sluice_jobs_total{"))
        .find(|l| l.contains(r#"destination="hook""#) && l.contains(&want))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `lane_stats` of `hook`, summed: (delivered, failed, aborted, filtered).
async fn lane_stats(pool: &sqlx::PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(delivered), 0)::bigint, coalesce(sum(failed), 0)::bigint,
                coalesce(sum(aborted), 0)::bigint, coalesce(sum(filtered), 0)::bigint
         FROM lane_stats WHERE destination_id = 'hook'",
    )
    .fetch_one(pool)
    .await
    .expect("read lane_stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_events_are_never_sent_are_counted_as_filtered_and_do_not_hold_back_their_key() {
    let sink = Sink::ok(SECRET);
    let filter = r#"filter = { deny_types = ["identify"], deny_events = ["Secret Event"] }"#;
    let config = format!(
        "{}{}",
        webhook_config(&sink.url, FAST_RETRY, filter),
        admin_section()
    );
    let mut sluice = Sluice::start_with_server(&config, "stats_interval = \"1s\"");
    let pool = db(&sluice).await;
    post_all(&sluice, &round(0, PER_USER), 20).await;

    // Every user's allowed events arrive, in order, including those after a denied one: a
    // filtered job finishes at once and its key goes on.
    let allowed: Vec<i64> = (0..PER_USER).filter(|s| !denied(*s)).collect();
    let n = USERS * allowed.len();
    wait_until(Duration::from_secs(60), "the allowed events", || async {
        (sink.accepted().len() >= n).then_some(())
    })
    .await;
    // Every job is finished (none pending, failed or aborted) once the lane has committed.
    wait_until(Duration::from_secs(30), "every job finished", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_overview
             WHERE destination_id = 'hook' AND state <> 'delivered'",
        )
        .fetch_one(&pool)
        .await
        .expect("count open jobs");
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_overview WHERE destination_id = 'hook'")
                .fetch_one(&pool)
                .await
                .expect("count jobs");
        (open == 0 && total == USERS as i64 * PER_USER).then_some(())
    })
    .await;
    let received = sink.received();
    let sent_denied: Vec<&str> = received
        .iter()
        .filter(|r| denied(r.seq))
        .map(|r| r.message_id.as_str())
        .collect();
    assert!(
        sent_denied.is_empty(),
        "denied events were sent: {sent_denied:?}"
    );
    let by_user = accepted_by_user(&received);
    assert_eq!(by_user.len(), USERS, "{by_user:?}");
    for (user, seqs) in &by_user {
        assert_eq!(
            seqs, &allowed,
            "{user}: out of order, duplicated or held back"
        );
    }
    assert_eq!(
        received.len(),
        n,
        "one request per allowed event, no retries"
    );

    // Counted as filtered: neither deliveries nor failures.
    let filtered = (USERS * (PER_USER as usize - allowed.len())) as i64;
    let stats = wait_until(Duration::from_secs(30), "lane_stats", || async {
        let s = lane_stats(&pool).await;
        (s.0 + s.1 + s.2 + s.3 >= USERS as i64 * PER_USER).then_some(s)
    })
    .await;
    assert_eq!(
        stats,
        (n as i64, 0, 0, filtered),
        "(delivered, failed, aborted, filtered)"
    );
    let page = metrics_page(&sluice).await;
    assert_eq!(
        jobs_total(&page, "filtered"),
        Some(filtered as f64),
        "{page}"
    );
    assert_eq!(jobs_total(&page, "delivered"), Some(n as f64), "{page}");
    assert_eq!(jobs_total(&page, "skipped"), None, "{page}");
    assert_eq!(jobs_total(&page, "failed"), None, "{page}");
    assert_eq!(jobs_total(&page, "aborted"), None, "{page}");

    // A live change: identify events are allowed from now on. The filter is not the plugin's
    // business, so the plugin is not configured again.
    let configured = |s: &Sluice| {
        s.count_log(|l| {
            l["fields"]["message"] == "destination configured"
                && l["fields"]["destination"] == "hook"
        })
    };
    let before = configured(&sluice);
    let api = Api::new(&sluice, Some(OPS_TOKEN));
    let (status, body) = api
        .put(
            "/api/v1/catalog/destinations/acme/hook",
            &json!({
                "plugin": "webhook",
                "config": { "url": sink.url, "secret": SECRET },
                "retry": { "min_backoff": "1s", "max_backoff": "5s", "max_attempts": 3, "window": "1h" },
                "filter": { "deny_events": ["Secret Event"] },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["destination"]["filter"],
        json!({ "deny_events": ["Secret Event"] }),
        "{body}"
    );
    sluice.wait_for_log(Duration::from_secs(10), |l| {
        l["fields"]["message"] == "destination changed" && l["fields"]["destination"] == "hook"
    });
    // seq 9 is an identify (now allowed), seq 10 a Secret Event (still denied), seq 11 a page.
    post_all(&sluice, &round(PER_USER, PER_USER + 4), 20).await;
    wait_until(Duration::from_secs(30), "the next round", || async {
        (sink.accepted().len() >= n + USERS * 3).then_some(())
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "the next round counted",
        || async { (lane_stats(&pool).await.3 >= filtered + USERS as i64).then_some(()) },
    )
    .await;
    let by_user = accepted_by_user(&sink.received());
    for (user, seqs) in &by_user {
        let mut want = allowed.clone();
        want.extend([8, 9, 11]);
        assert_eq!(seqs, &want, "{user}");
    }
    assert_eq!(
        configured(&sluice),
        before,
        "the plugin was configured again"
    );
}
