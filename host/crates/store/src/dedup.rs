//! Dedup keys: a (source, messageId) seen within the dedup window is a duplicate.
//!
//! The pair is kept as a 128-bit hash ([`dedup_hash`]) in `dedup_keys`, partitioned by ranges
//! of minutes ([`minute_of`]), one window long, with the workspace it belongs to (the column a
//! sharded store distributes it by). Ingest probes and inserts under its workspace's ingest
//! lock, which makes probe-then-insert safe (a key belongs to one source, so one workspace),
//! and creates the partition it writes to under a lock of its own; maintenance drops a partition whole once all of it is older than the window
//! ([`Store::dedup_expire`]). Keys therefore live between one and two windows, and none is ever
//! deleted row by row.

use std::collections::HashSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::ddl::{self, exec};
use super::{Store, StoreError, ingest_lock};

/// Dedup settings for a write.
#[derive(Debug, Clone, Copy)]
pub struct Dedup {
    /// A messageId seen this long ago or less is a duplicate. Zero turns dedup off.
    pub window: Duration,
}

impl Dedup {
    /// Minutes per dedup partition: one window, so that a lookup touches at most the current
    /// partition and the one before (a partition is dropped once all of it is older than the
    /// window, so keys live between one and two windows).
    pub fn partition_minutes(&self) -> i32 {
        self.window_minutes().max(1)
    }

    pub fn window_minutes(&self) -> i32 {
        (self.window.as_secs().div_ceil(60)).min(i32::MAX as u64) as i32
    }

    /// The oldest minute (bucket) still within the window of a write at `minute`: a key
    /// recorded in it or later is a duplicate.
    pub fn oldest_minute(&self, minute: i32) -> i32 {
        minute.saturating_sub(self.window_minutes())
    }
}

/// Minutes since the Unix epoch: the dedup partition key.
pub fn minute_of(t: OffsetDateTime) -> i32 {
    (t.unix_timestamp().div_euclid(60)).clamp(0, i32::MAX as i64) as i32
}

/// The 128-bit dedup hash of (source, messageId).
pub fn dedup_hash(source_id: &str, message_id: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(source_id.as_bytes());
    h.update([0u8]);
    h.update(message_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// How the dedup probe is written for the database at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DedupProbe {
    /// Plain PostgreSQL: one index lookup per key (a LIMIT 1 in a lateral join), which also
    /// finds the keys recorded before they carried their workspace (`''`, migration 0012).
    /// It runs inside `sluice_ingest_prepare` (migration 0015) with the rest of ingest's
    /// statements.
    PerKey,
    /// Citus: it cannot push a LIMIT inside a lateral join over an array down to the shards,
    /// so one query per shard, filtered on the group's workspaces (each shard's planner sees
    /// its own small partition, not a stale estimate of the whole); [`dedup_keys_check`].
    /// Keys without a workspace are looked for only while some may be in the window
    /// (`legacy_until`, their newest bucket, read once at connect): the shard of `''` sits on
    /// one worker, and probing it would make every workspace's ingest depend on that worker
    /// being up.
    PerShard { legacy_until: Option<i32> },
}

impl DedupProbe {
    /// The probe for `pool`'s database: `PerShard` when the schema is distributed.
    pub(crate) async fn detect(
        pool: &sqlx::PgPool,
        distributed: bool,
    ) -> Result<DedupProbe, StoreError> {
        if !distributed {
            return Ok(DedupProbe::PerKey);
        }
        let legacy_until: Option<i32> =
            sqlx::query_scalar("SELECT max(bucket) FROM dedup_keys WHERE workspace_id = ''")
                .fetch_one(pool)
                .await
                .map_err(StoreError::from_sqlx(
                    "looking for dedup keys without a workspace",
                ))?;
        Ok(DedupProbe::PerShard { legacy_until })
    }
}

/// Of `candidates`, the hashes seen within the window; the others are recorded in the
/// partition of `minute`. The caller holds the ingest lock, which makes probe-then-insert safe.
/// The per-shard probe of Citus ([`DedupProbe::PerShard`]; plain PostgreSQL probes inside
/// `sluice_ingest_prepare`).
///
/// The indexes are hash indexes: the keys are random, and a random insert into a btree costs
/// several times more.
pub(crate) async fn dedup_keys_check(
    conn: &mut PgConnection,
    minute: i32,
    dedup: Dedup,
    candidates: Vec<(&str, Uuid)>,
    legacy_until: Option<i32>,
) -> Result<HashSet<Uuid>, StoreError> {
    dedup_partition_ensure(conn, minute, dedup).await?;
    let (workspaces, hashes): (Vec<&str>, Vec<Uuid>) = candidates.into_iter().unzip();
    let oldest = dedup.oldest_minute(minute);
    // The workspaces to look in, and `''` while keys without one may be in the window.
    let mut probed = workspaces.clone();
    if legacy_until.is_some_and(|l| l >= oldest) {
        probed.push("");
    }
    let seen: HashSet<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT d.hash FROM dedup_keys d
         WHERE d.workspace_id = ANY ($1::text[])
           AND d.hash = ANY ($2::uuid[]) AND d.bucket >= $3",
    )
    .bind(&probed)
    .bind(&hashes)
    .bind(oldest)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("looking up dedup keys"))?
    .into_iter()
    .collect();
    let (workspaces, hashes): (Vec<&str>, Vec<Uuid>) = workspaces
        .into_iter()
        .zip(hashes)
        .filter(|(_, h)| !seen.contains(h))
        .unzip();
    sqlx::query(
        "INSERT INTO dedup_keys (bucket, workspace_id, hash)
         SELECT $1, * FROM unnest($2::text[], $3::uuid[])",
    )
    .bind(minute)
    .bind(&workspaces)
    .bind(&hashes)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("recording dedup keys"))?;
    Ok(seen)
}

/// Makes sure a dedup partition covers `minute`. Ingest of several workspaces runs at once, so
/// the one that creates a partition takes `DEDUP_DDL_LOCK` and looks again under it (a
/// statement sees what committed before it started).
pub(crate) async fn dedup_partition_ensure(
    conn: &mut PgConnection,
    minute: i32,
    dedup: Dedup,
) -> Result<(), StoreError> {
    if dedup_partition_end(conn, minute).await?.is_some() {
        return Ok(());
    }
    ingest_lock::take(
        conn,
        ingest_lock::DEDUP_DDL_LOCK,
        "taking the dedup partition lock",
    )
    .await?;
    if dedup_partition_end(conn, minute).await?.is_none() {
        dedup_partition_create(conn, minute, dedup).await?;
    }
    Ok(())
}

/// Where the dedup partition that covers `minute` ends (its `hi`), if there is one.
async fn dedup_partition_end(
    conn: &mut PgConnection,
    minute: i32,
) -> Result<Option<i32>, StoreError> {
    sqlx::query_scalar("SELECT hi FROM dedup_buckets WHERE lo <= $1 AND hi > $1")
        .bind(minute)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("finding the dedup partition"))
}

async fn dedup_partition_create(
    conn: &mut PgConnection,
    minute: i32,
    dedup: Dedup,
) -> Result<(), StoreError> {
    // Partitions never overlap: this one starts at `minute` (nothing covers it) and ends
    // before the next partition above it, if any.
    let next_lo: Option<i32> =
        sqlx::query_scalar("SELECT min(lo) FROM dedup_buckets WHERE lo > $1")
            .bind(minute)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from_sqlx("finding the next dedup partition"))?;
    let lo = minute;
    let hi = lo
        .saturating_add(dedup.partition_minutes())
        .min(next_lo.unwrap_or(i32::MAX));
    exec(
        conn,
        format!("CREATE TABLE dedup_keys_m{lo} (LIKE dedup_keys)"),
        "creating a dedup partition",
    )
    .await?;
    exec(
        conn,
        format!("CREATE INDEX ON dedup_keys_m{lo} USING hash (hash)"),
        "indexing a dedup partition",
    )
    .await?;
    exec(
        conn,
        format!("ALTER TABLE dedup_keys ATTACH PARTITION dedup_keys_m{lo} FOR VALUES FROM ({lo}) TO ({hi})"),
        "attaching a dedup partition",
    )
    .await?;
    sqlx::query("INSERT INTO dedup_buckets (lo, hi) VALUES ($1, $2)")
        .bind(lo)
        .bind(hi)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("recording a dedup partition"))?;
    Ok(())
}

impl Store {
    /// Creates the dedup partition that follows the one `now` falls in, if it is not there
    /// (maintenance): the next partition is always ready a whole window ahead. Ingest then
    /// needs no DDL at a partition boundary: on one PostgreSQL that DDL pauses every
    /// workspace's ingest, and on Citus it runs on every worker, so with one worker down no
    /// workspace could ingest past the boundary; now only an outage longer than the window
    /// meets one. Ingest still creates a partition when none covers its minute (after an idle
    /// spell). Returns whether it created one.
    pub async fn dedup_prepare(
        &self,
        dedup: Dedup,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::from_sqlx("connecting"))?;
        let Some(end) = dedup_partition_end(&mut conn, minute_of(now)).await? else {
            return Ok(false);
        };
        if dedup_partition_end(&mut conn, end).await?.is_some() {
            return Ok(false);
        }
        let mut tx = sqlx::Acquire::begin(&mut *conn)
            .await
            .map_err(StoreError::from_sqlx("starting a dedup partition"))?;
        ddl::lock_timeout(&mut tx).await?;
        match dedup_partition_ensure(&mut tx, end, dedup).await {
            Ok(()) => {}
            // Ingest holds the parent table: the next pass tries again.
            Err(e) if ddl::is_lock_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a dedup partition"))?;
        Ok(true)
    }

    /// Drops dedup partitions whose newest minute is older than the window, deletes the
    /// `dedup_groups` rows older than it, and drops this host's memory of them. Returns how
    /// many partitions it dropped.
    pub async fn dedup_expire(
        &self,
        dedup: Dedup,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let oldest_kept = dedup.oldest_minute(minute_of(now));
        let expired: Vec<i32> =
            sqlx::query_scalar("SELECT lo FROM dedup_buckets WHERE hi <= $1 ORDER BY lo")
                .bind(oldest_kept)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::from_sqlx("listing dedup partitions"))?;
        let mut dropped = 0;
        for lo in expired {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(StoreError::from_sqlx("starting a dedup expiry"))?;
            ddl::lock_timeout(&mut tx).await?;
            let done = async {
                exec(
                    &mut tx,
                    format!("DROP TABLE IF EXISTS dedup_keys_m{lo}"),
                    "dropping a dedup partition",
                )
                .await?;
                sqlx::query("DELETE FROM dedup_buckets WHERE lo = $1")
                    .bind(lo)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx("forgetting a dedup partition"))?;
                Ok::<_, StoreError>(())
            }
            .await;
            match done {
                Ok(()) => {}
                Err(e) if ddl::is_lock_timeout(&e) => break,
                Err(e) => return Err(e),
            }
            tx.commit()
                .await
                .map_err(StoreError::from_sqlx("committing a dedup expiry"))?;
            dropped += 1;
        }
        // This host's memory of them too (a workspace's own writes sweep only its keys).
        self.dedup_memory.expire(oldest_kept);
        // The keys recorded a group at a time (`dedup_memory`): a row per group, not per key,
        // so deleting them is cheap. Not on Citus, where the table stays empty: a multi-shard
        // DELETE would need every worker at every maintenance pass.
        if self.distributed {
            return Ok(dropped);
        }
        sqlx::query("DELETE FROM dedup_groups WHERE bucket < $1")
            .bind(oldest_kept)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("expiring dedup groups"))?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_hash_separates_source_and_message() {
        assert_ne!(dedup_hash("a", "bc"), dedup_hash("ab", "c"));
        assert_eq!(dedup_hash("web", "m1"), dedup_hash("web", "m1"));
    }

    #[test]
    fn a_partition_spans_one_window() {
        let d = Dedup {
            window: Duration::from_secs(3600),
        };
        assert_eq!(d.partition_minutes(), 60);
        assert_eq!(d.window_minutes(), 60);
        let tiny = Dedup {
            window: Duration::from_secs(30),
        };
        assert_eq!(tiny.partition_minutes(), 1);
        assert_eq!(tiny.window_minutes(), 1);
    }
}
