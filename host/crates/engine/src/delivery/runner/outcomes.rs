//! What a lane does with its calls' outcomes: decisions (`retry`), the circuit breaker, the
//! call size and throttles; per-job log lines, rate limited by the lane's [`LogBudget`] so that
//! 100,000 failing jobs do not print 100,000 lines; and the counters of `sluice_jobs_total`.

use time::OffsetDateTime;
use tokio::time::Instant;

use super::active::Active;
use super::{LaneRunner, UNAVAILABLE_PAUSE};
use crate::delivery::call::CallReport;
use crate::delivery::log_budget::LogBudget;
use crate::delivery::retry::{JobOutcome, decide};
use crate::delivery::stats::JobMetric;
use crate::lane::{Decision, Job, Key};
use crate::metrics;
use sluice_store::LaneId;

const HELD_BACK: &str =
    "per-job log lines held back in the last window (see failed_jobs and aborted_jobs)";

impl LaneRunner {
    /// Turns one call's outcomes into decisions.
    pub(super) fn apply(&self, st: &mut Active, jobs: Vec<Job>, report: CallReport) {
        let now = self.clock.now();
        let outcomes = match report {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::error!(lane = %self.lane, code = e.code.as_str(), error = %e.message, "cannot create a plugin instance; pausing the lane");
                for job in jobs {
                    st.lane.complete(job, Decision::Released, now);
                }
                st.paused_until = Some(Instant::now() + UNAVAILABLE_PAUSE);
                return;
            }
        };
        let mut throttle: Option<OffsetDateTime> = None;
        let call_len = jobs.len();
        let mut too_large = false;
        let mut results = Vec::with_capacity(call_len);
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let decision = if matches!(outcome, JobOutcome::TooLarge { .. }) && call_len > 1 {
                // Sent again, in order, in a call of half as many jobs; no attempt spent.
                too_large = true;
                Decision::Released
            } else {
                let first = job.first_attempt_at.unwrap_or(now);
                decide(
                    &self.settings.shape.policy,
                    job.attempt,
                    first,
                    now,
                    outcome,
                    &mut st.rng,
                )
            };
            results.push((job, decision));
        }
        // Who the jobs were, for the log lines below (the lane takes the jobs). A call where
        // every job was delivered logs nothing: the hot path skips this.
        let all_delivered = results
            .iter()
            .all(|(_, d)| matches!(d, Decision::Delivered | Decision::Skipped));
        let who: Vec<(i64, Key)> = if all_delivered {
            Vec::new()
        } else {
            results
                .iter()
                .map(|(j, _)| (j.event_id, j.key.clone()))
                .collect()
        };
        let decisions = st.lane.complete_call(results, now);
        log_jobs(
            &self.lane,
            || self.pool.plugin_name(),
            &mut st.log_budget,
            &decisions,
            who,
        );
        for d in &decisions {
            if let Decision::Throttled { at } = d {
                throttle = Some(throttle.map_or(*at, |t| t.max(*at)));
            }
        }
        st.batch_cap
            .observe(call_len, too_large, &decisions, &self.lane);
        let refs: Vec<&Decision> = decisions.iter().collect();
        let p = &self.settings.shape.policy;
        if let Some(pause) = st.breaker.observe(&refs, p.min_backoff, p.max_backoff) {
            tracing::warn!(lane = %self.lane, pause = ?pause, "destination failing for every key; pausing, then probing with one job");
            st.pause(Instant::now() + pause);
        }
        count_jobs(&self.lane.destination_id, &decisions);
        metrics::breaker(&self.lane.destination_id, st.breaker.probing());
        if let Some(t) = throttle {
            tracing::info!(lane = %self.lane, until = %t, "destination throttled; pausing the lane");
            st.pause(self.instant_of(t));
        }
    }
}

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
        JobMetric::Skipped,
        JobMetric::Filtered,
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
        Decision::Skipped => Some(JobMetric::Skipped),
        Decision::Filtered => Some(JobMetric::Filtered),
        Decision::Retry { .. } => Some(JobMetric::Retried),
        Decision::Aborted { .. } => Some(JobMetric::Aborted),
        Decision::Throttled { .. } => Some(JobMetric::Throttled),
        Decision::Released | Decision::Parked => None,
    }
}
