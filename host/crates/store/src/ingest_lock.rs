//! The ingest locks: transaction-scoped advisory locks, one per workspace, under one store-wide
//! lock taken shared.
//!
//! Every ingest transaction takes the store-wide lock in shared mode, then the lock of each
//! workspace it writes to (in key order, so two transactions never wait for each other in a
//! cycle), and holds them until it commits. So:
//! - within a workspace, ids are handed out in commit order and the ids a reader of that
//!   workspace sees always form a prefix (see `append`); `workspace_heads` says how far;
//! - two workspaces never wait for each other (the shared lock does not exclude);
//! - dedup's probe-then-insert is safe: a key belongs to one source, so to one workspace.
//!
//! A dataset rotation takes the store-wide lock exclusively: it waits for the ingest in flight
//! and holds new ingest back, so no write straddles the rotation.
//!
//! Under Citus the advisory locks live on the coordinator, where every write goes through.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::StoreError;

/// The store-wide lock: shared by ingest transactions, exclusive for a dataset rotation.
pub const INGEST_LOCK: i64 = 0x736c_7569_6365_0001;

/// Creating a dedup partition: one transaction at a time (ingest of several workspaces runs
/// at once).
pub const DEDUP_DDL_LOCK: i64 = 0x736c_7569_6365_0002;

/// The advisory lock key of a workspace's ingest: a hash of its id (a collision only makes two
/// workspaces share a lock, never breaks the order).
pub fn workspace_key(workspace_id: &str) -> i64 {
    let digest = Sha256::digest(format!("sluice-ingest:{workspace_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The lock keys of `workspaces`, in the order they are taken (sorted, each once).
pub(crate) fn lock_keys(workspaces: &[&str]) -> Vec<i64> {
    let mut keys: Vec<i64> = workspaces.iter().map(|w| workspace_key(w)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Takes the locks an ingest transaction into `workspaces` needs, waiting for their holders.
pub(crate) async fn take_for_ingest(
    conn: &mut PgConnection,
    workspaces: &[&str],
) -> Result<(), StoreError> {
    let keys = lock_keys(workspaces);
    // The shared lock first, in a statement of its own: a transaction that held a workspace's
    // lock while queued behind a rotation would close a cycle with the rotation.
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(INGEST_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("taking the store-wide ingest lock"))?;
    // The subquery's ORDER BY feeds the aggregate in key order: the locks are taken in it.
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k))
         FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS s",
    )
    .bind(&keys)
    .execute(conn)
    .await
    .map_err(StoreError::from_sqlx("taking the workspaces' ingest locks"))?;
    Ok(())
}

/// Takes the store-wide lock exclusively (a dataset rotation), waiting for all ingest.
pub(crate) async fn take_exclusive(
    conn: &mut PgConnection,
    action: &'static str,
) -> Result<(), StoreError> {
    take(conn, INGEST_LOCK, action).await
}

/// Takes the lock `key` exclusively for the rest of the transaction.
pub(crate) async fn take(
    conn: &mut PgConnection,
    key: i64,
    action: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx(action))?;
    Ok(())
}
