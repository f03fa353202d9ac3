//! Ingest's write as separate statements in a transaction, the rows sent with binary COPY
//! (Citus, where the dedup probe takes a per-shard form: `dedup::DedupProbe`).

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::super::dedup::{self, Dedup};
use super::super::{StoreError, ingest_lock, notify};
use super::{
    AppendOutcome, AppendRequest, NewEvent, Prepared, drop_seen, group_minute, heads_after,
    in_group, outcomes, unix_micros,
};

/// Steps 1–5 (the module doc of `append`): the locks, the new events, their ids and the
/// heads, the COPY, the commit.
pub(super) async fn write(
    pool: &sqlx::PgPool,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    legacy_until: Option<i32>,
    notify: Option<&str>,
) -> Result<Prepared, StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(StoreError::from_sqlx("starting the ingest transaction"))?;
    let prepared = prepare_by_statements(&mut tx, requests, dedup, legacy_until, notify).await?;
    if let Some(dataset) = prepared.dataset {
        events_copy(
            &mut tx,
            requests,
            &prepared.keep,
            &prepared.outcomes,
            dataset,
        )
        .await?;
    }
    tx.commit()
        .await
        .map_err(StoreError::from_sqlx("committing the ingest transaction"))?;
    Ok(prepared)
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
            outcomes: outcomes(requests, &keep, &[]),
            keep,
            dataset: None,
            heads_before: Vec::new(),
        });
    }
    let (ids, dataset) = ids_take(conn, total).await?;
    let outcomes = outcomes(requests, &keep, &ids);
    heads_move(conn, requests, &outcomes).await?;
    if let Some(payload) = notify {
        notify::notify(&mut *conn, payload, "notifying other hosts").await?;
    }
    // The heads before are not read here: on Citus ingest does not hand its events over.
    Ok(Prepared {
        keep,
        outcomes,
        dataset: Some(dataset),
        heads_before: Vec::new(),
    })
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

fn no_open_dataset() -> StoreError {
    StoreError::Query {
        action: "finding the open dataset",
        source: sqlx::Error::RowNotFound,
    }
}
