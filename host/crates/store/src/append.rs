//! Ingest's write: a group of HTTP requests appended to the event log in one transaction.
//!
//! Contract:
//! - The transaction holds the ingest lock of every workspace it writes to (`ingest_lock`)
//!   from before it takes ids until it commits. Within a workspace, ids are therefore handed
//!   out in commit order, across every host, and the ids a reader of the workspace can see
//!   always form a prefix: a lane that has read up to id N never later finds an id below N
//!   appear. `workspace_heads.last_id` is set in the same transaction, so a reader learns how
//!   far that prefix goes in the snapshot it reads in. Two workspaces never wait for each
//!   other: their ids interleave, and each workspace's are in its own commit order.
//! - Each request's accepted events get increasing ids, in request order (consecutive unless
//!   another workspace's transaction took ids at the same moment); requests of one group
//!   follow each other. Each event is written once, whatever number of destinations its
//!   source feeds (lanes read the log; nothing is fanned out at write time).
//! - Dedup: a (source, messageId) seen within the window is dropped, as is a repeat inside the
//!   group (see `dedup`).
//! - Rows go in with binary COPY (no escaping, no per-row statements).
//!
//! The steps, in one transaction:
//! 1. take the ingest locks (the store-wide one shared, the workspaces' exclusive);
//! 2. find the new events: drop repeats inside the group, then those seen within the window
//!    (recording the others);
//! 3. if any event is left: take its ids, move the workspaces' heads, and find the open
//!    dataset;
//! 4. COPY the events into the log;
//! 5. NOTIFY the other hosts, if asked;
//! 6. commit.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::dedup::{self, Dedup, dedup_hash, minute_of};
use super::{Store, StoreError, ingest_lock, notify};

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Events stored.
    pub accepted: usize,
    /// Events dropped as already seen within the dedup window.
    pub duplicates: usize,
    /// The ids of the accepted events, in request order (increasing).
    pub ids: Vec<i64>,
}

impl AppendOutcome {
    /// The id of the request's first accepted event.
    pub fn first_id(&self) -> Option<i64> {
        self.ids.first().copied()
    }
}

impl Store {
    /// Appends a group of requests in one transaction; one outcome per request, in order.
    /// `notify` is the payload of a NOTIFY on [`notify::EVENTS_CHANNEL`] sent at commit, if any.
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
        let workspaces: Vec<&str> = requests.iter().map(|r| &*r.workspace_id).collect();
        ingest_lock::take_for_ingest(&mut tx, &workspaces).await?;
        let keep = events_new(&mut tx, requests, dedup, self.dedup_probe).await?;
        let total: usize = keep.iter().flatten().filter(|k| **k).count();
        let outcomes = if total > 0 {
            let (ids, dataset) = ids_take(&mut tx, total).await?;
            let given = outcomes(requests, &keep, &ids);
            heads_move(&mut tx, requests, &given).await?;
            events_copy(&mut tx, requests, &keep, &given, dataset).await?;
            if let Some(payload) = notify {
                notify::notify(&mut *tx, payload, "notifying other hosts").await?;
            }
            given
        } else {
            outcomes(requests, &keep, &[])
        };
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the ingest transaction"))?;
        Ok(outcomes)
    }
}

/// Step 2: which events are new, per request and event: not repeated earlier in the group
/// (the first one wins), and not seen within the dedup window, if there is one.
async fn events_new(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    probe: dedup::DedupProbe,
) -> Result<Vec<Vec<bool>>, StoreError> {
    let hashes: Vec<Vec<Uuid>> = requests
        .iter()
        .map(|r| {
            r.events
                .iter()
                .map(|e| dedup_hash(&r.source_id, &e.message_id))
                .collect()
        })
        .collect();
    let mut in_group: HashSet<Uuid> = HashSet::new();
    let mut keep: Vec<Vec<bool>> = hashes
        .iter()
        .map(|h| h.iter().map(|hash| in_group.insert(*hash)).collect())
        .collect();
    let Some(d) = dedup.filter(|d| !d.window.is_zero()) else {
        return Ok(keep);
    };
    let now_minute = minute_of(
        requests
            .first()
            .map_or_else(OffsetDateTime::now_utc, |r| r.received_at),
    );
    let candidates: Vec<(&str, Uuid)> = requests
        .iter()
        .zip(&hashes)
        .flat_map(|(r, hs)| hs.iter().map(move |h| (&*r.workspace_id, *h)))
        .zip(keep.iter().flatten())
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    let seen = dedup::dedup_keys_check(conn, now_minute, d, candidates, probe).await?;
    for (h, k) in hashes.iter().flatten().zip(keep.iter_mut().flatten()) {
        *k = *k && !seen.contains(h);
    }
    Ok(keep)
}

/// Step 3: takes `total` ids from the sequence, increasing (the caller holds its workspaces'
/// locks, so they come after every id of those workspaces already committed), and finds the
/// open dataset. One `nextval` per id: a block taken with `setval` could overlap the ids that
/// another workspace's transaction takes at the same moment.
async fn ids_take(conn: &mut PgConnection, total: usize) -> Result<(Vec<i64>, i32), StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT array_agg(nextval('event_id_seq') ORDER BY n)
                 FROM generate_series(1, $1) AS n) AS ids,
                (SELECT dataset FROM datasets WHERE closed_at IS NULL
                 ORDER BY dataset DESC LIMIT 1) AS dataset",
    )
    .bind(total as i64)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("taking event ids"))?;
    let mut ids: Vec<i64> = row.get("ids");
    // nextval is called in row order, so the ids are in order already; sorting costs nothing
    // and does not depend on how the aggregate was planned.
    ids.sort_unstable();
    let dataset: Option<i32> = row.get("dataset");
    let dataset = dataset.ok_or_else(|| StoreError::Query {
        action: "finding the open dataset",
        source: sqlx::Error::RowNotFound,
    })?;
    Ok((ids, dataset))
}

/// Step 3: moves each workspace's head to the last id it got in this group.
async fn heads_move(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    outcomes: &[AppendOutcome],
) -> Result<(), StoreError> {
    let mut heads: Vec<(&str, i64)> = Vec::new();
    for (request, outcome) in requests.iter().zip(outcomes) {
        let Some(&last) = outcome.ids.last() else {
            continue;
        };
        match heads.iter_mut().find(|(w, _)| *w == &*request.workspace_id) {
            Some((_, head)) => *head = (*head).max(last),
            None => heads.push((&request.workspace_id, last)),
        }
    }
    let (workspaces, last_ids): (Vec<&str>, Vec<i64>) = heads.into_iter().unzip();
    sqlx::query(
        "INSERT INTO workspace_heads (workspace_id, last_id)
         SELECT * FROM unnest($1::text[], $2::bigint[])
         ON CONFLICT (workspace_id) DO UPDATE SET last_id = excluded.last_id",
    )
    .bind(&workspaces)
    .bind(&last_ids)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx("moving the workspaces' heads"))?;
    Ok(())
}

/// Step 4: COPYs the kept events into `dataset`, with the ids `outcomes` gave them.
async fn events_copy(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    keep: &[Vec<bool>],
    outcomes: &[AppendOutcome],
    dataset: i32,
) -> Result<(), StoreError> {
    let mut copy = CopyEncoder::new();
    for ((request, keep), outcome) in requests.iter().zip(keep).zip(outcomes) {
        let kept = request.events.iter().zip(keep).filter(|(_, k)| **k);
        for ((event, _), &id) in kept.zip(&outcome.ids) {
            copy.row(dataset, id, request, event);
        }
    }
    let mut sink = conn
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
    Ok(())
}

/// What happened to each request: the kept events of the group get `ids`, in request order
/// (none yet when `ids` is empty).
fn outcomes(requests: &[&AppendRequest], keep: &[Vec<bool>], ids: &[i64]) -> Vec<AppendOutcome> {
    let mut next = ids.iter().copied();
    requests
        .iter()
        .zip(keep)
        .map(|(request, keep)| {
            let accepted = keep.iter().filter(|k| **k).count();
            AppendOutcome {
                accepted,
                duplicates: request.events.len() - accepted,
                ids: next.by_ref().take(accepted).collect(),
            }
        })
        .collect()
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
