//! docs/sql.md: every SQL block on the page runs, against a store with failed, parked and
//! aborted jobs, so the operator documentation cannot go stale.

use libtest_mimic::Trial;
use sluice_store::{JobState, LaneCommit, NewJobRow};

use crate::fixtures::*;
use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![trial("sql_docs_every_query_runs", every_query_runs)]
}

/// The ```sql blocks of a markdown page, in order.
fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

async fn every_query_runs(db: Db) {
    // Key a: failed head 1, parked 3; key c: failed head 4. An aborted job 5.
    let lease = hook_with_events(
        &db.store,
        &[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("d", "5")],
    )
    .await;
    let row = |event_id: i64, key: &str, state: JobState| NewJobRow {
        dataset: 1,
        event_id,
        source_id: "web".into(),
        order_key: key.into(),
        state,
        attempt: i32::from(state != JobState::Pending),
        error_code: (state != JobState::Pending).then(|| "http_500".into()),
        error_text: (state != JobState::Pending).then(|| "boom".into()),
        first_attempt_at: Some(t0()),
        last_attempt_at: Some(t0()),
        next_attempt_at: t0() + secs(60),
    };
    db.store
        .lane_commit(&LaneCommit {
            lease,
            now: t0(),
            lease_ttl: TTL,
            cursor: 5,
            claimed_to: 5,
            new_rows: vec![
                row(1, "a", JobState::Failed),
                row(3, "a", JobState::Pending),
                row(4, "c", JobState::Failed),
                row(5, "d", JobState::Aborted),
            ],
            row_updates: vec![],
            block_keys: vec![("a".into(), t0() + secs(60)), ("c".into(), t0() + secs(60))],
            ensure_keys: vec![],
            check_keys: vec![],
        })
        .await
        .unwrap();

    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../docs/sql.md"))
            .expect("read docs/sql.md");
    let blocks = sql_blocks(&page);
    assert!(
        blocks.len() >= 10,
        "the ten queries: {} blocks",
        blocks.len()
    );
    for block in blocks {
        // The page is this repository's own text.
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(block.clone()))
            .execute(&db.pool)
            .await;
        if let Err(e) = result {
            panic!("docs/sql.md block fails: {e}\n{block}");
        }
    }
    // The blocks did what the page says, in order: retried, aborted 4, replayed it, paused
    // and resumed.
    let actions: Vec<(String, i32)> =
        // In time order, as the page reads it (on Citus, ids are unique but not in time order).
        sqlx::query_as("SELECT action, jobs FROM operator_audit ORDER BY at, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        vec![
            ("retry_now".into(), 1),
            ("retry_now".into(), 2),
            ("abort".into(), 1),
            ("replay".into(), 1),
            ("pause".into(), 0),
            ("resume".into(), 0)
        ]
    );
}
