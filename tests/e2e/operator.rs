//! Operating a running host by SQL (docs/sql.md): the lane's owner acts on retry-now and pause
//! at once, through the NOTIFY the functions send.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_and_pause_by_sql_take_effect_at_once() {
    // The receiver refuses user-1's first event until it is "fixed".
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let sink = Sink::with(SECRET, move |r| {
        if r.message_id == "user-1-0" && !f.load(Ordering::SeqCst) {
            500
        } else {
            200
        }
    });
    // A backoff of an hour: only an operator brings the job back today. A lane that runs dry
    // keeps its lease for ten minutes: within this test only a pause makes the owner give the
    // lane up (with the default linger of 5 s, running dry would release it as well).
    let retry = r#"{ min_backoff = "1h", max_backoff = "2h", max_attempts = 5, window = "3h" }"#;
    let sluice = Sluice::start_with_server(
        &webhook_config(&sink.url, retry, ""),
        "lane_linger = \"10m\"",
    );
    let pool = db(&sluice).await;
    post_all(&sluice, &events(5, 50), 50).await;
    wait_until(Duration::from_secs(30), "user-1-0 to fail", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM failed_jobs WHERE message_id = 'user-1-0'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (n == 1).then_some(())
    })
    .await;
    wait_until(Duration::from_secs(30), "the other users", || async {
        (sink.accepted().len() >= 40).then_some(())
    })
    .await;

    // Fixed: retry now, and user-1 catches up in order.
    fixed.store(true, Ordering::SeqCst);
    let n: i32 = sqlx::query_scalar("SELECT sluice_retry_now('acme', 'hook', NULL, 'test')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    wait_until(Duration::from_secs(30), "user-1 delivered", || async {
        (sink.accepted().len() >= 50).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 5, 10);

    // The lane has run dry, and is still held (the linger).
    let owner = || async {
        sqlx::query_scalar::<_, Option<uuid::Uuid>>(
            "SELECT owner FROM lanes WHERE destination_id = 'hook'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(owner().await.is_some(), "a dry lane lingers on its lease");

    // Paused: the owner gives the lane up at once; new events wait.
    let _: bool = sqlx::query_scalar("SELECT sluice_pause('acme', 'hook', 'test')")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the paused lane to be given up",
        || async { owner().await.is_none().then_some(()) },
    )
    .await;
    let later: Vec<_> = (0..5).map(|u| track(&format!("user-{u}"), 10)).collect();
    post_all(&sluice, &later, 5).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT pending FROM destination_depth WHERE destination_id = 'hook'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 5, "accepted and waiting");
    assert!(
        sluice
            .find_log(|l| l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("paused by an operator")))
            .is_some(),
        "the owner saw the pause"
    );

    // Resumed: they go.
    let _: bool = sqlx::query_scalar("SELECT sluice_resume('acme', 'hook', 'test')")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "delivery after resume", || async {
        (sink.accepted().len() >= 55).then_some(())
    })
    .await;
    assert_in_order_exactly_once(&sink.received(), 5, 11);
}
