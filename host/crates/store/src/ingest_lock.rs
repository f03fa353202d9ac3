//! The ingest lock: a transaction-scoped advisory lock, one for the whole store.
//!
//! Every ingest transaction holds it from before it takes ids until it commits, so ids are
//! handed out in commit order and the ids a reader sees form a prefix (see `append`); it also
//! makes dedup's probe-then-insert safe. A dataset rotation holds it so that no write straddles
//! the rotation.

use sqlx::PgConnection;

use super::StoreError;

/// The advisory lock every ingest transaction (and every dataset rotation) holds.
pub const INGEST_LOCK: i64 = 0x736c_7569_6365_0001;

/// Takes the ingest lock for the rest of the transaction, waiting for the holder if any.
pub(crate) async fn take(conn: &mut PgConnection, action: &'static str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INGEST_LOCK)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx(action))?;
    Ok(())
}
