//! Maintenance DDL on partitions (datasets, dedup partitions).
//!
//! Partition names are built from integers only, so the statements are assembled as text. A
//! transaction that changes a parent table waits at most [`DDL_LOCK_TIMEOUT`] for its lock:
//! maintenance then gives up until its next pass instead of stalling ingest or delivery, which
//! queue behind a waiting exclusive lock.

use sqlx::{AssertSqlSafe, PgConnection};

use super::StoreError;

/// How long maintenance DDL waits for a lock before giving up until the next pass.
pub const DDL_LOCK_TIMEOUT: &str = "500ms";

/// Runs dynamic SQL (partition names are built from integers only).
pub(crate) async fn exec(
    conn: &mut PgConnection,
    sql: String,
    action: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx(action))?;
    Ok(())
}

/// Makes the rest of this transaction wait at most [`DDL_LOCK_TIMEOUT`] for a lock.
pub(crate) async fn lock_timeout(conn: &mut PgConnection) -> Result<(), StoreError> {
    exec(
        conn,
        format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"),
        "setting a lock timeout",
    )
    .await
}

/// A statement gave up waiting for a lock: the table is busy, try on the next pass.
pub(crate) fn is_lock_timeout(e: &StoreError) -> bool {
    matches!(e, StoreError::Query { source: sqlx::Error::Database(db), .. }
                if db.code().as_deref() == Some("55P03"))
}
