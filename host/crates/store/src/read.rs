//! A lane reading its sources' events from the log, in id order.
//!
//! The read is bounded by count and by bytes (the first event is always returned, however
//! large, so a lane never stalls). It also returns the ingest head seen in the same snapshot:
//! when the read was not cut short, the lane has seen every event of its sources up to the
//! head, and may move its read position there even if its sources wrote nothing.
//!
//! Events in `(after, skip_rows_to]` that already have a `job_state` row for this destination
//! are skipped: a previous owner parked them, and they are retried from their rows.
//!
//! The lanes of one source share their reads on a host (`read_cache`): a lane whose plain read
//! (one source, no parked rows to skip) falls within what another lane just read is served
//! from memory.

use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use sluice_core::catalog::Link;

use super::read_cache::Lookup;
use super::{LaneId, Store, StoreError};

/// One event of the log.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub dataset: i32,
    pub id: i64,
    pub source_id: String,
    pub user_key: String,
    pub message_id: String,
    pub received_at: OffsetDateTime,
    pub event: String,
}

/// What a read returned.
#[derive(Debug, Clone, Default)]
pub struct LogRead {
    pub events: Vec<LogEvent>,
    /// How far the lane may move its read position: the head if the read was not cut short,
    /// else the last id returned.
    pub read_to: i64,
    /// The read was not cut short: the lane has seen everything committed so far.
    pub exhausted: bool,
    /// Where the events came from.
    pub from: ReadFrom,
}

/// Where a lane's read was served from (`sluice_log_reads_total`'s `from` label).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// A query of the store.
    #[default]
    Store,
    /// What another lane of the source had just read (`read_cache`).
    Shared,
    /// What this host's ingest had just committed (`read_cache::feed`).
    Ingest,
}

impl ReadFrom {
    pub fn label(self) -> &'static str {
        match self {
            ReadFrom::Store => "store",
            ReadFrom::Shared => "shared",
            ReadFrom::Ingest => "ingest",
        }
    }
}

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl ReadLimits {
    /// At least one event and one byte: the first event always comes, however large.
    fn events(self) -> usize {
        self.max_events.max(1)
    }

    fn bytes(self) -> usize {
        self.max_bytes.max(1)
    }

    /// Whether a read that returned `count` events of `bytes` bytes in all stopped at these
    /// limits. An event is returned while the bytes before it are under the budget, so a read
    /// that reached the budget may have left events out: it counts as cut.
    pub(crate) fn cut(self, count: usize, bytes: usize) -> bool {
        count >= self.events() || bytes >= self.bytes()
    }
}

/// The read query for a lane with `sources` sources: one ordered index scan per source,
/// merged by id (a Merge Append: no sort, whatever the backlog), then a running byte count.
///
/// Parameters: $1 workspace, $2 destination, $3 after, $4 skip_rows_to, $5 max events,
/// $6 max bytes, then per source its id and the ids its link covers, `(from, until]`.
fn read_sql(sources: usize) -> String {
    let branch = |param: usize| {
        let (from, until) = (param + 1, param + 2);
        format!(
            "(SELECT v.dataset, v.id, v.source_id, v.user_key, v.message_id, v.received_at,
                     v.size, v.event
              FROM events v
              WHERE v.workspace_id = $1 AND v.source_id = ${param} AND v.id > $3
                AND v.id > ${from} AND v.id <= ${until}
                AND (v.id > $4 OR NOT EXISTS (
                    SELECT 1 FROM job_state js
                    WHERE js.workspace_id = $1 AND js.destination_id = $2
                      AND js.event_id = v.id))
              ORDER BY v.id LIMIT $5)"
        )
    };
    let branches: Vec<String> = (0..sources.max(1)).map(|i| branch(7 + 3 * i)).collect();
    let merged = if branches.len() == 1 {
        branches.join("")
    } else {
        format!("({} ORDER BY id LIMIT $5)", branches.join(" UNION ALL "))
    };
    format!(
        "SELECT h.last_id, w.dataset, w.id, w.source_id, w.user_key, w.message_id,
                w.received_at, w.event, w.running
         FROM (SELECT coalesce((SELECT last_id FROM workspace_heads WHERE workspace_id = $1), 0)
                   AS last_id) h
         LEFT JOIN (
             SELECT e.*, sum(e.size) OVER (ORDER BY e.id) AS running
             FROM {merged} e
         ) w ON true
         WHERE w.id IS NULL OR w.running - w.size < $6"
    )
}

impl Store {
    /// Reads the events that `links` feed the lane, with ids above `after`, in id order.
    pub async fn log_read(
        &self,
        lane: &LaneId,
        links: &[Link],
        after: i64,
        skip_rows_to: i64,
        limits: ReadLimits,
    ) -> Result<LogRead, StoreError> {
        // A link that ended at or before `after` has nothing left to give.
        let sources: Vec<&Link> = links
            .iter()
            .filter(|l| l.until_id.is_none_or(|u| u > after))
            .collect();
        // A plain read of one source may be shared (see `read_cache`).
        let shareable = match sources.as_slice() {
            [link] if skip_rows_to <= after && link.from_id <= after && link.is_live() => {
                Some(link.source.as_str())
            }
            _ => None,
        };
        let mut ticket = None;
        if let Some(source) = shareable {
            let mut may_wait = true;
            loop {
                match self.reads.lookup(
                    &lane.workspace_id,
                    source,
                    &lane.destination_id,
                    after,
                    limits,
                    may_wait,
                ) {
                    Lookup::Served(read) => return Ok(read),
                    Lookup::Wait(done) => {
                        done.await;
                        may_wait = false;
                    }
                    Lookup::Read(t) => {
                        ticket = Some(t);
                        break;
                    }
                }
            }
        }
        let sql = read_sql(sources.len());
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(&lane.workspace_id)
            .bind(&lane.destination_id)
            .bind(after)
            .bind(skip_rows_to)
            .bind(limits.events() as i64)
            .bind(limits.bytes() as i64);
        for l in &sources {
            query = query
                .bind(l.source.as_str())
                .bind(l.from_id)
                .bind(l.until_id.unwrap_or(i64::MAX));
        }
        if sources.is_empty() {
            query = query.bind("").bind(0i64).bind(0i64);
        }
        let rows = query
            .fetch_all(&self.lane_pool)
            .await
            .map_err(StoreError::from_sqlx("reading the event log"))?;

        let head: i64 = match rows.first() {
            Some(r) => r
                .try_get(0)
                .map_err(StoreError::from_sqlx("decoding a read"))?,
            None => after,
        };
        let mut events = Vec::with_capacity(rows.len());
        let mut last_running: i64 = 0;
        for r in rows {
            let decode = StoreError::from_sqlx("decoding an event");
            let Some(id) = r.try_get::<Option<i64>, _>(2).map_err(decode)? else {
                continue;
            };
            let decode = || StoreError::from_sqlx("decoding an event");
            last_running = r.try_get(8).map_err(decode())?;
            events.push(LogEvent {
                dataset: r.try_get(1).map_err(decode())?,
                id,
                source_id: r.try_get(3).map_err(decode())?,
                user_key: r.try_get(4).map_err(decode())?,
                message_id: r.try_get(5).map_err(decode())?,
                received_at: r.try_get(6).map_err(decode())?,
                event: r.try_get(7).map_err(decode())?,
            });
        }
        // The merge keeps id order; a cheap check keeps the contract whatever the plan.
        if !events.is_sorted_by_key(|e| e.id) {
            events.sort_unstable_by_key(|e| e.id);
        }
        // `running` is the bytes of the rows up to each one: the last row's is the read's.
        let exhausted = !limits.cut(events.len(), last_running as usize);
        let read_to = match events.last() {
            Some(last) if !exhausted => last.id,
            _ => head.max(after),
        };
        let read = LogRead {
            events,
            read_to,
            exhausted,
            from: ReadFrom::Store,
        };
        if let Some(ticket) = ticket {
            ticket.record(after, &read);
        }
        Ok(read)
    }
}
