//! Delivering one claim: transform + send through the destination's plugin, in key order.
//!
//! A claim may hold several jobs of one ordering key. They go out in *waves*: wave n carries
//! the n-th job of every key still going, so a key's jobs are sent strictly one after another
//! while different keys share each `send` call. When a job of a key does not succeed, the rest
//! of that key is released unattempted (back to `pending`, behind the failed head), which keeps
//! the ordering invariant of `store::claim`. A wave larger than the plugin's `batch_size` is
//! sent in several `send` calls. A throttle ends the claim: everything not yet
//! attempted is released and the destination pauses.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use time::OffsetDateTime;
use tracing::Instrument;

use super::pool::InstancePool;
use super::retry::{JobOutcome, RetryPolicy, decide};
use crate::runtime::bindings::{JobContext, Outcome, Request, TransformError};
use crate::runtime::{CallError, PluginInstance};
use crate::store::{ClaimedJob, JobUpdate, NextState};

/// What a delivery came to.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    pub updates: Vec<JobUpdate>,
    /// The destination asked to slow down for this long.
    pub throttle: Option<Duration>,
    /// No instance could be created: the destination should pause (jobs were released).
    pub unavailable: Option<CallError>,
}

/// Runs one claim to completion (or until `stop` says to release what is left).
pub async fn deliver(
    pool: &InstancePool,
    policy: &RetryPolicy,
    send_size: usize,
    jobs: Vec<ClaimedJob>,
    stop: &tokio_util::sync::CancellationToken,
) -> DeliveryReport {
    let span = tracing::info_span!(
        "deliver",
        destination = %pool.destination_id(),
        plugin = %pool.plugin_name(),
        jobs = jobs.len(),
        first_job = jobs.first().map(|j| j.job_id).unwrap_or_default(),
    );
    run_waves(pool, policy, send_size, jobs, stop)
        .instrument(span)
        .await
}

async fn run_waves(
    pool: &InstancePool,
    policy: &RetryPolicy,
    send_size: usize,
    jobs: Vec<ClaimedJob>,
    stop: &tokio_util::sync::CancellationToken,
) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    let mut queues = by_key(jobs);
    let mut instance: Option<PluginInstance> = None;
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());

    while queues.iter().any(|q| !q.is_empty()) {
        if stop.is_cancelled() || report.throttle.is_some() {
            break;
        }
        if let Err(e) = ensure(pool, &mut instance).await {
            tracing::error!(code = e.code, error = %e.message, "cannot create a plugin instance; releasing the claim");
            report.unavailable = Some(e);
            break;
        }
        // Wave: the next job of every key still going.
        let wave: Vec<(usize, ClaimedJob)> = queues
            .iter_mut()
            .enumerate()
            .filter_map(|(k, q)| q.pop_front().map(|j| (k, j)))
            .collect();
        // A wave may hold more keys than one `send` call takes (the manifest's batch_size).
        let mut outcomes = Vec::with_capacity(wave.len());
        for chunk in wave.chunks(send_size.max(1)) {
            outcomes.extend(run_wave(pool, &mut instance, chunk).await);
        }

        let now = OffsetDateTime::now_utc();
        for ((key_index, job), outcome) in wave.into_iter().zip(outcomes) {
            if let JobOutcome::Throttled(after) = &outcome {
                report.throttle = Some(report.throttle.unwrap_or_default().max(*after));
            }
            let next = decide(
                policy,
                job.attempt.max(0) as u32,
                job.first_attempt_at,
                now,
                outcome,
                &mut rng,
            );
            match &next {
                NextState::Delivered => tracing::debug!(job = job.job_id, "delivered"),
                NextState::Aborted { code, text } => {
                    tracing::warn!(job = job.job_id, key = %job.ordering_key, %code, error = %text, "job aborted")
                }
                NextState::Retry { code, text, at } => {
                    tracing::info!(job = job.job_id, key = %job.ordering_key, %code, error = %text, retry_at = %at, "attempt failed")
                }
                NextState::Throttled { at } => {
                    tracing::info!(job = job.job_id, until = %at, "throttled")
                }
                NextState::Released => {}
            }
            // A key goes on only past a terminal job; otherwise its later jobs wait.
            if !matches!(next, NextState::Delivered | NextState::Aborted { .. }) {
                release_all(&mut queues[key_index], &mut report.updates);
            }
            report.updates.push(JobUpdate {
                job_id: job.job_id,
                next,
            });
        }
    }
    for q in &mut queues {
        release_all(q, &mut report.updates);
    }
    if let Some(i) = instance {
        pool.give_back(i);
    }
    report
}

/// Transforms every job of the wave, then sends all payloads in one call.
async fn run_wave(
    pool: &InstancePool,
    instance: &mut Option<PluginInstance>,
    wave: &[(usize, ClaimedJob)],
) -> Vec<JobOutcome> {
    let mut outcomes: Vec<Option<JobOutcome>> = vec![None; wave.len()];
    let mut requests = Vec::new();
    let mut owners = Vec::new();
    for (i, (_, job)) in wave.iter().enumerate() {
        let context = job_context(job);
        let inst = match ensure(pool, instance).await {
            Ok(inst) => inst,
            Err(e) => {
                outcomes[i] = Some(from_call_error(e));
                continue;
            }
        };
        match inst.transform(&context, &job.event_json).await {
            Ok(Ok(payloads)) if payloads.is_empty() => outcomes[i] = Some(JobOutcome::Delivered),
            Ok(Ok(payloads)) => {
                for body in payloads {
                    requests.push(Request {
                        context: context.clone(),
                        body,
                    });
                    owners.push(i);
                }
            }
            Ok(Err(TransformError::Retry(f))) => {
                outcomes[i] = Some(JobOutcome::Retry {
                    code: f.code,
                    message: f.message,
                })
            }
            Ok(Err(TransformError::Abort(f))) => {
                outcomes[i] = Some(JobOutcome::Abort {
                    code: f.code,
                    message: f.message,
                })
            }
            Err(e) => outcomes[i] = Some(from_call_error(e)),
        }
    }

    if !requests.is_empty() {
        let sent = match ensure(pool, instance).await {
            Ok(inst) => inst.send(&requests).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(results) => {
                for (owner, result) in owners.into_iter().zip(results) {
                    let o = from_outcome(result);
                    outcomes[owner] = Some(match outcomes[owner].take() {
                        None => o,
                        Some(prev) => worst(prev, o),
                    });
                }
            }
            Err(e) => {
                for owner in owners {
                    outcomes[owner] = Some(from_call_error(e.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(JobOutcome::Delivered))
        .collect()
}

/// Makes sure `instance` holds a healthy instance, replacing a poisoned one.
async fn ensure<'a>(
    pool: &InstancePool,
    instance: &'a mut Option<PluginInstance>,
) -> Result<&'a mut PluginInstance, CallError> {
    let healthy = match instance.take() {
        Some(i) if !i.is_poisoned() => i,
        _ => pool.take().await?,
    };
    Ok(instance.insert(healthy))
}

fn job_context(job: &ClaimedJob) -> JobContext {
    JobContext {
        job_id: job.job_id,
        idempotency_key: format!("{}:{}", job.message_id, job.destination_id),
        message_id: job.message_id.clone(),
        workspace_id: job.workspace_id.clone(),
        source_id: job.source_id.clone(),
        destination_id: job.destination_id.clone(),
        attempt: job.attempt.max(0) as u32,
    }
}

fn from_outcome(o: Outcome) -> JobOutcome {
    match o {
        Outcome::Delivered => JobOutcome::Delivered,
        Outcome::Retry(f) => JobOutcome::Retry {
            code: f.code,
            message: f.message,
        },
        Outcome::Throttled(ms) => JobOutcome::Throttled(Duration::from_millis(ms)),
        Outcome::Abort(f) => JobOutcome::Abort {
            code: f.code,
            message: f.message,
        },
    }
}

fn from_call_error(e: CallError) -> JobOutcome {
    JobOutcome::Retry {
        code: e.code.to_string(),
        message: e.message,
    }
}

/// A job with several payloads is as good as its worst one: abort > retry > throttle > delivered.
fn worst(a: JobOutcome, b: JobOutcome) -> JobOutcome {
    fn rank(o: &JobOutcome) -> u8 {
        match o {
            JobOutcome::Delivered => 0,
            JobOutcome::Throttled(_) => 1,
            JobOutcome::Retry { .. } => 2,
            JobOutcome::Abort { .. } => 3,
        }
    }
    if rank(&b) > rank(&a) { b } else { a }
}

/// Groups a claim (sorted by id) into per-key queues, keeping id order inside each key.
fn by_key(jobs: Vec<ClaimedJob>) -> Vec<VecDeque<ClaimedJob>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut queues: Vec<VecDeque<ClaimedJob>> = Vec::new();
    for job in jobs {
        let i = *index.entry(job.ordering_key.clone()).or_insert_with(|| {
            queues.push(VecDeque::new());
            queues.len() - 1
        });
        queues[i].push_back(job);
    }
    queues
}

fn release_all(queue: &mut VecDeque<ClaimedJob>, updates: &mut Vec<JobUpdate>) {
    updates.extend(queue.drain(..).map(|j| JobUpdate {
        job_id: j.job_id,
        next: NextState::Released,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, key: &str) -> ClaimedJob {
        ClaimedJob {
            job_id: id,
            workspace_id: "w".into(),
            source_id: "s".into(),
            destination_id: "d".into(),
            ordering_key: key.into(),
            message_id: format!("m{id}"),
            event_json: "{}".into(),
            attempt: 0,
            first_attempt_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn keys_keep_id_order_and_first_seen_order() {
        let q = by_key(vec![
            job(1, "a"),
            job(2, "b"),
            job(3, "a"),
            job(4, "c"),
            job(5, "b"),
        ]);
        let ids: Vec<Vec<i64>> = q
            .iter()
            .map(|q| q.iter().map(|j| j.job_id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn worst_outcome_wins() {
        let r = JobOutcome::Retry {
            code: "x".into(),
            message: String::new(),
        };
        assert_eq!(worst(JobOutcome::Delivered, r.clone()), r);
        assert_eq!(worst(r.clone(), JobOutcome::Delivered), r);
        assert!(matches!(
            worst(JobOutcome::Throttled(Duration::from_secs(1)), r.clone()),
            JobOutcome::Retry { .. }
        ));
    }
}
