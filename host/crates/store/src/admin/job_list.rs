//! The job list query: the same jobs and order as `job_overview`, read in a way whose cost
//! follows the page, not the backlog.
//!
//! `job_overview` derives every job's state by joining the whole log to the lanes, so a
//! `LIMIT 50` over it still reads and sorts every event. Here the list is two branches,
//! each already in (event id, destination) order, merged under one `LIMIT`:
//!
//! - **rows**: jobs with a `job_state` row (every failed, parked, aborted or retried job),
//!   read through its primary key or its own filters; a row and its event are in the same
//!   dataset (compaction moves them together), which lets PostgreSQL probe one partition;
//! - **log**: jobs without a row, read per (lane, source) from the `events_read` index as an
//!   id range (delivered at or below the cursor, executing up to `claimed_to`, pending up to
//!   the ingest head), each range cut off at the page size.
//!
//! A filter that only rows can match (`error_code`, `error`, or the states failed and
//! aborted) leaves the log branch out. Filters on events (source, user, time) are applied
//! inside the range scan, so a rare user still reads that lane's events: there is no index
//! by user, which would cost every ingest.
//!
//! The SQL is assembled from the filters that are set (so that PostgreSQL plans each shape
//! with its indexes); every value is a bound parameter.

use sqlx::{Postgres, QueryBuilder};

use super::{JobCursor, JobFilter};
use crate::JobState;

/// Which derived states the log branch can produce, in id order along a lane.
const LOG_STATES: [JobState; 3] = [JobState::Delivered, JobState::Executing, JobState::Pending];

/// The columns both branches return (those of `job_overview` that a list shows).
const COLUMNS: &str = "workspace_id, destination_id, event_id, source_id, user_key, message_id, \
                       state, attempt, error_code, error, received_at, last_attempt_at, \
                       next_attempt_at";

/// Builds the list query for `filter`, after `cursor`, limited to `states` if given.
pub fn query(
    filter: &JobFilter,
    cursor: Option<&JobCursor>,
    states: Option<&[JobState]>,
    limit: i64,
) -> QueryBuilder<Postgres> {
    let allowed = |s: JobState| {
        filter.state.is_none_or(|f| f == s) && states.is_none_or(|list| list.contains(&s))
    };
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM ("));
    rows_branch(&mut q, filter, cursor, states, limit);
    let log_states: Vec<JobState> = LOG_STATES.into_iter().filter(|s| allowed(*s)).collect();
    if !log_states.is_empty() && filter.error_code.is_none() && filter.error.is_none() {
        q.push(" UNION ALL (");
        log_branch(&mut q, filter, cursor, &log_states, limit);
        q.push(")");
    }
    q.push(") jobs ORDER BY event_id, destination_id LIMIT ");
    q.push_bind(limit);
    q
}

/// Jobs with a row, in (event id, destination) order.
fn rows_branch(
    q: &mut QueryBuilder<Postgres>,
    filter: &JobFilter,
    cursor: Option<&JobCursor>,
    states: Option<&[JobState]>,
    limit: i64,
) {
    q.push(
        "(SELECT s.workspace_id, s.destination_id, s.event_id, s.source_id, e.user_key,
                e.message_id, s.state, s.attempt, s.error_code,
                left(s.error_text, 500) AS error, e.received_at, s.last_attempt_at,
                s.next_attempt_at
         FROM job_state s
         JOIN lanes l ON l.workspace_id = s.workspace_id AND l.destination_id = s.destination_id
         JOIN routes r ON r.workspace_id = s.workspace_id
                      AND r.destination_id = s.destination_id AND r.source_id = s.source_id
         JOIN events e ON e.workspace_id = s.workspace_id AND e.source_id = s.source_id
                      AND e.id = s.event_id AND e.dataset = s.dataset
         WHERE l.retired_at IS NULL AND e.id > l.start_id",
    );
    lane_filters(q, filter, "s");
    event_filters(q, filter);
    if let Some(state) = filter.state {
        q.push(" AND s.state = ").push_bind(state);
    }
    if let Some(states) = states {
        q.push(" AND s.state = ANY (").push_bind(states).push(")");
    }
    if let Some(code) = &filter.error_code {
        q.push(" AND s.error_code = ").push_bind(code);
    }
    if let Some(text) = &filter.error {
        q.push(" AND strpos(s.error_text, ")
            .push_bind(text)
            .push(") > 0");
    }
    if let Some(c) = cursor {
        after(q, c, "s.event_id", "s.destination_id");
    }
    q.push(" ORDER BY s.event_id, s.destination_id LIMIT ")
        .push_bind(limit)
        .push(")");
}

/// Jobs without a row, from the log: per (lane, source), the id range that `states` covers.
fn log_branch(
    q: &mut QueryBuilder<Postgres>,
    filter: &JobFilter,
    cursor: Option<&JobCursor>,
    states: &[JobState],
    limit: i64,
) {
    // The range of ids the states cover along a lane: delivered (start_id, cursor],
    // executing (cursor, claimed_to], pending (claimed_to, head].
    let lo = if states.contains(&JobState::Delivered) {
        "l.start_id"
    } else if states.contains(&JobState::Executing) {
        "l.cursor"
    } else {
        "l.claimed_to"
    };
    let hi = if states.contains(&JobState::Pending) {
        "h.last_id"
    } else if states.contains(&JobState::Executing) {
        "l.claimed_to"
    } else {
        "l.cursor"
    };
    q.push(
        "SELECT workspace_id, destination_id, event_id, source_id, user_key, message_id, state,
                attempt, NULL::text AS error_code, NULL::text AS error, received_at,
                NULL::timestamptz AS last_attempt_at, NULL::timestamptz AS next_attempt_at
         FROM (
           SELECT l.workspace_id, l.destination_id, e.id AS event_id, e.source_id, e.user_key,
                  e.message_id, e.received_at,
                  CASE WHEN e.id <= l.cursor THEN 'delivered'
                       WHEN e.id <= l.claimed_to THEN 'executing'
                       ELSE 'pending' END::job_status AS state,
                  CASE WHEN e.id <= l.cursor THEN 1 ELSE 0 END AS attempt
           FROM lanes l
           JOIN workspace_heads h ON h.workspace_id = l.workspace_id
           JOIN routes r ON r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id
           CROSS JOIN LATERAL (
             SELECT e.id, e.source_id, e.user_key, e.message_id, e.received_at
             FROM events e
             WHERE e.workspace_id = r.workspace_id AND e.source_id = r.source_id
               AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
               AND e.id > ",
    );
    q.push(lo).push(" AND e.id <= ").push(hi);
    if states.len() < LOG_STATES.len() {
        // The states may not be adjacent (delivered and pending): test each id, inside the
        // range's LIMIT so that excluded jobs do not take places.
        q.push(
            " AND CASE WHEN e.id <= l.cursor THEN 'delivered'
                       WHEN e.id <= l.claimed_to THEN 'executing'
                       ELSE 'pending' END::job_status = ANY (",
        )
        .push_bind(states.to_vec())
        .push(")");
    }
    event_filters(q, filter);
    if let Some(c) = cursor {
        // The range bound (for the index), then the exact position, before the range's own
        // LIMIT: jobs at or before the cursor must not take its places.
        q.push(" AND e.id >= ").push_bind(c.event_id);
        after(q, c, "e.id", "l.destination_id");
    }
    q.push(
        " AND NOT EXISTS (SELECT 1 FROM job_state s
                          WHERE s.workspace_id = e.workspace_id
                            AND s.destination_id = l.destination_id AND s.event_id = e.id)
             ORDER BY e.id LIMIT ",
    )
    .push_bind(limit);
    q.push(
        ") e
           WHERE l.retired_at IS NULL",
    );
    lane_filters(q, filter, "l");
    if let Some(source) = &filter.source {
        q.push(" AND r.source_id = ").push_bind(source);
    }
    q.push(") j");
    q.push(" ORDER BY event_id, destination_id LIMIT ")
        .push_bind(limit);
}

/// `AND (event, destination) > cursor`, on the given columns.
fn after(q: &mut QueryBuilder<Postgres>, cursor: &JobCursor, event: &str, destination: &str) {
    q.push(format!(" AND ({event}, {destination}) > ("))
        .push_bind(cursor.event_id)
        .push(", ")
        .push_bind(cursor.destination.clone())
        .push("::text)");
}

/// Workspace and destination, on the table aliased `alias`.
fn lane_filters(q: &mut QueryBuilder<Postgres>, filter: &JobFilter, alias: &str) {
    if let Some(ws) = &filter.workspace {
        q.push(format!(" AND {alias}.workspace_id = "))
            .push_bind(ws);
    }
    if let Some(dest) = &filter.destination {
        q.push(format!(" AND {alias}.destination_id = "))
            .push_bind(dest);
    }
}

/// Source, user and time, on the events aliased `e`.
fn event_filters(q: &mut QueryBuilder<Postgres>, filter: &JobFilter) {
    if let Some(source) = &filter.source {
        q.push(" AND e.source_id = ").push_bind(source);
    }
    if let Some(user) = &filter.user {
        q.push(" AND e.user_key = ").push_bind(user);
    }
    if let Some(since) = filter.since {
        q.push(" AND e.received_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND e.received_at < ").push_bind(until);
    }
}
