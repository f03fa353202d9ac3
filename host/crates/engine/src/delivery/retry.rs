//! Pure retry decisions: what a job's outcome means for its next state.
//!
//! - Backoff after the n-th failed attempt: `min(min_backoff · 2^(n−1), max_backoff)` plus up to
//!   20% jitter, so keys that failed together do not retry in lockstep.
//! - Abort when the job has been retried for longer than `window` *and* at least
//!   `max_attempts` times, or at once on a permanent failure.
//! - Throttling waits without spending an attempt.
//!
//! Defaults are RudderStack's: 10 s, 300 s, 3 attempts, 3 h (≈ 40 attempts).

use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use crate::lane::Decision;
use sluice_core::RetryOverrides;

/// The effective retry policy of one destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: u32,
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            max_attempts: 3,
            window: Duration::from_secs(3 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Destination overrides win over the plugin manifest's, which win over the defaults.
    pub fn resolve(destination: &RetryOverrides, manifest: &RetryOverrides) -> RetryPolicy {
        let d = RetryPolicy::default();
        let min_backoff = destination
            .min_backoff
            .or(manifest.min_backoff)
            .unwrap_or(d.min_backoff);
        let max_backoff = destination
            .max_backoff
            .or(manifest.max_backoff)
            .unwrap_or(d.max_backoff)
            .max(min_backoff);
        RetryPolicy {
            min_backoff,
            max_backoff,
            max_attempts: destination
                .max_attempts
                .or(manifest.max_attempts)
                .unwrap_or(d.max_attempts),
            window: destination.window.or(manifest.window).unwrap_or(d.window),
        }
    }

    /// Backoff after `attempts` failed attempts (≥ 1), without jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(32);
        self.min_backoff
            .saturating_mul(1u32 << exp.min(31))
            .min(self.max_backoff)
    }
}

/// What one attempt of a job came to.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Delivered,
    /// `transform` returned no payloads: the plugin filtered the job out and nothing was sent.
    Skipped,
    Retry {
        code: String,
        message: String,
    },
    Throttled(Duration),
    Abort {
        code: String,
        message: String,
    },
    /// The destination found the request too large (413). The lane sends the job again in a
    /// smaller call; when it was alone in its call, it is aborted (see `decide`).
    TooLarge {
        code: String,
        message: String,
    },
}

/// Decides the next state of a job whose attempt (the `attempts_before + 1`-th) ended in
/// `outcome` at `now`. `first_attempt_at` is when its first attempt started.
pub fn decide(
    policy: &RetryPolicy,
    attempts_before: u32,
    first_attempt_at: OffsetDateTime,
    now: OffsetDateTime,
    outcome: JobOutcome,
    rng: &mut impl Rng,
) -> Decision {
    match outcome {
        JobOutcome::Delivered => Decision::Delivered,
        JobOutcome::Skipped => Decision::Skipped,
        // A job that reaches this too large was alone in its call: no smaller call can carry it.
        JobOutcome::Abort { code, message } | JobOutcome::TooLarge { code, message } => {
            Decision::Aborted {
                code,
                text: message,
            }
        }
        JobOutcome::Throttled(after) => Decision::Throttled { at: now + after },
        JobOutcome::Retry { code, message } => {
            let attempts = attempts_before + 1;
            let retrying_for = (now - first_attempt_at).max(time::Duration::ZERO);
            let window = time::Duration::try_from(policy.window).unwrap_or(time::Duration::MAX);
            if retrying_for >= window && attempts >= policy.max_attempts {
                return Decision::Aborted {
                    text: format!(
                        "gave up after {attempts} attempts over {}: {message}",
                        humantime::format_duration(Duration::from_secs(
                            retrying_for.whole_seconds().max(0) as u64
                        ))
                    ),
                    code,
                };
            }
            let base = policy.backoff(attempts);
            let jitter = base.mul_f64(rng.random_range(0.0..0.2));
            Decision::Retry {
                code,
                text: message,
                at: now + base + jitter,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn retry() -> JobOutcome {
        JobOutcome::Retry {
            code: "http_500".into(),
            message: "boom".into(),
        }
    }

    #[test]
    fn a_job_too_large_by_itself_is_aborted_with_its_failure() {
        let now = OffsetDateTime::now_utc();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let outcome = JobOutcome::TooLarge {
            code: "http_413".into(),
            message: "HTTP 413".into(),
        };
        let d = decide(&RetryPolicy::default(), 0, now, now, outcome, &mut rng);
        assert!(
            matches!(&d, Decision::Aborted { code, .. } if code == "http_413"),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(p.backoff(1000).as_secs(), 300);
    }

    #[test]
    fn retry_is_scheduled_with_bounded_jitter() {
        let p = RetryPolicy::default();
        let now = OffsetDateTime::now_utc();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempts_before in 0..5u32 {
            match decide(&p, attempts_before, now, now, retry(), &mut rng) {
                Decision::Retry { at, code, .. } => {
                    assert_eq!(code, "http_500");
                    let wait = at - now;
                    let base = p.backoff(attempts_before + 1);
                    assert!(
                        wait >= base && wait <= base.mul_f64(1.2),
                        "{wait:?} vs {base:?}"
                    );
                }
                other => panic!("expected a retry, got {other:?}"),
            }
        }
    }

    #[test]
    fn aborts_only_after_window_and_max_attempts() {
        let p = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let first = OffsetDateTime::now_utc();
        // Many attempts but within the window: keep retrying.
        let soon = first + time::Duration::hours(1);
        assert!(matches!(
            decide(&p, 20, first, soon, retry(), &mut rng),
            Decision::Retry { .. }
        ));
        // Past the window but too few attempts: keep retrying.
        let late = first + time::Duration::hours(4);
        assert!(matches!(
            decide(&p, 1, first, late, retry(), &mut rng),
            Decision::Retry { .. }
        ));
        // Past the window and enough attempts: abort, keeping the code.
        match decide(&p, 2, first, late, retry(), &mut rng) {
            Decision::Aborted { code, text } => {
                assert_eq!(code, "http_500");
                assert!(text.starts_with("gave up after 3 attempts"), "{text}");
            }
            other => panic!("expected abort, got {other:?}"),
        }
    }

    #[test]
    fn permanent_failure_aborts_at_once_and_throttle_spends_nothing() {
        let p = RetryPolicy::default();
        let now = OffsetDateTime::now_utc();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let abort = JobOutcome::Abort {
            code: "http_400".into(),
            message: "bad".into(),
        };
        assert!(matches!(
            decide(&p, 0, now, now, abort, &mut rng),
            Decision::Aborted { .. }
        ));
        let t = decide(
            &p,
            0,
            now,
            now,
            JobOutcome::Throttled(Duration::from_secs(7)),
            &mut rng,
        );
        assert_eq!(
            t,
            Decision::Throttled {
                at: now + Duration::from_secs(7)
            }
        );
    }

    #[test]
    fn a_skipped_job_is_finished_as_skipped_not_delivered() {
        let p = RetryPolicy::default();
        let now = OffsetDateTime::now_utc();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = decide(&p, 0, now, now, JobOutcome::Skipped, &mut rng);
        assert_eq!(d, Decision::Skipped);
    }

    #[test]
    fn destination_overrides_win() {
        let dest = RetryOverrides {
            max_attempts: Some(9),
            ..Default::default()
        };
        let manifest = RetryOverrides {
            max_attempts: Some(5),
            min_backoff: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let p = RetryPolicy::resolve(&dest, &manifest);
        assert_eq!(p.max_attempts, 9);
        assert_eq!(p.min_backoff, Duration::from_secs(1));
        assert_eq!(p.max_backoff, Duration::from_secs(300));
    }
}
