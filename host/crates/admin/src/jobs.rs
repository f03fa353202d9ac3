//! `/api/v1/jobs`: list with filters and a cursor, one job with its attempts, and retry now,
//! abort and replay by ids, by filter or for a whole lane.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::input::{check_text, check_texts, lane, parse_time};
use sluice_store::admin::{JobCursor, JobDetail, JobFilter, JobSummary, OperatorAction};
use sluice_store::{JobState, LaneId};

/// At most this many jobs per page, and per operator action chosen by filter or ids.
pub const MAX_PAGE: i64 = 1000;
pub const MAX_ACTION_JOBS: usize = 10_000;

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    pub workspace: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// User key (`userId`, else `anonymousId`), exact.
    pub user: Option<String>,
    /// pending, executing, failed, delivered or aborted.
    pub state: Option<String>,
    pub error_code: Option<String>,
    /// Substring of the last error text, taken literally.
    pub error: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<String>,
    /// Received before (RFC 3339).
    pub until: Option<String>,
    /// 1-1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn parse_state(text: &str) -> Result<JobState, ApiError> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        ApiError::bad(
            "state: use one of pending, executing, failed, delivered, aborted".to_string(),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/jobs", params(JobsQuery), tag = "jobs",
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(q) = query?;
    let filter = JobFilter {
        workspace: q.workspace,
        source: q.source,
        destination: q.destination,
        user: q.user,
        state: q.state.as_deref().map(parse_state).transpose()?,
        error_code: q.error_code,
        error: q.error,
        since: q
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
    };
    check_texts(&filter)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad(format!("limit: between 1 and {MAX_PAGE}")));
    }
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            check_text("cursor", c)?;
            Some(JobCursor::decode(c).ok_or_else(|| ApiError::bad("cursor: not a cursor"))?)
        }
    };
    let mut jobs = state
        .store
        .admin_jobs(&filter, cursor.as_ref(), None, limit + 1)
        .await?;
    let next_cursor = if jobs.len() as i64 > limit {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| {
            JobCursor {
                event_id: j.event_id,
                destination: j.destination.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(JobList { jobs, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{workspace}/{destination}/{event_id}", tag = "jobs",
    params(("workspace" = String, Path), ("destination" = String, Path),
           ("event_id" = i64, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<(String, String, i64)>, PathRejection>,
) -> Result<Json<JobDetail>, ApiError> {
    let Path((ws, dest, id)) = path?;
    let lane = lane(ws, dest)?;
    state
        .store
        .admin_job(&lane, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id} in {lane}")))
}

/// Which jobs of a lane to act on: `event_ids`, or `filter`, or `all` (exactly one; `retry`
/// with neither means `all`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAction {
    pub workspace: String,
    pub destination: String,
    pub event_ids: Option<Vec<i64>>,
    pub filter: Option<ActionFilter>,
    pub all: Option<bool>,
}

/// Narrows an action to the lane's jobs matching every given field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// How many jobs an action changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    pub jobs: i32,
}

async fn act(
    state: &AdminState,
    caller: &Caller,
    action: OperatorAction,
    body: JobAction,
) -> Result<Json<ActionResult>, ApiError> {
    let lane = lane(body.workspace, body.destination)?;
    let all = body.all.unwrap_or(false);
    let chosen = [body.event_ids.is_some(), body.filter.is_some(), all]
        .iter()
        .filter(|x| **x)
        .count();
    let whole = match chosen {
        0 if action == OperatorAction::RetryNow => true,
        0 => return Err(ApiError::bad("give event_ids, filter or \"all\": true")),
        1 => all,
        _ => return Err(ApiError::bad("give only one of event_ids, filter or all")),
    };
    if !state.store.admin_lane_exists(&lane).await? {
        return Err(ApiError::NotFound(format!("no destination {lane}")));
    }
    let (ids, audit_filter) = if whole {
        (None, serde_json::json!({ "all": true }))
    } else if let Some(ids) = body.event_ids {
        if ids.len() > MAX_ACTION_JOBS {
            return Err(ApiError::bad(format!(
                "at most {MAX_ACTION_JOBS} event_ids per call"
            )));
        }
        (Some(ids), serde_json::Value::Null)
    } else {
        let f = body.filter.unwrap_or_default();
        let ids = matching(state, &lane, action, &f).await?;
        (Some(ids), serde_json::to_value(&f).unwrap_or_default())
    };
    let n = state
        .store
        .operator_jobs(&lane, action, ids.as_deref(), &caller.name, &audit_filter)
        .await?;
    tracing::info!(token = %caller.name, %lane, ?action, jobs = n, "admin API action");
    Ok(Json(ActionResult { jobs: n }))
}

/// The ids of the lane's jobs that `action` applies to and `f` selects.
async fn matching(
    state: &AdminState,
    lane: &LaneId,
    action: OperatorAction,
    f: &ActionFilter,
) -> Result<Vec<i64>, ApiError> {
    let filter = JobFilter {
        workspace: Some(lane.workspace_id.clone()),
        destination: Some(lane.destination_id.clone()),
        source: f.source.clone(),
        user: f.user.clone(),
        state: None,
        error_code: f.error_code.clone(),
        error: f.error.clone(),
        since: f
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: f
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
    };
    check_texts(&filter)?;
    let mut ids = Vec::new();
    let mut cursor: Option<JobCursor> = None;
    loop {
        let page = state
            .store
            .admin_jobs(&filter, cursor.as_ref(), Some(action.states()), MAX_PAGE)
            .await?;
        let last = page.last().map(|j| JobCursor {
            event_id: j.event_id,
            destination: j.destination.clone(),
        });
        ids.extend(page.iter().map(|j| j.event_id));
        if ids.len() > MAX_ACTION_JOBS {
            return Err(ApiError::bad(format!(
                "the filter matches more than {MAX_ACTION_JOBS} jobs; narrow it, or use \"all\""
            )));
        }
        match last {
            Some(c) if page.len() as i64 == MAX_PAGE => cursor = Some(c),
            _ => return Ok(ids),
        }
    }
}

macro_rules! action_handler {
    ($name:ident, $path:literal, $action:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "jobs", request_body = JobAction,
                    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody),
                              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
        pub async fn $name(
            State(state): State<Arc<AdminState>>,
            Extension(caller): Extension<Caller>,
            body: Result<Json<JobAction>, JsonRejection>,
        ) -> Result<Json<ActionResult>, ApiError> {
            let Json(body) = body?;
            act(&state, &caller, $action, body).await
        }
    };
}

action_handler!(
    retry,
    "/api/v1/jobs/retry",
    OperatorAction::RetryNow,
    "Makes failed jobs due now (with the jobs parked behind them)."
);
action_handler!(
    abort,
    "/api/v1/jobs/abort",
    OperatorAction::Abort,
    "Aborts failed jobs and the jobs parked behind them."
);
action_handler!(
    replay,
    "/api/v1/jobs/replay",
    OperatorAction::Replay,
    "Replays aborted jobs: they rejoin their key's order."
);
