//! Ingest's write: dedup, fan-out and job creation for one HTTP batch, in one transaction.
//!
//! Ids come from `job_id_seq`, reserved up front and handed out in batch order, so the events of
//! one user inside a batch get increasing ids (id order is delivery order). Each resulting job
//! is one `jobs` row plus one `job_state` row; nothing is visible to the router before commit.

use std::collections::HashSet;

use sqlx::Row;

use super::{Store, StoreError};

/// One validated event of a batch, ready to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub message_id: String,
    pub ordering_key: String,
    /// The event as JSON text (what plugins receive).
    pub event_json: String,
}

/// What a batch insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Events that were new for this source.
    pub accepted: usize,
    /// Events dropped because their messageId was seen before within the dedup window.
    pub duplicates: usize,
    /// Jobs created (accepted events × destinations).
    pub jobs: usize,
}

impl Store {
    /// Stores a batch for `source_id`, fanning each new event out to `destinations`.
    pub async fn job_insert_many(
        &self,
        workspace_id: &str,
        source_id: &str,
        destinations: &[String],
        events: Vec<NewEvent>,
    ) -> Result<InsertOutcome, StoreError> {
        let total = events.len();
        // A batch may repeat a messageId itself (client retry glitches): keep the first.
        let mut seen = HashSet::with_capacity(total);
        let events: Vec<NewEvent> = events
            .into_iter()
            .filter(|e| seen.insert(e.message_id.clone()))
            .collect();

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting the ingest transaction"))?;

        let message_ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
        let fresh: HashSet<String> = sqlx::query(
            "INSERT INTO dedup_keys (source_id, message_id)
             SELECT $1, m FROM UNNEST($2::text[]) AS m
             ON CONFLICT DO NOTHING
             RETURNING message_id",
        )
        .bind(source_id)
        .bind(&message_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("recording dedup keys"))?
        .into_iter()
        .map(|row| row.get::<String, _>(0))
        .collect();

        let accepted: Vec<&NewEvent> = events
            .iter()
            .filter(|e| fresh.contains(&e.message_id))
            .collect();
        let job_count = accepted.len() * destinations.len();

        if job_count > 0 {
            let mut ids: Vec<i64> =
                sqlx::query_scalar("SELECT nextval('job_id_seq') FROM generate_series(1, $1)")
                    .bind(job_count as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx("reserving job ids"))?;
            ids.sort_unstable();

            let mut dests = Vec::with_capacity(job_count);
            let mut keys = Vec::with_capacity(job_count);
            let mut msgs = Vec::with_capacity(job_count);
            let mut bodies = Vec::with_capacity(job_count);
            for event in &accepted {
                for dest in destinations {
                    dests.push(dest.as_str());
                    keys.push(event.ordering_key.as_str());
                    msgs.push(event.message_id.as_str());
                    bodies.push(event.event_json.as_str());
                }
            }
            sqlx::query(
                "WITH j AS (
                    INSERT INTO jobs (id, workspace_id, source_id, destination_id, ordering_key,
                                      message_id, event)
                    SELECT u.id, $1, $2, u.dest, u.key, u.msg, u.event::jsonb
                    FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
                         AS u(id, dest, key, msg, event)
                    RETURNING id, destination_id, ordering_key)
                 INSERT INTO job_state (job_id, destination_id, ordering_key)
                 SELECT id, destination_id, ordering_key FROM j",
            )
            .bind(workspace_id)
            .bind(source_id)
            .bind(&ids)
            .bind(&dests)
            .bind(&keys)
            .bind(&msgs)
            .bind(&bodies)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("inserting jobs"))?;
        }

        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the ingest transaction"))?;
        Ok(InsertOutcome {
            accepted: accepted.len(),
            duplicates: total - accepted.len(),
            jobs: job_count,
        })
    }
}
