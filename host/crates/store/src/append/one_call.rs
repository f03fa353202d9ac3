//! Ingest's write in one statement (plain PostgreSQL): `sluice_ingest_write` (migration 0017)
//! takes the locks, dedups, takes the ids, moves the heads, writes the rows and NOTIFYs, and
//! commits when it returns. The dedup keys are probed first in this host's memory
//! (`dedup_memory`); the call catches up on what other writers recorded since the memory's
//! heads and returns it, with the workspaces' heads before the group.
//!
//! The statement commits without waiting for its WAL to reach the disk (it runs on the
//! store's `synchronous_commit = off` pool), and a second statement outside any lock waits for
//! that (`wal_flush`) before the write returns. The workspace's lock is released at commit, so
//! the next group's statement runs while this one's WAL is flushed: the flush (about 0.8 ms,
//! the lock held for all of it) is off the one-group-at-a-time section. Nothing is answered,
//! fed to this host's lanes or learned by its dedup memory before the flush: a client is
//! told its events are stored only once they are durable, and a memory never holds a key a
//! PostgreSQL crash could lose (a retry of that event would be dropped as a repeat). Another
//! host may read the group (its NOTIFY, a lane's read, a catch-up) before the flush; a crash
//! then loses what it read together with whatever it wrote after (WAL is replayed in order),
//! so it delivers the event at most once more, when its client sends it again.

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::super::dedup::{self, Dedup};
use super::super::dedup_memory::{DedupMemory, Learned};
use super::super::{StoreError, ingest_lock, notify};
use super::{AppendRequest, Prepared, drop_seen, group_minute, in_group, outcomes};

/// The events left after the in-group dedup and the memory's probe, as the call's arrays.
#[derive(Default)]
struct Candidates<'a> {
    workspaces: Vec<&'a str>,
    hashes: Vec<Uuid>,
    sources: Vec<&'a str>,
    user_keys: Vec<&'a str>,
    message_ids: Vec<&'a str>,
    received_at: Vec<OffsetDateTime>,
    sizes: Vec<i32>,
    events: Vec<&'a str>,
}

impl<'a> Candidates<'a> {
    fn of(requests: &[&'a AppendRequest], hashes: &[Vec<Uuid>], keep: &[Vec<bool>]) -> Self {
        let mut c = Candidates::default();
        for ((request, hs), keep) in requests.iter().zip(hashes).zip(keep) {
            for ((event, hash), _) in request.events.iter().zip(hs).zip(keep).filter(|(_, k)| **k) {
                c.workspaces.push(&request.workspace_id);
                c.hashes.push(*hash);
                c.sources.push(&request.source_id);
                c.user_keys.push(&event.user_key);
                c.message_ids.push(&event.message_id);
                c.received_at.push(request.received_at);
                c.sizes
                    .push(i32::try_from(event.json.len()).unwrap_or(i32::MAX));
                c.events.push(&event.json);
            }
        }
        c
    }
}

/// Where the write runs: `write` commits without waiting for its WAL (`synchronous_commit =
/// off`), `durable` waits for it.
#[derive(Clone, Copy)]
pub(super) struct Pools<'a> {
    pub write: &'a sqlx::PgPool,
    pub durable: &'a sqlx::PgPool,
}

/// The whole write in one round trip, and the wait for its WAL in a second one. When the call
/// must record keys one by one (memory full) and no dedup partition covers the group's minute
/// (after an idle spell; maintenance keeps the next one ready), it writes nothing; the
/// partition is created and the call made again. When a workspace's head is below what the
/// memory covers (the database is not the one the memory was filled from), that memory is
/// dropped and the call made again from head 0.
pub(super) async fn write(
    pools: Pools<'_>,
    memory: &DedupMemory,
    requests: &[&AppendRequest],
    dedup: Option<Dedup>,
    notify: Option<&str>,
) -> Result<Prepared, StoreError> {
    let minute = group_minute(requests);
    let oldest = dedup.map(|d| d.oldest_minute(minute));
    let request_workspaces: Vec<&str> = requests.iter().map(|r| &*r.workspace_id).collect();
    let lock_keys = ingest_lock::lock_keys(&request_workspaces);
    // The group's workspaces, each once, sorted: the call's heads are in this order.
    let mut group_workspaces: Vec<&str> = request_workspaces;
    group_workspaces.sort_unstable();
    group_workspaces.dedup();
    let mut created = false;
    let mut reloaded = false;
    loop {
        if let Some(oldest) = oldest {
            warm(pools.durable, memory, &group_workspaces, oldest).await?;
        }
        let (hashes, mut keep) = in_group(requests);
        // The heads first, then the probe: every key at or below a head read here is in
        // memory by the time of the probe (`apply` adds the keys before it moves the head).
        let known_heads: Vec<i64> = group_workspaces.iter().map(|w| memory.head(w)).collect();
        if let Some(oldest) = oldest {
            let all = requests
                .iter()
                .zip(&hashes)
                .flat_map(|(r, hs)| hs.iter().map(move |h| (&*r.workspace_id, h)));
            let seen = memory.seen_all(all, oldest);
            for (k, s) in keep.iter_mut().flatten().zip(seen) {
                *k = *k && !s;
            }
        }
        let c = Candidates::of(requests, &hashes, &keep);
        let group_keys = dedup.is_some() && memory.has_room(c.hashes.len());
        let row = sqlx::query(
            "SELECT partition_missing, behind, seen, ids, dataset, heads_before,
                    caught_workspaces, caught_buckets, caught_hashes
             FROM sluice_ingest_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                      $14, $15, $16, $17)",
        )
        .bind(ingest_lock::INGEST_LOCK)
        .bind(&lock_keys)
        .bind(&c.workspaces)
        .bind(&c.hashes)
        .bind(&c.sources)
        .bind(&c.user_keys)
        .bind(&c.message_ids)
        .bind(&c.received_at)
        .bind(&c.sizes)
        .bind(&c.events)
        .bind(&group_workspaces)
        .bind(dedup.map(|_| &known_heads))
        .bind(group_keys)
        .bind(minute)
        .bind(oldest)
        .bind(notify::EVENTS_CHANNEL)
        .bind(notify)
        .fetch_one(pools.write)
        .await
        .map_err(StoreError::from_sqlx("writing the ingest group"))?;
        if row.get::<bool, _>("behind") {
            if reloaded {
                return Err(again_failed());
            }
            tracing::warn!(
                workspaces = ?group_workspaces,
                "a workspace's head is below what this host's dedup memory covers; reloading it"
            );
            for w in &group_workspaces {
                memory.forget(w);
            }
            reloaded = true;
            continue;
        }
        if row.get::<bool, _>("partition_missing") {
            let Some(d) = dedup.filter(|_| !created) else {
                return Err(again_failed());
            };
            partition_create(pools.durable, minute, d).await?;
            created = true;
            continue;
        }
        let seen: Vec<Uuid> = row.get("seen");
        let heads_before: Vec<i64> = row.get("heads_before");
        drop_seen(&hashes, &mut keep, &seen.into_iter().collect());
        let ids: Vec<i64> = row.get("ids");
        let prepared = Prepared {
            outcomes: outcomes(requests, &keep, &ids),
            keep,
            dataset: row.get("dataset"),
            heads_before: group_workspaces
                .iter()
                .map(|w| w.to_string())
                .zip(heads_before)
                .collect(),
        };
        if !ids.is_empty() {
            wal_flush(pools.durable).await?;
        }
        // The statement has committed and its WAL is on disk: the memory learns what it
        // recorded and caught up on.
        if let Some(oldest) = oldest {
            let learned = learned(
                requests,
                &hashes,
                &prepared,
                &group_workspaces,
                &known_heads,
                &row,
                group_keys.then_some(minute),
            );
            for (workspace, l) in learned {
                memory.apply(&workspace, l, oldest);
            }
        }
        return Ok(prepared);
    }
}

/// Loads the window's keys of the workspaces this host's memory has nothing of (head 0: its
/// first write to them, or after a `forget`), outside any lock: the call would otherwise catch
/// up on the whole window under the workspace's lock (a 1M-key window took seconds, during
/// which every request of the workspace waited). One statement, so the head and the groups
/// are of one snapshot (a group's row and its head commit together); the call then catches
/// up from that head.
pub(crate) async fn warm(
    pool: &sqlx::PgPool,
    memory: &DedupMemory,
    workspaces: &[&str],
    oldest: i32,
) -> Result<(), StoreError> {
    for workspace in workspaces.iter().filter(|w| memory.head(w) == 0) {
        let rows: Vec<(i64, Option<i32>, Option<Vec<Uuid>>)> = sqlx::query_as(
            "WITH h AS (SELECT coalesce(max(last_id), 0) AS head FROM workspace_heads
                        WHERE workspace_id = $1)
             SELECT h.head, g.bucket, g.hashes
             FROM h LEFT JOIN dedup_groups g
               ON g.workspace_id = $1 AND g.bucket >= $2 AND g.head_after <= h.head",
        )
        .bind(workspace)
        .bind(oldest)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx(
            "loading the dedup keys of the window",
        ))?;
        let Some(&(head, _, _)) = rows.first() else {
            continue;
        };
        let mut keys = Vec::new();
        for (_, bucket, hashes) in rows {
            if let (Some(bucket), Some(hashes)) = (bucket, hashes) {
                keys.extend(hashes.into_iter().map(|h| (bucket, h)));
            }
        }
        tracing::debug!(workspace, head, keys = keys.len(), "dedup memory loaded");
        let learned = Learned {
            from: 0,
            to: head,
            keys,
        };
        memory.apply(workspace, learned, oldest);
    }
    Ok(())
}

/// Waits until the WAL written so far is on disk (and wherever the server's
/// `synchronous_commit` asks for: a synchronous standby's too). A transaction commits
/// durably only if it wrote WAL, so this one writes the smallest record there is, a logical
/// message (any `wal_level`, no privilege needed), and commits with the server's setting;
/// the flush up to its commit covers every commit before it. Concurrent flushes share the
/// disk write.
async fn wal_flush(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_logical_emit_message(true, 'sluice', '')")
        .execute(pool)
        .await
        .map_err(StoreError::from_sqlx("flushing the ingest group's WAL"))?;
    Ok(())
}

/// The call wrote nothing twice in a row for a reason it fixes itself.
fn again_failed() -> StoreError {
    StoreError::Query {
        action: "writing the ingest group again",
        source: sqlx::Error::RowNotFound,
    }
}

/// Creates the dedup partition for `minute` in a transaction of its own (its DDL lock is held
/// to the commit).
async fn partition_create(pool: &sqlx::PgPool, minute: i32, d: Dedup) -> Result<(), StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(StoreError::from_sqlx("starting a dedup partition"))?;
    dedup::dedup_partition_ensure(&mut tx, minute, d).await?;
    tx.commit()
        .await
        .map_err(StoreError::from_sqlx("committing a dedup partition"))
}

/// What the memory learns from a call, per workspace of the group: the keys of the catch-up,
/// the group's new keys (if recorded as a group, at `group_minute`), and the head they cover.
fn learned(
    requests: &[&AppendRequest],
    hashes: &[Vec<Uuid>],
    prepared: &Prepared,
    known_workspaces: &[&str],
    known_heads: &[i64],
    row: &sqlx::postgres::PgRow,
    group_minute: Option<i32>,
) -> Vec<(String, Learned)> {
    let mut learned: Vec<(String, Learned)> = known_workspaces
        .iter()
        .zip(known_heads)
        .map(|(w, from)| {
            let before = prepared
                .heads_before
                .iter()
                .find(|(b, _)| b == w)
                .map_or(*from, |(_, h)| *h);
            let l = Learned {
                from: *from,
                to: before,
                keys: Vec::new(),
            };
            (w.to_string(), l)
        })
        .collect();
    let caught_workspaces: Vec<String> = row.get("caught_workspaces");
    let caught_buckets: Vec<i32> = row.get("caught_buckets");
    let caught_hashes: Vec<Uuid> = row.get("caught_hashes");
    for ((w, m), h) in caught_workspaces
        .iter()
        .zip(caught_buckets)
        .zip(caught_hashes)
    {
        if let Some((_, l)) = learned.iter_mut().find(|(lw, _)| lw == w) {
            l.keys.push((m, h));
        }
    }
    for ((request, hs), (keep, outcome)) in requests
        .iter()
        .zip(hashes)
        .zip(prepared.keep.iter().zip(&prepared.outcomes))
    {
        let Some((_, l)) = learned
            .iter_mut()
            .find(|(w, _)| *w == *request.workspace_id)
        else {
            continue;
        };
        if let Some(&last) = outcome.ids.last() {
            l.to = l.to.max(last);
        }
        if let Some(minute) = group_minute {
            let new = hs.iter().zip(keep).filter(|(_, k)| **k);
            l.keys.extend(new.map(|(h, _)| (minute, *h)));
        }
    }
    learned
}
