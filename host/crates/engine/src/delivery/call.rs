//! One call through a destination's plugin: `transform` each job, then one `send` with every
//! payload. The lane hands a call at most one job per ordering key, so the payloads of one call
//! may go out concurrently — unless the plugin declares ordered batches, and then it is the
//! plugin's promise to deliver a key's payloads in call order.

use std::time::Duration;

use tracing::Instrument;

use super::pool::{InstancePool, Pooled};
use super::retry::JobOutcome;
use crate::lane::Job;
use sluice_runtime::CallError;
use sluice_runtime::bindings::{JobContext, Outcome, Request, TransformError};

/// Transforms between two yields to the scheduler.
const YIELD_EVERY: usize = 32;

/// What a call came to: one outcome per job, in order.
#[derive(Debug)]
pub struct CallReport {
    pub outcomes: Vec<JobOutcome>,
    /// No instance could be created (e.g. `configure` failed): the jobs were not attempted.
    pub unavailable: Option<CallError>,
}

/// Runs one call.
pub async fn deliver_call(pool: &InstancePool, workspace_id: &str, jobs: &[Job]) -> CallReport {
    let span = tracing::info_span!(
        "deliver",
        destination = %pool.destination_id(),
        plugin = %pool.plugin_name(),
        jobs = jobs.len(),
        first_job = jobs.first().map(|j| j.event_id).unwrap_or_default(),
    );
    async {
        let started = std::time::Instant::now();
        let mut instance = match pool.take().await {
            Ok(i) => i,
            Err(e) => {
                return CallReport {
                    outcomes: Vec::new(),
                    unavailable: Some(e),
                };
            }
        };
        let outcomes = run(pool, workspace_id, &mut instance, jobs).await;
        crate::metrics::plugin_call(pool.destination_id(), started.elapsed());
        crate::metrics::concurrency_limit(pool.destination_id(), instance.concurrency_limit());
        pool.give_back(instance);
        CallReport {
            outcomes,
            unavailable: None,
        }
    }
    .instrument(span)
    .await
}

async fn run(
    pool: &InstancePool,
    workspace_id: &str,
    instance: &mut Pooled,
    jobs: &[Job],
) -> Vec<JobOutcome> {
    let mut outcomes: Vec<Option<JobOutcome>> = vec![None; jobs.len()];
    let mut requests = Vec::new();
    let mut owners = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if instance.is_poisoned() {
            // The previous transform trapped: carry on with a fresh instance.
            match pool.take().await {
                Ok(fresh) => *instance = fresh,
                Err(e) => {
                    outcomes[i] = Some(from_call_error(e));
                    continue;
                }
            }
        }
        // A call runs many transforms back to back without waiting on anything; let the lane
        // loop and the database I/O in between, so that they are never stuck behind a call.
        if i > 0 && i % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
        let context = job_context(workspace_id, pool.destination_id(), job);
        match instance.transform(&context, &job.event).await {
            Ok(Ok(payloads)) if payloads.is_empty() => outcomes[i] = Some(JobOutcome::Delivered),
            Ok(Ok(mut payloads)) => {
                // The context goes with the last payload; earlier ones get copies.
                let last = payloads.pop();
                for body in payloads {
                    requests.push(Request {
                        context: context.clone(),
                        body,
                    });
                    owners.push(i);
                }
                if let Some(body) = last {
                    requests.push(Request { context, body });
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
        if instance.is_poisoned() {
            match pool.take().await {
                Ok(fresh) => *instance = fresh,
                Err(e) => {
                    for owner in owners {
                        outcomes[owner] = Some(from_call_error(e.clone()));
                    }
                    return finish(outcomes);
                }
            }
        }
        match instance.send(&requests).await {
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
    finish(outcomes)
}

fn finish(outcomes: Vec<Option<JobOutcome>>) -> Vec<JobOutcome> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(JobOutcome::Delivered))
        .collect()
}

fn job_context(workspace_id: &str, destination_id: &str, job: &Job) -> JobContext {
    JobContext {
        job_id: job.event_id,
        idempotency_key: format!("{}:{}", job.message_id, destination_id),
        message_id: job.message_id.clone(),
        workspace_id: workspace_id.to_string(),
        source_id: job.source_id.clone(),
        destination_id: destination_id.to_string(),
        attempt: job.attempt,
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
        Outcome::TooLarge(f) => JobOutcome::TooLarge {
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

/// A job with several payloads is as good as its worst one:
/// abort > too large > retry > throttle > delivered.
fn worst(a: JobOutcome, b: JobOutcome) -> JobOutcome {
    fn rank(o: &JobOutcome) -> u8 {
        match o {
            JobOutcome::Delivered => 0,
            JobOutcome::Throttled(_) => 1,
            JobOutcome::Retry { .. } => 2,
            JobOutcome::TooLarge { .. } => 3,
            JobOutcome::Abort { .. } => 4,
        }
    }
    if rank(&b) > rank(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

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
