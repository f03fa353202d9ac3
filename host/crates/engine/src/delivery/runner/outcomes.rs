//! What a lane says about its jobs' outcomes: per-job log lines, rate limited by the lane's
//! [`LogBudget`] so that 100,000 failing jobs do not print 100,000 lines, and the counters of
//! `sluice_jobs_total`.

use tokio::time::Instant;

use super::LogBudget;
use crate::delivery::stats::JobMetric;
use crate::lane::{Decision, Key};
use crate::metrics;
use sluice_store::LaneId;

const HELD_BACK: &str =
    "per-job log lines held back in the last window (see failed_jobs and aborted_jobs)";

/// One line per failed or aborted job while the budget allows, with the lane (workspace and
/// destination), the job, its key and the plugin (`plugin` names it only when needed); `who`
/// is (job id, key) of each decision, in order.
pub(super) fn log_jobs(
    lane: &LaneId,
    plugin: impl Fn() -> String,
    budget: &mut LogBudget,
    decisions: &[Decision],
    who: Vec<(i64, Key)>,
) {
    let mut plugin_name: Option<String> = None;
    for (decision, (job, key)) in decisions.iter().zip(who) {
        if !matches!(decision, Decision::Aborted { .. } | Decision::Retry { .. }) {
            continue;
        }
        let (ok, held_back) = budget.allow(Instant::now());
        if let Some(lines) = held_back {
            tracing::warn!(lane = %lane, lines, "{HELD_BACK}");
        }
        if !ok {
            continue;
        }
        let plugin = plugin_name.get_or_insert_with(&plugin);
        match decision {
            Decision::Aborted { code, text } => {
                tracing::warn!(lane = %lane, job, key = %key, %plugin, %code, error = %text, "job aborted")
            }
            Decision::Retry { code, text, at } => {
                tracing::info!(lane = %lane, job, key = %key, %plugin, %code, error = %text, retry_at = %at, "attempt failed")
            }
            _ => {}
        }
    }
}

/// Reports the lines a budget held back: when its window is over (`now`), or whatever the
/// window when the lane is let go (`None`), so that the count of a flood is never lost.
pub(super) fn log_held_back(lane: &LaneId, budget: &mut LogBudget, now: Option<Instant>) {
    let held_back = match now {
        Some(now) => budget.window_end(now),
        None => budget.take_held_back(),
    };
    if let Some(lines) = held_back {
        tracing::warn!(lane = %lane, lines, "{HELD_BACK}");
    }
}

/// Adds a call's outcomes to `sluice_jobs_total`: once per outcome, not per job (the call is
/// the hot path).
pub(super) fn count_jobs(destination: &str, decisions: &[Decision]) {
    for m in [
        JobMetric::Delivered,
        JobMetric::Retried,
        JobMetric::Aborted,
        JobMetric::Throttled,
    ] {
        let n = decisions
            .iter()
            .filter(|d| job_metric(d) == Some(m))
            .count();
        if n > 0 {
            metrics::jobs(destination, m, n as u64);
        }
    }
}

/// How a decision is counted in `sluice_jobs_total` (a released job was not attempted).
fn job_metric(decision: &Decision) -> Option<JobMetric> {
    match decision {
        Decision::Delivered => Some(JobMetric::Delivered),
        Decision::Retry { .. } => Some(JobMetric::Retried),
        Decision::Aborted { .. } => Some(JobMetric::Aborted),
        Decision::Throttled { .. } => Some(JobMetric::Throttled),
        Decision::Released | Decision::Parked => None,
    }
}
