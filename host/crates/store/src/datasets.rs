//! Datasets: how the log stays small. Nothing is ever deleted row by row.
//!
//! - **Rotation** closes the open dataset once it is full (events or bytes) or old, and opens
//!   the next: new partitions `events_ds_N`, `job_state_ds_N` and `job_attempts_ds_N` are
//!   created and attached (which does not block readers or writers), under the ingest lock so
//!   that no write straddles it.
//! - **Retirement** of a closed dataset, once every live lane's cursor is past its last id
//!   and it closed at least `retain` ago (kept for backfill, see docs/catalog.md):
//!   with no unfinished job (and no aborted job younger than the retention) it is dropped
//!   whole; with only a few, those jobs and their events are first moved into the open
//!   dataset (same ids, so order is kept), with their attempt history, then it is dropped.
//!
//! (Dedup partitions, the other thing maintenance drops whole, are `dedup`'s.)
//!
//! Every step is one transaction, so a crash leaves each dataset either as it was or fully
//! rotated, moved or dropped; the next maintenance pass carries on. DDL that needs an exclusive
//! lock on a parent table waits at most [`DDL_LOCK_TIMEOUT`] and is retried on the next pass,
//! so that maintenance never stalls ingest or delivery for long (see `ddl`).

use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

pub use super::ddl::DDL_LOCK_TIMEOUT;
use super::ddl::{self, exec};
use super::{Store, StoreError, ingest_lock};

pub use sluice_core::DatasetPolicy;

/// What a maintenance pass did to one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetChange {
    Rotated { closed: i32, opened: i32 },
    Dropped { dataset: i32 },
    Compacted { dataset: i32, into: i32, jobs: i64 },
}

/// A step of a rotation or retirement after which a test may abandon the transaction, to check
/// that an interrupted step leaves the store consistent. Production passes `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    /// Rotation: after creating and attaching the new partitions.
    RotationPartitions,
    /// Rotation: after closing the old dataset row.
    RotationClose,
    /// Compaction: after copying the events forward.
    CompactionEvents,
    /// Compaction: after copying the job rows forward.
    CompactionJobs,
    /// Retirement: after dropping the partitions.
    Drop,
}

/// Abandons a transaction at a step (dropping it rolls it back), for tests.
fn stop_here(stop: Option<StopAfter>, step: StopAfter) -> Result<(), StoreError> {
    if stop == Some(step) {
        return Err(StoreError::Query {
            action: "a test interruption",
            source: sqlx::Error::Protocol(format!("stopped after {step:?}")),
        });
    }
    Ok(())
}

impl Store {
    /// Rotates the open dataset if it is due. Returns the change, if any.
    pub async fn dataset_rotate(
        &self,
        policy: &DatasetPolicy,
        now: OffsetDateTime,
        stop: Option<StopAfter>,
    ) -> Result<Option<DatasetChange>, StoreError> {
        let row = sqlx::query(
            "SELECT d.dataset, d.created_at, d.first_id, h.last_id AS head,
                    pg_total_relation_size(format('events_ds_%s', d.dataset)::regclass) AS bytes
             FROM datasets d, ingest_head h
             WHERE d.closed_at IS NULL ORDER BY d.dataset DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("inspecting the open dataset"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let open: i32 = row.get("dataset");
        let created: OffsetDateTime = row.get("created_at");
        let events = row.get::<i64, _>("head") - row.get::<i64, _>("first_id") + 1;
        let bytes: i64 = row.get("bytes");
        let age = now - created;
        let due = events > 0
            && (events >= policy.max_events
                || bytes >= policy.max_bytes
                || age >= time::Duration::try_from(policy.max_age).unwrap_or(time::Duration::MAX));
        if !due {
            return Ok(None);
        }

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a rotation"))?;
        ddl::lock_timeout(&mut tx).await?;
        ingest_lock::take_exclusive(&mut tx, "taking the ingest lock for a rotation").await?;
        // Under the lock: nothing is being written, and nobody else rotates.
        let still_open: Option<i32> = sqlx::query_scalar(
            "SELECT dataset FROM datasets WHERE closed_at IS NULL ORDER BY dataset DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("re-reading the open dataset"))?;
        if still_open != Some(open) {
            return Ok(None);
        }
        let next = open + 1;
        for table in ["events", "job_state", "job_attempts"] {
            exec(
                &mut tx,
                format!("CREATE TABLE {table}_ds_{next} (LIKE {table} INCLUDING DEFAULTS)"),
                "creating a dataset partition",
            )
            .await?;
            exec(
                &mut tx,
                format!(
                    "ALTER TABLE {table} ATTACH PARTITION {table}_ds_{next} \
                     FOR VALUES FROM ({next}) TO ({})",
                    next + 1
                ),
                "attaching a dataset partition",
            )
            .await?;
        }
        stop_here(stop, StopAfter::RotationPartitions)?;
        let head: i64 = sqlx::query_scalar(
            "UPDATE datasets SET closed_at = $2, last_id = (SELECT last_id FROM ingest_head)
             WHERE dataset = $1 RETURNING last_id",
        )
        .bind(open)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("closing a dataset"))?;
        stop_here(stop, StopAfter::RotationClose)?;
        sqlx::query("INSERT INTO datasets (dataset, created_at, first_id) VALUES ($1, $2, $3)")
            .bind(next)
            .bind(now)
            .bind(head + 1)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("opening a dataset"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a rotation"))?;
        Ok(Some(DatasetChange::Rotated {
            closed: open,
            opened: next,
        }))
    }

    /// Drops or compacts every closed dataset that is finished.
    pub async fn dataset_retire(
        &self,
        policy: &DatasetPolicy,
        now: OffsetDateTime,
        stop: Option<StopAfter>,
    ) -> Result<Vec<DatasetChange>, StoreError> {
        let closed: Vec<(i32, i64, OffsetDateTime)> = sqlx::query_as(
            "SELECT dataset, last_id, closed_at FROM datasets
             WHERE closed_at IS NOT NULL ORDER BY dataset",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("listing closed datasets"))?;
        let keep_aborted_since =
            now - time::Duration::try_from(policy.aborted_retention).unwrap_or(time::Duration::MAX);
        // A retention too long to subtract keeps everything.
        let retained_since = time::Duration::try_from(policy.retain)
            .ok()
            .and_then(|d| now.checked_sub(d))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut changes = Vec::new();
        for (dataset, last_id, closed_at) in closed {
            // Datasets close in order: once one is retained, so is every later one.
            if closed_at > retained_since {
                break;
            }
            // Cursors only move forward: once a lane is short of this dataset, it is short of
            // every later one too.
            let lanes_past: bool = sqlx::query_scalar(
                // A lane is past the dataset when it has read every event of its workspace
                // in it: up to the dataset's last id, or to its workspace's head if that is
                // lower (a quiet workspace's lanes stay at its own head).
                "SELECT coalesce(bool_and(l.cursor >= least($1, coalesce(h.last_id, 0))), true)
                 FROM lanes l LEFT JOIN workspace_heads h ON h.workspace_id = l.workspace_id
                 WHERE l.retired_at IS NULL",
            )
            .bind(last_id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("checking lane cursors"))?;
            if !lanes_past {
                break;
            }
            let live: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM job_state_ds_{dataset}
                 WHERE state IN ('pending', 'failed') OR (state = 'aborted' AND updated_at > $1)"
            )))
            .bind(keep_aborted_since)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("counting live jobs of a dataset"))?;
            if live > policy.compact_below {
                continue;
            }
            match self
                .dataset_drop_or_compact(dataset, live, keep_aborted_since, stop)
                .await
            {
                Ok(change) => changes.extend(change),
                // A busy table (lock timeout): try again on the next pass.
                Err(e) if ddl::is_lock_timeout(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(changes)
    }

    async fn dataset_drop_or_compact(
        &self,
        dataset: i32,
        live: i64,
        keep_aborted_since: OffsetDateTime,
        stop: Option<StopAfter>,
    ) -> Result<Option<DatasetChange>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting a dataset retirement"))?;
        ddl::lock_timeout(&mut tx).await?;
        // Another host's maintenance may be at the same dataset: the first one wins.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT dataset FROM datasets WHERE dataset = $1 FOR UPDATE")
                .bind(dataset)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx("locking a dataset row"))?;
        if exists.is_none() {
            return Ok(None);
        }
        // Writers of these rows (lane commits) wait for us, then find them moved.
        exec(
            &mut tx,
            format!(
                "LOCK TABLE job_state_ds_{dataset}, events_ds_{dataset}, \
                 job_attempts_ds_{dataset} IN EXCLUSIVE MODE"
            ),
            "locking a dataset",
        )
        .await?;
        let mut change = DatasetChange::Dropped { dataset };
        if live > 0 {
            // Pins the open dataset: a rotation waits for this move.
            let into: i32 = sqlx::query_scalar(
                "SELECT dataset FROM datasets WHERE closed_at IS NULL
                 ORDER BY dataset DESC LIMIT 1 FOR SHARE",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("finding the open dataset"))?;
            let keep =
                "(s.state IN ('pending', 'failed') OR (s.state = 'aborted' AND s.updated_at > $1))";
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO events (dataset, id, workspace_id, source_id, user_key, message_id,
                                     received_at, size, event)
                 SELECT {into}, e.id, e.workspace_id, e.source_id, e.user_key, e.message_id,
                        e.received_at, e.size, e.event
                 FROM events_ds_{dataset} e
                 WHERE EXISTS (SELECT 1 FROM job_state_ds_{dataset} s
                               WHERE s.workspace_id = e.workspace_id AND s.event_id = e.id
                                 AND {keep})"
            )))
            .bind(keep_aborted_since)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("moving events forward"))?;
            stop_here(stop, StopAfter::CompactionEvents)?;
            let moved = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO job_state (dataset, workspace_id, destination_id, event_id, source_id,
                     order_key, state, attempt, error_code, error_text, first_attempt_at,
                     last_attempt_at, next_attempt_at, updated_at)
                 SELECT {into}, s.workspace_id, s.destination_id, s.event_id, s.source_id,
                        s.order_key, s.state, s.attempt, s.error_code, s.error_text,
                        s.first_attempt_at, s.last_attempt_at, s.next_attempt_at, s.updated_at
                 FROM job_state_ds_{dataset} s WHERE {keep}"
            )))
            .bind(keep_aborted_since)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("moving jobs forward"))?;
            // Their attempts go with them: the history of a job that is still live (or a
            // retained aborted one) must stay readable after the move.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO job_attempts (dataset, workspace_id, destination_id, event_id,
                     attempt, at, outcome, error_code, error_text)
                 SELECT {into}, a.workspace_id, a.destination_id, a.event_id, a.attempt, a.at,
                        a.outcome, a.error_code, a.error_text
                 FROM job_attempts_ds_{dataset} a
                 WHERE EXISTS (SELECT 1 FROM job_state_ds_{dataset} s
                               WHERE s.workspace_id = a.workspace_id
                                 AND s.destination_id = a.destination_id
                                 AND s.event_id = a.event_id AND {keep})"
            )))
            .bind(keep_aborted_since)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("moving job attempts forward"))?;
            stop_here(stop, StopAfter::CompactionJobs)?;
            change = DatasetChange::Compacted {
                dataset,
                into,
                jobs: moved.rows_affected() as i64,
            };
        }
        exec(
            &mut tx,
            format!(
                "DROP TABLE events_ds_{dataset}, job_state_ds_{dataset}, job_attempts_ds_{dataset}"
            ),
            "dropping a dataset",
        )
        .await?;
        stop_here(stop, StopAfter::Drop)?;
        sqlx::query("DELETE FROM datasets WHERE dataset = $1")
            .bind(dataset)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("forgetting a dataset"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing a dataset retirement"))?;
        Ok(Some(change))
    }
}
