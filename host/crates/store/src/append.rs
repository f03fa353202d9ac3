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
//! 3. if any event is left: take its ids, move the workspaces' heads, find the open dataset,
//!    and NOTIFY the other hosts, if asked (delivered at commit);
//! 4. COPY the events into the log;
//! 5. commit.
//!
//! Then the new events are handed to this host's lanes (`read_cache::feed`) with each
//! workspace's head before and after the group, so a lane woken for them need not read them
//! back. Plain PostgreSQL only: there the call of steps 1–3 returns the heads before.
//!
//! On plain PostgreSQL steps 1–3 are one call of `sluice_ingest_prepare` (migration 0015),
//! through `sluice_ingest_prepare_with_heads` (migration 0016: the heads before, read under the
//! same locks): as separate statements they were about 13 round trips, most of a small
//! request's commit. On Citus they stay separate statements, because the dedup probe takes a
//! per-shard form there (`dedup::DedupProbe`).

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::dedup::{self, Dedup, DedupProbe, dedup_hash, minute_of};
use super::read::LogEvent;
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

/// What steps 1–3 found: which events are new (per request and event), their ids in group
/// order, the dataset they go to (`None` when no event is new), and the head before this group
/// of each of the group's workspaces (empty where the steps do not return it: Citus).
struct Prepared {
    keep: Vec<Vec<bool>>,
    ids: Vec<i64>,
    dataset: Option<i32>,
    heads_before: Vec<(String, i64)>,
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
        let dedup = dedup.filter(|d| !d.window.is_zero());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting the ingest transaction"))?;
        let prepared = match self.dedup_probe {
            DedupProbe::PerKey => prepare_in_one_call(&mut tx, requests, dedup, notify).await?,
            DedupProbe::PerShard { legacy_until } => {
                prepare_by_statements(&mut tx, requests, dedup, legacy_until, notify).await?
            }
        };
        let outcomes = outcomes(requests, &prepared.keep, &prepared.ids);
        if let Some(dataset) = prepared.dataset {
            events_copy(&mut tx, requests, &prepared.keep, &outcomes, dataset).await?;
        }
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the ingest transaction"))?;
        if let Some(dataset) = prepared.dataset {
            self.feed_reads(requests, &prepared, &outcomes, dataset);
        }
        Ok(outcomes)
    }

    /// Hands each workspace's committed events to the lanes' shared reads.
    fn feed_reads(
        &self,
        requests: &[&AppendRequest],
        prepared: &Prepared,
        outcomes: &[AppendOutcome],
        dataset: i32,
    ) {
        for (workspace, after) in heads_after(requests, outcomes) {
            let Some(&(_, before)) = prepared.heads_before.iter().find(|(w, _)| w == workspace)
            else {
                continue;
            };
            let written = || {
                requests
                    .iter()
                    .zip(&prepared.keep)
                    .zip(outcomes)
                    .filter(|((r, _), _)| &*r.workspace_id == workspace)
            };
            let mut sources: Vec<&str> = written().map(|((r, _), _)| &*r.source_id).collect();
            sources.sort_unstable();
            sources.dedup();
            self.reads
                .feed(workspace, before, after, &sources, |source| {
                    let mut events = Vec::new();
                    for ((request, keep), outcome) in
                        written().filter(|((r, _), _)| &*r.source_id == source)
                    {
                        let received_at = stored_time(request.received_at);
                        let kept = request.events.iter().zip(keep).filter(|(_, k)| **k);
                        for ((event, _), &id) in kept.zip(&outcome.ids) {
                            events.push(LogEvent {
                                dataset,
                                id,
                                source_id: source.to_owned(),
                                user_key: event.user_key.clone(),
                                message_id: event.message_id.clone(),
                                received_at,
                                event: event.json.clone(),
                            });
                        }
                    }
                    events
                });
        }
    }
}

/// Steps 1–3 in one round trip (plain PostgreSQL): `sluice_ingest_prepare_with_heads`, which
/// also returns the workspaces' heads before the group. When no dedup
/// partition covers the group's minute (after an idle spell; maintenance keeps the next one
/// ready), the function writes nothing; the partition is created here and the call made again.
async fn prepare_in_one_call(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    notify: Option<&str>,
) -> Result<Prepared, StoreError> {
    let (hashes, mut keep) = in_group(requests);
    let (workspaces, candidates): (Vec<&str>, Vec<Uuid>) =
        candidates(requests, &hashes, &keep).into_iter().unzip();
    let request_workspaces: Vec<&str> = requests.iter().map(|r| &*r.workspace_id).collect();
    let lock_keys = ingest_lock::lock_keys(&request_workspaces);
    let minute = group_minute(requests);
    let oldest = dedup.map(|d| minute.saturating_sub(d.window_minutes()));
    let mut created = false;
    loop {
        let row = sqlx::query(
            "SELECT partition_missing, seen, ids, dataset, head_workspaces, heads_before
             FROM sluice_ingest_prepare_with_heads($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ingest_lock::INGEST_LOCK)
        .bind(&lock_keys)
        .bind(&workspaces)
        .bind(&candidates)
        .bind(minute)
        .bind(oldest)
        .bind(notify::EVENTS_CHANNEL)
        .bind(notify)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx("preparing the ingest write"))?;
        let missing: bool = row.get("partition_missing");
        match dedup {
            Some(d) if missing && !created => {
                dedup::dedup_partition_ensure(conn, minute, d).await?;
                created = true;
                continue;
            }
            _ if missing => {
                return Err(StoreError::Query {
                    action: "finding the dedup partition just created",
                    source: sqlx::Error::RowNotFound,
                });
            }
            _ => {}
        }
        let seen: Vec<Uuid> = row.get("seen");
        let ids: Vec<i64> = row.get("ids");
        let dataset: Option<i32> = row.get("dataset");
        let head_workspaces: Option<Vec<String>> = row.get("head_workspaces");
        let heads_before: Option<Vec<i64>> = row.get("heads_before");
        drop_seen(&hashes, &mut keep, &seen.into_iter().collect());
        if !ids.is_empty() && dataset.is_none() {
            return Err(no_open_dataset());
        }
        return Ok(Prepared {
            keep,
            ids,
            dataset,
            heads_before: head_workspaces
                .into_iter()
                .flatten()
                .zip(heads_before.into_iter().flatten())
                .collect(),
        });
    }
}

/// Steps 1–3 as separate statements (Citus).
async fn prepare_by_statements(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    legacy_until: Option<i32>,
    notify: Option<&str>,
) -> Result<Prepared, StoreError> {
    let workspaces: Vec<&str> = requests.iter().map(|r| &*r.workspace_id).collect();
    ingest_lock::take_for_ingest(conn, &workspaces).await?;
    let keep = events_new(conn, requests, dedup, legacy_until).await?;
    let total: usize = keep.iter().flatten().filter(|k| **k).count();
    if total == 0 {
        return Ok(Prepared {
            keep,
            ids: Vec::new(),
            dataset: None,
            heads_before: Vec::new(),
        });
    }
    let (ids, dataset) = ids_take(conn, total).await?;
    heads_move(conn, requests, &outcomes(requests, &keep, &ids)).await?;
    if let Some(payload) = notify {
        notify::notify(&mut *conn, payload, "notifying other hosts").await?;
    }
    // The heads before are not read here: on Citus ingest does not hand its events over.
    Ok(Prepared {
        keep,
        ids,
        dataset: Some(dataset),
        heads_before: Vec::new(),
    })
}

/// The dedup hash of every event, and which are not repeats of an earlier one in the group
/// (the first one wins).
fn in_group(requests: &[&AppendRequest]) -> (Vec<Vec<Uuid>>, Vec<Vec<bool>>) {
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
    let keep: Vec<Vec<bool>> = hashes
        .iter()
        .map(|h| h.iter().map(|hash| in_group.insert(*hash)).collect())
        .collect();
    (hashes, keep)
}

/// Drops from `keep` the events whose hash the dedup window has `seen`.
fn drop_seen(hashes: &[Vec<Uuid>], keep: &mut [Vec<bool>], seen: &HashSet<Uuid>) {
    for (h, k) in hashes.iter().flatten().zip(keep.iter_mut().flatten()) {
        *k = *k && !seen.contains(h);
    }
}

/// The events `keep` still holds, in group order, as (workspace, hash).
fn candidates<'a>(
    requests: &[&'a AppendRequest],
    hashes: &[Vec<Uuid>],
    keep: &[Vec<bool>],
) -> Vec<(&'a str, Uuid)> {
    requests
        .iter()
        .zip(hashes)
        .flat_map(|(r, hs)| hs.iter().map(move |h| (&*r.workspace_id, *h)))
        .zip(keep.iter().flatten())
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect()
}

/// The minute a group's dedup keys are recorded under: its first request's arrival.
fn group_minute(requests: &[&AppendRequest]) -> i32 {
    minute_of(
        requests
            .first()
            .map_or_else(OffsetDateTime::now_utc, |r| r.received_at),
    )
}

fn no_open_dataset() -> StoreError {
    StoreError::Query {
        action: "finding the open dataset",
        source: sqlx::Error::RowNotFound,
    }
}

/// Step 2 (Citus): which events are new, per request and event: not repeated earlier in the
/// group, and not seen within the dedup window, if there is one.
async fn events_new(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    legacy_until: Option<i32>,
) -> Result<Vec<Vec<bool>>, StoreError> {
    let (hashes, mut keep) = in_group(requests);
    let Some(d) = dedup else {
        return Ok(keep);
    };
    let candidates = candidates(requests, &hashes, &keep);
    let seen =
        dedup::dedup_keys_check(conn, group_minute(requests), d, candidates, legacy_until).await?;
    drop_seen(&hashes, &mut keep, &seen);
    Ok(keep)
}

/// Step 3 (Citus): takes `total` ids from the sequence, increasing (the caller holds its workspaces'
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
    let dataset = dataset.ok_or_else(no_open_dataset)?;
    Ok((ids, dataset))
}

/// Step 3 (Citus): moves each workspace's head to the last id it got in this group.
async fn heads_move(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    outcomes: &[AppendOutcome],
) -> Result<(), StoreError> {
    let (workspaces, last_ids): (Vec<&str>, Vec<i64>) =
        heads_after(requests, outcomes).into_iter().unzip();
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

/// Each workspace's head after the group: the last id it got (workspaces given no new event
/// are left out).
fn heads_after<'a>(
    requests: &[&'a AppendRequest],
    outcomes: &[AppendOutcome],
) -> Vec<(&'a str, i64)> {
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
    heads
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

/// Microseconds since the Unix epoch: a `timestamptz` keeps no finer (the COPY sends these).
fn unix_micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// `t` as the log stores it and a read returns it: in UTC, to the microsecond.
fn stored_time(t: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros(t)) * 1000).unwrap_or(t)
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
        let micros = unix_micros(request.received_at) - PG_EPOCH_MICROS;
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
