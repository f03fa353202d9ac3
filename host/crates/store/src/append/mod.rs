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
//!   group (see `dedup`, and `dedup_memory` for where plain PostgreSQL probes the keys).
//!
//! The steps, in one transaction:
//! 1. take the ingest locks (the store-wide one shared, the workspaces' exclusive);
//! 2. find the new events: drop repeats inside the group, then those seen within the window
//!    (recording the others);
//! 3. if any event is left: take its ids, move the workspaces' heads, find the open dataset,
//!    and NOTIFY the other hosts, if asked (delivered at commit);
//! 4. write the events into the log;
//! 5. commit.
//!
//! On plain PostgreSQL all five are one statement (`one_call`: `sluice_ingest_write`,
//! migrations 0017 and 0018), with the keys probed in this host's memory, and the rows passed
//! as arrays; it commits without waiting for its WAL, and the write returns once a second
//! statement has waited for it (so an outcome is only ever returned for durable events).
//! On Citus they are separate statements in a transaction, the rows sent with binary COPY
//! (`statements`), because the dedup probe takes a per-shard form there (`dedup::DedupProbe`).
//!
//! Then the new events are handed to this host's lanes (`read_cache::feed`) with each
//! workspace's head before and after the group, so a lane woken for them need not read them
//! back. Plain PostgreSQL only: there the call returns the heads before.

mod one_call;
mod statements;

use std::collections::HashSet;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::dedup::{Dedup, DedupProbe, dedup_hash, minute_of};
use super::read::LogEvent;
use super::{Store, StoreError};

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

/// What a write did: which events are new (per request and event), each request's outcome,
/// the dataset they went to (`None` when no event is new), and the head before this group of
/// each of the group's workspaces (empty where the write does not return it: Citus).
struct Prepared {
    keep: Vec<Vec<bool>>,
    outcomes: Vec<AppendOutcome>,
    dataset: Option<i32>,
    heads_before: Vec<(String, i64)>,
}

impl Store {
    /// Appends a group of requests in one transaction; one outcome per request, in order.
    /// `notify` is the payload of a NOTIFY on [`super::notify::EVENTS_CHANNEL`] sent at commit,
    /// if any.
    pub async fn event_append(
        &self,
        requests: &[&AppendRequest],
        dedup: Option<Dedup>,
        notify: Option<&str>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let dedup = dedup.filter(|d| !d.window.is_zero());
        let prepared = match self.dedup_probe {
            DedupProbe::PerKey => {
                let pools = one_call::Pools {
                    write: &self.lane_pool,
                    durable: &self.pool,
                };
                one_call::write(pools, &self.dedup_memory, requests, dedup, notify).await?
            }
            DedupProbe::PerShard { legacy_until } => {
                statements::write(&self.pool, requests, dedup, legacy_until, notify).await?
            }
        };
        if let Some(dataset) = prepared.dataset {
            self.feed_reads(requests, &prepared, dataset);
        }
        Ok(prepared.outcomes)
    }

    /// Loads the dedup keys of the window of `workspaces` into this host's memory (plain
    /// PostgreSQL; `dedup_memory`), before it serves ingest: otherwise the first write to each
    /// workspace loads them while its requests wait (a 1M-key window took about 0.3 s).
    pub async fn dedup_warm(
        &self,
        workspaces: &[&str],
        dedup: Dedup,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if self.dedup_probe != DedupProbe::PerKey || dedup.window.is_zero() {
            return Ok(());
        }
        let oldest = dedup.oldest_minute(minute_of(now));
        one_call::warm(&self.pool, &self.dedup_memory, workspaces, oldest).await
    }

    /// Hands each workspace's committed events to the lanes' shared reads.
    fn feed_reads(&self, requests: &[&AppendRequest], prepared: &Prepared, dataset: i32) {
        let outcomes = &prepared.outcomes;
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

/// The minute a group's dedup keys are recorded under: its first request's arrival.
fn group_minute(requests: &[&AppendRequest]) -> i32 {
    minute_of(
        requests
            .first()
            .map_or_else(OffsetDateTime::now_utc, |r| r.received_at),
    )
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
