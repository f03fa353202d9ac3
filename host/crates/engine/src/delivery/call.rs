//! One call through a destination's plugin: one `transform-batch` of every job, then one
//! `send` with every payload. The lane hands a call at most one job per ordering key, so the
//! payloads of one call may go out concurrently — unless the plugin declares ordered batches,
//! and then it is the plugin's promise to deliver a key's payloads in call order.
//!
//! A trap (or deadline, or memory cap) in `transform-batch` says nothing about which job
//! caused it, so the call's jobs are then transformed one per call, each on a healthy
//! instance: only the job at fault pays a retry, as when transforms were per job.

use std::time::Duration;

use tracing::Instrument;

use super::pool::{InstancePool, Pooled};
use super::retry::JobOutcome;
use crate::lane::Job;
use sluice_runtime::CallError;
use sluice_runtime::bindings::{
    BatchContext, BatchJob, JobContext, Outcome, Request, TransformError, job_context,
};

/// The code of a job that sent payloads and got no outcome back for them. `send` returns one
/// outcome per request or fails the call, so this is a host bug guarded against: the job is
/// retried, never taken as delivered.
const MISSING_OUTCOME: &str = "plugin_missing_outcome";

/// What a call came to: one outcome per job, in order; or the error when no instance could be
/// created (e.g. `configure` failed), and then no job was attempted.
pub type CallReport = Result<Vec<JobOutcome>, CallError>;

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
        crate::metrics::delivery_wait(pool.destination_id(), mean_wait(jobs));
        let mut instance = pool.take().await?;
        let outcomes = run(pool, workspace_id, &mut instance, jobs).await;
        crate::metrics::plugin_call(pool.destination_id(), started.elapsed());
        crate::metrics::concurrency_limit(pool.destination_id(), instance.concurrency_limit());
        pool.give_back(instance);
        Ok(outcomes)
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
    let batch = BatchContext {
        workspace_id: workspace_id.to_string(),
        destination_id: pool.destination_id().to_string(),
    };
    let inputs: Vec<BatchJob> = jobs
        .iter()
        .map(|job| batch_job(pool.destination_id(), job))
        .collect();
    let mut tally = Tally::new(jobs.len());
    match instance.transform_batch(&batch, &inputs).await {
        Ok(results) => {
            for (i, result) in results.into_iter().enumerate() {
                tally.transformed(i, job_context(&batch, &inputs[i]), Ok(result));
            }
        }
        Err(e) if jobs.len() == 1 => {
            tally.transformed(0, job_context(&batch, &inputs[0]), Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, "transform-batch failed; transforming the call's jobs one by one");
            for (i, input) in inputs.iter().enumerate() {
                if instance.is_poisoned() {
                    match pool.take().await {
                        Ok(fresh) => *instance = fresh,
                        Err(e) => {
                            tally.failed(i, e);
                            continue;
                        }
                    }
                }
                let result = instance
                    .transform_batch(&batch, std::slice::from_ref(input))
                    .await
                    .map(|mut one| one.remove(0));
                tally.transformed(i, job_context(&batch, input), result);
            }
        }
    }

    if tally.requests.is_empty() {
        return tally.finish();
    }
    if instance.is_poisoned() {
        // The last transform trapped: send with a fresh instance.
        match pool.take().await {
            Ok(fresh) => *instance = fresh,
            Err(e) => {
                tally.sent(Err(e));
                return tally.finish();
            }
        }
    }
    let result = instance.send(&tally.requests).await;
    tally.sent(result);
    tally.finish()
}

/// The outcomes of one call's jobs as they become known, and the requests for its `send`.
struct Tally {
    outcomes: Vec<Option<JobOutcome>>,
    requests: Vec<Request>,
    /// The job (index in the call) each request came from.
    owners: Vec<usize>,
}

impl Tally {
    fn new(jobs: usize) -> Tally {
        Tally {
            outcomes: vec![None; jobs],
            requests: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Job `i` was not attempted: no instance could take it.
    fn failed(&mut self, i: usize, e: CallError) {
        self.outcomes[i] = Some(from_call_error(e));
    }

    /// What `transform` of job `i` came to: its payloads join the call's requests; no payloads
    /// means the plugin filtered the job out, which is its outcome.
    fn transformed(
        &mut self,
        i: usize,
        context: JobContext,
        result: Result<Result<Vec<Vec<u8>>, TransformError>, CallError>,
    ) {
        let outcome = match result {
            Ok(Ok(payloads)) if payloads.is_empty() => {
                tracing::debug!(
                    job = context.job_id,
                    "transform produced no payloads; skipped"
                );
                JobOutcome::Skipped
            }
            Ok(Ok(mut payloads)) => {
                // The context goes with the last payload; earlier ones get copies.
                let last = payloads.pop();
                for body in payloads {
                    self.requests.push(Request {
                        context: context.clone(),
                        body,
                    });
                    self.owners.push(i);
                }
                if let Some(body) = last {
                    self.requests.push(Request { context, body });
                    self.owners.push(i);
                }
                return;
            }
            Ok(Err(TransformError::Retry(f))) => JobOutcome::Retry {
                code: f.code,
                message: f.message,
            },
            Ok(Err(TransformError::Abort(f))) => JobOutcome::Abort {
                code: f.code,
                message: f.message,
            },
            Err(e) => from_call_error(e),
        };
        self.outcomes[i] = Some(outcome);
    }

    /// What `send` of every request came to. A job with several payloads is as good as its
    /// worst one.
    fn sent(&mut self, result: Result<Vec<Outcome>, CallError>) {
        let owners = std::mem::take(&mut self.owners);
        match result {
            Ok(results) => {
                for (owner, result) in owners.into_iter().zip(results) {
                    let o = from_outcome(result);
                    self.outcomes[owner] = Some(match self.outcomes[owner].take() {
                        None => o,
                        Some(prev) => worst(prev, o),
                    });
                }
            }
            Err(e) => {
                for owner in owners {
                    self.outcomes[owner] = Some(from_call_error(e.clone()));
                }
            }
        }
    }

    /// One outcome per job. Every job has one by now, unless its payloads got none back: it
    /// must not pass for delivered.
    fn finish(self) -> Vec<JobOutcome> {
        self.outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| JobOutcome::Retry {
                    code: MISSING_OUTCOME.to_string(),
                    message: "the plugin's send returned no outcome for this job's payloads"
                        .to_string(),
                })
            })
            .collect()
    }
}

/// How long the call's jobs have waited since they arrived, on average (the host's clock
/// stamped `received_at`, so no clock skew enters; a negative span counts as zero).
fn mean_wait(jobs: &[Job]) -> Duration {
    if jobs.is_empty() {
        return Duration::ZERO;
    }
    let now = time::OffsetDateTime::now_utc();
    let total: f64 = jobs
        .iter()
        .map(|j| (now - j.received_at).as_seconds_f64().max(0.0))
        .sum();
    Duration::from_secs_f64(total / jobs.len() as f64)
}

/// What `transform-batch` is told about `job`. The idempotency key is defined here, once.
fn batch_job(destination_id: &str, job: &Job) -> BatchJob {
    BatchJob {
        job_id: job.event_id,
        idempotency_key: format!("{}:{}", job.message_id, destination_id),
        message_id: job.message_id.clone(),
        source_id: job.source_id.clone(),
        attempt: job.attempt,
        event: job.event.clone(),
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
        code: e.code.as_str().to_string(),
        message: e.message,
    }
}

/// A job with several payloads is as good as its worst one:
/// abort > too large > retry > throttle > delivered.
fn worst(a: JobOutcome, b: JobOutcome) -> JobOutcome {
    fn rank(o: &JobOutcome) -> u8 {
        match o {
            JobOutcome::Delivered | JobOutcome::Skipped => 0,
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
    use sluice_runtime::CallErrorCode;
    use sluice_runtime::bindings::Failure;

    fn context(job: i64) -> JobContext {
        JobContext {
            job_id: job,
            idempotency_key: format!("m{job}:d"),
            message_id: format!("m{job}"),
            workspace_id: "w".into(),
            source_id: "s".into(),
            destination_id: "d".into(),
            attempt: 0,
        }
    }

    fn payloads(n: usize) -> Result<Result<Vec<Vec<u8>>, TransformError>, CallError> {
        Ok(Ok(vec![b"{}".to_vec(); n]))
    }

    fn failure(code: &str) -> Failure {
        Failure {
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn a_job_without_payloads_is_skipped_not_delivered() {
        let mut t = Tally::new(2);
        t.transformed(0, context(1), payloads(0));
        t.transformed(1, context(2), payloads(1));
        assert_eq!(t.owners, vec![1], "only the second job is sent");
        t.sent(Ok(vec![Outcome::Delivered]));
        assert_eq!(t.finish(), vec![JobOutcome::Skipped, JobOutcome::Delivered]);
    }

    #[test]
    fn a_job_whose_payloads_got_no_outcome_is_retried() {
        let mut t = Tally::new(2);
        t.transformed(0, context(1), payloads(2));
        t.transformed(1, context(2), payloads(1));
        // One outcome for three requests (`send` itself refuses this; the tally must not
        // turn the gap into a delivery either).
        t.sent(Ok(vec![Outcome::Delivered]));
        let missing = JobOutcome::Retry {
            code: MISSING_OUTCOME.into(),
            message: "the plugin's send returned no outcome for this job's payloads".into(),
        };
        assert_eq!(t.finish(), vec![JobOutcome::Delivered, missing.clone()]);

        // Nothing sent at all.
        let mut t = Tally::new(1);
        t.transformed(0, context(1), payloads(1));
        assert_eq!(t.finish(), vec![missing]);
    }

    #[test]
    fn each_job_gets_the_worst_outcome_of_its_payloads_or_its_own_failure() {
        let mut t = Tally::new(4);
        t.transformed(0, context(1), payloads(2));
        t.transformed(
            1,
            context(2),
            Ok(Err(TransformError::Abort(failure("bad_event")))),
        );
        t.transformed(
            2,
            context(3),
            Err(CallError {
                code: CallErrorCode::Trap,
                message: "boom".into(),
            }),
        );
        t.transformed(3, context(4), payloads(1));
        t.sent(Ok(vec![
            Outcome::Delivered,
            Outcome::Retry(failure("http_503")),
            Outcome::Delivered,
        ]));
        let codes: Vec<Option<String>> = t
            .finish()
            .into_iter()
            .map(|o| match o {
                JobOutcome::Retry { code, .. } | JobOutcome::Abort { code, .. } => Some(code),
                JobOutcome::Delivered => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            [
                Some("http_503".to_string()),
                Some("bad_event".to_string()),
                Some("plugin_trap".to_string()),
                None
            ]
        );
    }

    #[test]
    fn a_failed_send_fails_every_job_that_sent_and_no_other() {
        let mut t = Tally::new(2);
        t.transformed(0, context(1), payloads(0));
        t.transformed(1, context(2), payloads(3));
        t.sent(Err(CallError {
            code: CallErrorCode::Timeout,
            message: "slow".into(),
        }));
        assert_eq!(
            t.finish(),
            vec![
                JobOutcome::Skipped,
                JobOutcome::Retry {
                    code: "plugin_timeout".into(),
                    message: "slow".into(),
                }
            ]
        );
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
