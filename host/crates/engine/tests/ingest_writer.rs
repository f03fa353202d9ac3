//! The ingest writer against a real PostgreSQL: a workspace whose writes hang holds up no
//! other workspace of its writer (`ingest::write_queue` owns the rule; this shows it holds with
//! the store's real locks), and its requests are answered 503 in bounded time, those not yet
//! on their way dropped rather than written after their answer.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::ingest::writer::Writer;
use sluice_engine::wake::Wakers;
use sluice_store::AppendRequest;
use sluice_store::ingest_lock::workspace_key;
use sluice_store::testing::fixtures::{self, DEDUP};
use sluice_store::testing::harness::{Db, trial};
use tokio::sync::Notify;

/// Long enough for a free workspace's write on a busy machine, short for the test.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    sluice_store::testing::main(vec![trial(
        "a_workspace_whose_writes_hang_holds_up_no_other_workspace_of_its_writer",
        stuck_workspace,
    )])
}

/// Polls `count` until it reaches `want` (30 s at most, then fails saying `what`).
async fn wait_for<F, Fut>(want: i64, what: &str, count: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count().await < want {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::task::yield_now().await;
    }
}

fn request(workspace: &str, message_id: &str) -> AppendRequest {
    AppendRequest {
        workspace_id: Arc::from(workspace),
        source_id: Arc::from("web"),
        received_at: fixtures::t0(),
        events: vec![fixtures::event("u1", message_id, 10)],
    }
}

async fn stuck_workspace(db: Db) {
    // One writer: every workspace shares it.
    let writer = Writer::start(
        1,
        db.store.clone(),
        DEDUP,
        Wakers::default(),
        Arc::new(Notify::new()),
        uuid::Uuid::new_v4(),
    )
    .with_answer_timeout(ANSWER_TIMEOUT);
    let destinations: Arc<[String]> = Arc::from(Vec::new());
    // Another session holds the stuck workspace's ingest lock, as a transaction that hangs
    // (another host's, or one waiting for a Citus worker that went down) would.
    let mut holder = db.pool.acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(workspace_key("stuck"))
        .execute(&mut *holder)
        .await
        .expect("take the workspace's lock");

    // Its client's request, then the client's retry after a timeout: each waits in PostgreSQL
    // (one after the other, so that they are two groups).
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&db.pool)
        .await
        .expect("pg_locks")
    };
    let mut stuck = Vec::new();
    for (n, m) in ["m0", "m1"].into_iter().enumerate() {
        let (w, destinations) = (writer.clone(), destinations.clone());
        stuck.push(tokio::spawn(async move {
            w.append(request("stuck", m), destinations).await
        }));
        let what = format!("the stuck workspace's write {m} never waited for its lock");
        wait_for(n as i64 + 1, &what, waiting).await;
    }

    // Another workspace on the same writer is written meanwhile.
    let other = writer
        .append(request("other", "m0"), destinations.clone())
        .await
        .expect("the other workspace's write, not held up by the stuck one");
    assert_eq!(other.accepted, 1);

    // A third request of the stuck workspace waits for a place in flight: it is answered 503
    // in bounded time, and so are the two whose groups wait in PostgreSQL.
    let third = writer
        .append(request("stuck", "m2"), destinations.clone())
        .await;
    assert!(
        matches!(&third, Err(e) if e.is_unavailable()),
        "the waiting request's answer: {third:?}"
    );
    for write in stuck {
        let answer = write.await.expect("the task");
        assert!(
            matches!(&answer, Err(e) if e.is_unavailable()),
            "a stuck write's answer: {answer:?}"
        );
    }

    // Once the lock is free, the two groups on their way are stored (their clients' retries
    // are dropped as repeats), the abandoned request is not, and the workspace goes on.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(workspace_key("stuck"))
        .execute(&mut *holder)
        .await
        .expect("free the workspace's lock");
    let stored_count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE workspace_id = 'stuck'")
            .fetch_one(&db.pool)
            .await
            .expect("count the events")
    };
    wait_for(
        2,
        "the two groups on their way were never stored",
        stored_count,
    )
    .await;
    let next = writer
        .append(request("stuck", "m3"), destinations.clone())
        .await
        .expect("the stuck workspace's next write");
    assert_eq!(next.accepted, 1);
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM events WHERE workspace_id = 'stuck' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the events");
    let mut first_two = stored.get(..2).map(<[String]>::to_vec).unwrap_or_default();
    first_two.sort_unstable();
    assert_eq!(
        (first_two.as_slice(), stored.get(2..)),
        (
            &["m0".to_string(), "m1".to_string()][..],
            Some(&["m3".to_string()][..])
        ),
        "stored: {stored:?}"
    );
}
