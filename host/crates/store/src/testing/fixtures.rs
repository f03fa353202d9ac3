//! Building blocks for store tests.

use std::sync::Arc;
use std::time::Duration;

use crate::{
    AcquiredLane, AppendOutcome, AppendRequest, Dedup, JobState, LaneId, LaneSpec, Lease, NewEvent,
    NewJobRow, OrderingScope, Store,
};
use time::OffsetDateTime;
use uuid::Uuid;

pub const TTL: Duration = Duration::from_secs(30);
pub const WS: &str = "acme";

pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time")
}

pub fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

pub fn lane(dest: &str) -> LaneId {
    LaneId {
        workspace_id: WS.into(),
        destination_id: dest.into(),
    }
}

pub fn spec(dest: &str, sources: &[&str], ordering: OrderingScope) -> LaneSpec {
    LaneSpec {
        lane: lane(dest),
        ordering,
        sources: sources.iter().map(|s| s.to_string()).collect(),
    }
}

/// Live links from `sources` (every event of theirs), for log reads.
pub fn links(sources: &[&str]) -> Vec<sluice_core::catalog::Link> {
    sources
        .iter()
        .map(|s| sluice_core::catalog::Link {
            source: sluice_core::SourceId::try_from(*s).expect("a valid source id"),
            destination: sluice_core::DestinationId::try_from("hook").expect("a valid id"),
            from_id: 0,
            until_id: None,
        })
        .collect()
}

/// An event of `user` with message id `msg` and a payload of about `pad` bytes.
pub fn event(user: &str, msg: &str, pad: usize) -> NewEvent {
    NewEvent {
        message_id: msg.into(),
        user_key: user.into(),
        json: format!(
            r#"{{"type":"track","event":"E","userId":"{user}","messageId":"{msg}","pad":"{}"}}"#,
            "x".repeat(pad)
        ),
    }
}

pub fn request(source: &str, at: OffsetDateTime, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        workspace_id: Arc::from(WS),
        source_id: Arc::from(source),
        received_at: at,
        events,
    }
}

pub const DEDUP: Dedup = Dedup {
    window: Duration::from_secs(3600),
};

/// Appends one request and returns its outcome.
pub async fn append(
    store: &Store,
    source: &str,
    at: OffsetDateTime,
    events: Vec<NewEvent>,
) -> AppendOutcome {
    let r = request(source, at, events);
    store
        .event_append(&[&r], Some(DEDUP), None)
        .await
        .expect("append")
        .remove(0)
}

/// Appends `(user, msg)` events of `source`, small payloads.
pub async fn append_users(store: &Store, source: &str, events: &[(&str, &str)]) -> AppendOutcome {
    append(
        store,
        source,
        t0(),
        events.iter().map(|(u, m)| event(u, m, 10)).collect(),
    )
    .await
}

/// Acquires `dest` for a new host id at `now`.
pub async fn acquire(store: &Store, dest: &str, now: OffsetDateTime) -> AcquiredLane {
    store
        .lane_acquire(&lane(dest), Uuid::new_v4(), now, TTL)
        .await
        .expect("acquire")
        .expect("the lane is free")
}

/// The `hook` lane (fed by `web`, ordered by user) with `events` (user, messageId) appended,
/// acquired at `t0()`.
pub async fn hook_with_events(store: &Store, events: &[(&str, &str)]) -> Lease {
    store
        .lanes_sync(&[spec("hook", &["web"], OrderingScope::User)])
        .await
        .expect("lanes sync");
    append_users(store, "web", events).await;
    acquire(store, "hook", t0()).await.lease
}

/// A `job_state` row of dataset 1 for `event_id` of `source`: tried `attempt` times (the last
/// error `http_50<attempt>` when tried), next due an hour after `t0()`.
pub fn job_row(event_id: i64, source: &str, key: &str, state: JobState, attempt: i32) -> NewJobRow {
    let tried = attempt > 0;
    NewJobRow {
        dataset: 1,
        event_id,
        source_id: source.into(),
        order_key: key.into(),
        state,
        attempt,
        error_code: tried.then(|| format!("http_50{attempt}")),
        error_text: tried.then(|| "upstream said no".into()),
        first_attempt_at: tried.then(t0),
        last_attempt_at: tried.then(t0),
        next_attempt_at: t0() + secs(3600),
    }
}

/// Polls `count_sql` (a query returning a count) until it is above zero, and fails the test
/// after 10 s saying `what` never happened: a condition seen from the server, not a sleep.
pub async fn until_counted(pool: &sqlx::PgPool, count_sql: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql.to_owned()))
            .fetch_one(pool)
            .await
            .expect("counting");
        if n > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
