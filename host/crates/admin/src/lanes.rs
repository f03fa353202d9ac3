//! `/api/v1/destinations`: every lane's depth, rates, limit, breaker, lease and plugin; one
//! lane's per-minute stats and blocked keys; pause and resume.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::input::lane;
use sluice_store::LaneId;
use sluice_store::admin::{BlockedKey, LaneOverview, StatsMinute};

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<LaneOverview>,
}

#[utoipa::path(get, path = "/api/v1/destinations", tag = "destinations",
    responses((status = 200, body = DestinationList)))]
pub async fn list(State(state): State<Arc<AdminState>>) -> Result<Json<DestinationList>, ApiError> {
    Ok(Json(DestinationList {
        destinations: state.store.admin_lanes().await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// 1-1440, default 60.
    pub minutes: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsSeries {
    pub workspace: String,
    pub destination: String,
    /// One entry per minute, oldest first (the last one is the current, partial minute).
    pub minutes: Vec<StatsMinute>,
}

async fn existing(state: &AdminState, ws: String, dest: String) -> Result<LaneId, ApiError> {
    let lane = lane(ws, dest)?;
    if !state.store.admin_lane_exists(&lane).await? {
        return Err(ApiError::NotFound(format!("no destination {lane}")));
    }
    Ok(lane)
}

#[utoipa::path(get, path = "/api/v1/destinations/{workspace}/{destination}/stats",
    tag = "destinations", params(("workspace" = String, Path), ("destination" = String, Path),
    StatsQuery), responses((status = 200, body = StatsSeries), (status = 404, body = ErrorBody)))]
pub async fn stats(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<StatsSeries>, ApiError> {
    let Path((ws, dest)) = path?;
    let Query(q) = query?;
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::bad("minutes: between 1 and 1440"));
    }
    let lane = existing(&state, ws, dest).await?;
    let series = state.store.admin_lane_stats(&lane, minutes).await?;
    Ok(Json(StatsSeries {
        workspace: lane.workspace_id,
        destination: lane.destination_id,
        minutes: series,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BlockedQuery {
    /// 1-1000, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedList {
    pub keys: Vec<BlockedKey>,
}

#[utoipa::path(get, path = "/api/v1/destinations/{workspace}/{destination}/blocked",
    tag = "destinations", params(("workspace" = String, Path), ("destination" = String, Path),
    BlockedQuery), responses((status = 200, body = BlockedList), (status = 404, body = ErrorBody)))]
pub async fn blocked(
    State(state): State<Arc<AdminState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<BlockedQuery>, QueryRejection>,
) -> Result<Json<BlockedList>, ApiError> {
    let Path((ws, dest)) = path?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit: between 1 and 1000"));
    }
    let lane = existing(&state, ws, dest).await?;
    Ok(Json(BlockedList {
        keys: state.store.admin_blocked(&lane, limit).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PauseResult {
    pub paused: bool,
}

async fn set_paused(
    state: &AdminState,
    caller: &Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    pause: bool,
) -> Result<Json<PauseResult>, ApiError> {
    let Path((ws, dest)) = path?;
    let lane = existing(state, ws, dest).await?;
    state
        .store
        .operator_pause(&lane, pause, &caller.name)
        .await?;
    tracing::info!(token = %caller.name, %lane, pause, "admin API action");
    Ok(Json(PauseResult { paused: pause }))
}

#[utoipa::path(post, path = "/api/v1/destinations/{workspace}/{destination}/pause",
    tag = "destinations", params(("workspace" = String, Path), ("destination" = String, Path)),
    responses((status = 200, body = PauseResult), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn pause(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<PauseResult>, ApiError> {
    set_paused(&state, &caller, path, true).await
}

#[utoipa::path(post, path = "/api/v1/destinations/{workspace}/{destination}/resume",
    tag = "destinations", params(("workspace" = String, Path), ("destination" = String, Path)),
    responses((status = 200, body = PauseResult), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn resume(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<PauseResult>, ApiError> {
    set_paused(&state, &caller, path, false).await
}
