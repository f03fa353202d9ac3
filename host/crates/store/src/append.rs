//! Ingest's write: a group of HTTP requests appended to the event log in one transaction.
//!
//! Contract:
//! - The transaction holds the *ingest lock* (a transaction-scoped advisory lock) from before
//!   it takes ids until it commits. Ids are therefore handed out in commit order, across every
//!   host, and the ids a reader can see always form a prefix: a lane that has read up to id N
//!   never later finds an id below N appear. `ingest_head.last_id` is set in the same
//!   transaction, so a reader learns how far that prefix goes in the snapshot it reads in.
//! - Each request's accepted events get consecutive ids, in request order; requests of one
//!   group follow each other. Each event is written once, whatever number of destinations
//!   its source feeds (lanes read the log; nothing is fanned out at write time).
//! - Dedup: a (source, messageId) seen within the window is dropped, as is a repeat inside the
//!   group. The pair is kept as a 128-bit hash in `dedup_keys`, partitioned by ranges of
//!   minutes, one window long, that are dropped whole once older than the window (see
//!   `datasets`).
//! - Rows go in with binary COPY (no escaping, no per-row statements).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Store, StoreError};

/// The advisory lock every ingest transaction (and every dataset rotation) holds.
pub const INGEST_LOCK: i64 = 0x736c_7569_6365_0001;
/// The channel other hosts LISTEN on for new events.
pub const EVENTS_CHANNEL: &str = "sluice_events";

/// One validated event, ready to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub message_id: String,
    /// userId if non-empty, else anonymousId.
    pub user_key: String,
    /// The event as JSON text, as plugins will receive it.
    pub json: String,
}

/// One HTTP request's events.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub workspace_id: Arc<str>,
    pub source_id: Arc<str>,
    pub received_at: OffsetDateTime,
    pub events: Vec<NewEvent>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Events stored.
    pub accepted: usize,
    /// Events dropped as already seen within the dedup window.
    pub duplicates: usize,
    /// The ids of the accepted events: `first_id ..= first_id + accepted - 1`.
    pub first_id: Option<i64>,
}

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

impl Store {
    /// Appends a group of requests in one transaction; one outcome per request, in order.
    /// `notify` is the payload of a NOTIFY on [`EVENTS_CHANNEL`] sent at commit, if any.
    pub async fn event_append(
        &self,
        requests: &[&AppendRequest],
        dedup: Option<Dedup>,
        notify: Option<&str>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting the ingest transaction"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INGEST_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("taking the ingest lock"))?;

        // Which events are new: not seen in the window, and not repeated within the group.
        let dedup = dedup.filter(|d| !d.window.is_zero());
        let now_minute = minute_of(
            requests
                .first()
                .map_or_else(OffsetDateTime::now_utc, |r| r.received_at),
        );
        let hashes: Vec<Vec<Uuid>> = requests
            .iter()
            .map(|r| {
                r.events
                    .iter()
                    .map(|e| dedup_hash(&r.source_id, &e.message_id))
                    .collect()
            })
            .collect();
        // Repeats inside the group: the first one wins.
        let mut in_group: HashSet<Uuid> = HashSet::new();
        let mut keep: Vec<Vec<bool>> = hashes
            .iter()
            .map(|h| h.iter().map(|hash| in_group.insert(*hash)).collect())
            .collect();
        // Seen within the window: one probe per hash into the window's partitions, then the
        // new hashes go into the current one. The ingest lock makes probe-then-insert safe.
        // Each probe is forced to be an index lookup (a LIMIT 1 per hash): a planner with stale
        // statistics would otherwise scan whole partitions for a big group. The indexes are
        // hash indexes: the keys are random, and a random insert into a btree costs several
        // times more.
        if let Some(d) = dedup {
            super::datasets::dedup_partitions(&mut tx, now_minute, d).await?;
            let candidates: Vec<Uuid> = hashes
                .iter()
                .flatten()
                .zip(keep.iter().flatten())
                .filter(|(_, k)| **k)
                .map(|(h, _)| *h)
                .collect();
            let seen: HashSet<Uuid> = sqlx::query_scalar(
                "SELECT h FROM unnest($1::uuid[]) AS h,
                     LATERAL (SELECT 1 FROM dedup_keys d
                              WHERE d.hash = h AND d.bucket >= $2 LIMIT 1) x",
            )
            .bind(&candidates)
            .bind(now_minute.saturating_sub(d.window_minutes()))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("looking up dedup keys"))?
            .into_iter()
            .collect();
            let fresh: Vec<Uuid> = candidates
                .into_iter()
                .filter(|h| !seen.contains(h))
                .collect();
            sqlx::query("INSERT INTO dedup_keys (bucket, hash) SELECT $1, unnest($2::uuid[])")
                .bind(now_minute)
                .bind(&fresh)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx("recording dedup keys"))?;
            for (h, k) in hashes.iter().flatten().zip(keep.iter_mut().flatten()) {
                *k = *k && !seen.contains(h);
            }
        }
        let total: usize = keep.iter().flatten().filter(|k| **k).count();

        let mut outcomes = Vec::with_capacity(requests.len());
        if total > 0 {
            let row = sqlx::query(
                "WITH r AS (SELECT setval('event_id_seq', nextval('event_id_seq') + $1 - 1) AS last)
                 UPDATE ingest_head SET last_id = r.last FROM r
                 RETURNING r.last,
                     (SELECT dataset FROM datasets WHERE closed_at IS NULL
                      ORDER BY dataset DESC LIMIT 1) AS dataset",
            )
            .bind(total as i64)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx("reserving event ids"))?;
            let last: i64 = row.get("last");
            let dataset: Option<i32> = row.get("dataset");
            let dataset = dataset.ok_or_else(|| StoreError::Query {
                action: "finding the open dataset",
                source: sqlx::Error::RowNotFound,
            })?;
            let mut next_id = last - total as i64 + 1;

            let mut copy = CopyEncoder::new();
            for (request, keep) in requests.iter().zip(&keep) {
                let accepted = keep.iter().filter(|k| **k).count();
                outcomes.push(AppendOutcome {
                    accepted,
                    duplicates: request.events.len() - accepted,
                    first_id: (accepted > 0).then_some(next_id),
                });
                for (event, _) in request.events.iter().zip(keep).filter(|(_, k)| **k) {
                    copy.row(dataset, next_id, request, event);
                    next_id += 1;
                }
            }
            let mut sink = tx
                .copy_in_raw(
                    "COPY events (dataset, id, workspace_id, source_id, user_key, message_id,
                                  received_at, size, event) FROM STDIN (FORMAT binary)",
                )
                .await
                .map_err(StoreError::from_sqlx("starting the COPY of events"))?;
            sink.send(copy.finish())
                .await
                .map_err(StoreError::from_sqlx("sending events"))?;
            sink.finish()
                .await
                .map_err(StoreError::from_sqlx("finishing the COPY of events"))?;

            if let Some(payload) = notify {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENTS_CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx("notifying other hosts"))?;
            }
        } else {
            outcomes.extend(requests.iter().map(|r| AppendOutcome {
                accepted: 0,
                duplicates: r.events.len(),
                first_id: None,
            }));
        }
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the ingest transaction"))?;
        Ok(outcomes)
    }
}

/// Microseconds between the Unix epoch and Postgres' (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Builds a binary COPY stream for `events`.
struct CopyEncoder {
    buf: Vec<u8>,
}

impl CopyEncoder {
    fn new() -> CopyEncoder {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyEncoder { buf }
    }

    fn row(&mut self, dataset: i32, id: i64, request: &AppendRequest, event: &NewEvent) {
        self.buf.extend_from_slice(&9i16.to_be_bytes());
        self.field(&dataset.to_be_bytes());
        self.field(&id.to_be_bytes());
        self.field(request.workspace_id.as_bytes());
        self.field(request.source_id.as_bytes());
        self.field(event.user_key.as_bytes());
        self.field(event.message_id.as_bytes());
        let micros = (request.received_at.unix_timestamp_nanos() / 1000) as i64 - PG_EPOCH_MICROS;
        self.field(&micros.to_be_bytes());
        let size = i32::try_from(event.json.len()).unwrap_or(i32::MAX);
        self.field(&size.to_be_bytes());
        self.field(event.json.as_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
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
