//! Crash consistency: `kill -9` in the middle of delivery, then restart.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_delivery_loses_nothing_and_keeps_order() {
    // A slightly slow sink, so that the kill lands in the middle of the run.
    let sink = Sink::with(SECRET, |_| {
        std::thread::sleep(Duration::from_micros(500));
        200
    });
    let retry = r#"{ min_backoff = "1s", max_backoff = "5s", max_attempts = 3, window = "1h" }"#;
    let mut sluice = Sluice::start(&webhook_config(&sink.url, retry, ""));
    post_all(&sluice, &events(100, 10_000), 500).await;

    wait_until(
        Duration::from_secs(120),
        "some deliveries before the kill",
        || async { (sink.accepted().len() >= 1500).then_some(()) },
    )
    .await;
    sluice.kill9();
    let before_restart = sink.accepted().len();
    assert!(
        before_restart < 10_000,
        "the kill must land mid-delivery ({before_restart} delivered)"
    );
    // What the store says was in flight when the host died: jobs the lane had claimed (read)
    // beyond its cursor, without a row. (The orphaned Postgres is still up.)
    let pool = db(&sluice).await;
    let in_flight: HashSet<String> = sqlx::query_scalar(
        "SELECT message_id FROM job_overview WHERE destination_id = 'hook' AND state = 'executing'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    pool.close().await;

    sluice.restart();
    let adopted = sluice.find_log(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("adopting the embedded postgres"))
    });
    assert!(
        adopted.is_some(),
        "the orphaned cluster is adopted:\n{}",
        sluice.log_text()
    );

    wait_until(
        Duration::from_secs(180),
        "all 10,000 events delivered",
        || async {
            let unique: HashSet<String> =
                sink.accepted().into_iter().map(|r| r.message_id).collect();
            (unique.len() >= 10_000).then_some(())
        },
    )
    .await;

    // Per user, first deliveries are complete and in order.
    let received = sink.accepted();
    let mut first: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut duplicates = HashSet::new();
    for r in &received {
        if seen.insert(r.message_id.clone()) {
            first.entry(r.user.clone()).or_default().push(r.seq);
        } else {
            duplicates.insert(r.message_id.clone());
        }
    }
    assert_eq!(first.len(), 100);
    for (user, seqs) in &first {
        assert_eq!(seqs, &(0..100).collect::<Vec<i64>>(), "order of {user}");
    }

    // Duplicates only for jobs that were in flight at the kill.
    assert!(
        duplicates.is_subset(&in_flight),
        "duplicated but not in flight: {:?}",
        duplicates.difference(&in_flight).collect::<Vec<_>>()
    );
    let pool = db(&sluice).await;
    wait_all_delivered(&pool, "hook", 10_000).await;
}
