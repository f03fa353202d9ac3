//! The bridge between an author's [`Destination`] and the generated component exports.
//!
//! Contract: [`export_destination!`](crate::export_destination) exports [`Adapter<T>`] as the
//! component's `plugin` interface (`configure`/`transform-batch`/`send`). The adapter deserializes
//! the config JSON into `T::Config` (errors name the field path, see `config.rs`), keeps the
//! configured instance (a successful `configure` replaces it, a failed one clears it),
//! answers `transform-batch`/`send` before a successful `configure` with retry failures coded
//! `not_configured` instead of trapping, aborts events that do not parse (`invalid_event`),
//! runs the author's per-event [`Destination::transform_json`] for each job of a
//! `transform-batch` (one result per job, in order: authors write no batch code), and always
//! returns exactly one outcome per request, whatever the author's `send` returned.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::sluice::destination::plugin::Guest;
use crate::bindings::sluice::destination::types as wire;
use crate::{Destination, Failure, JobContext, Outcome, Request, TransformError};

thread_local! {
    // A component instance is single-threaded and exports exactly one destination type, so
    // one type-erased slot is enough; it lets the generic adapter live in the SDK (statics
    // cannot be generic) and keeps the export macro small.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Exports `T` through the generated `Guest` trait. Use
/// [`export_destination!`](crate::export_destination) rather than naming this directly.
pub struct Adapter<T>(PhantomData<T>);

impl<T: Destination> Adapter<T> {
    /// Run `f` with the configured instance, or return `None` if there is none.
    fn with_instance<R>(f: impl FnOnce(&T) -> R) -> Option<R> {
        INSTANCE.with_borrow(|slot| slot.as_ref()?.downcast_ref::<T>().map(f))
    }
}

fn not_configured() -> Failure {
    Failure::new(
        "not_configured",
        "the destination was called before a successful configure",
    )
}

impl<T: Destination> Guest for Adapter<T> {
    fn configure(config: String) -> Result<(), String> {
        // Clear first: after a failed reconfigure, serving the old config would be wrong.
        INSTANCE.set(None);
        // The host shows this text to the operator: `field.path: what is wrong`.
        let instance = crate::config::configure::<T>(&config).map_err(|err| err.to_string())?;
        INSTANCE.set(Some(Box::new(instance)));
        Ok(())
    }

    fn transform_batch(
        batch: wire::BatchContext,
        jobs: Vec<wire::BatchJob>,
    ) -> Vec<Result<Vec<Vec<u8>>, wire::TransformError>> {
        let expected = jobs.len();
        let results = Adapter::<T>::with_instance(|instance| {
            // One context, refilled per job: the call's shared fields are copied once.
            let mut context = JobContext {
                workspace_id: batch.workspace_id,
                destination_id: batch.destination_id,
                ..JobContext::default()
            };
            jobs.into_iter()
                .map(|job| {
                    context.job_id = job.job_id;
                    context.idempotency_key = job.idempotency_key;
                    context.message_id = job.message_id;
                    context.source_id = job.source_id;
                    context.attempt = job.attempt;
                    instance
                        .transform_json(&context, &job.event)
                        .map_err(Into::into)
                })
                .collect()
        });
        results
            .unwrap_or_else(|| vec![Err(TransformError::Retry(not_configured()).into()); expected])
    }

    fn send(requests: Vec<wire::Request>) -> Vec<wire::Outcome> {
        let expected = requests.len();
        let requests: Vec<Request> = requests.into_iter().map(Request::from).collect();
        let Some(mut outcomes) = Adapter::<T>::with_instance(|instance| instance.send(requests))
        else {
            return vec![Outcome::Retry(not_configured()).into(); expected];
        };
        if outcomes.len() != expected {
            // The host pairs outcomes with requests by position; a wrong count would
            // misattribute them, so fix the shape here and leave a trace for the author.
            crate::log::error(&format!(
                "send returned {} outcomes for {expected} requests; extra ones are dropped, \
                 missing ones retried",
                outcomes.len()
            ));
            outcomes.truncate(expected);
            outcomes.resize(
                expected,
                Outcome::retry(
                    "missing_outcome",
                    "send returned no outcome for this request",
                ),
            );
        }
        outcomes.into_iter().map(Into::into).collect()
    }
}

impl From<wire::JobContext> for JobContext {
    fn from(ctx: wire::JobContext) -> JobContext {
        JobContext {
            job_id: ctx.job_id,
            idempotency_key: ctx.idempotency_key,
            message_id: ctx.message_id,
            workspace_id: ctx.workspace_id,
            source_id: ctx.source_id,
            destination_id: ctx.destination_id,
            attempt: ctx.attempt,
        }
    }
}

impl From<wire::Request> for Request {
    fn from(req: wire::Request) -> Request {
        Request {
            context: req.context.into(),
            body: req.body,
        }
    }
}

impl From<Failure> for wire::Failure {
    fn from(failure: Failure) -> wire::Failure {
        wire::Failure {
            code: failure.code,
            message: failure.message,
        }
    }
}

impl From<TransformError> for wire::TransformError {
    fn from(err: TransformError) -> wire::TransformError {
        match err {
            TransformError::Retry(failure) => wire::TransformError::Retry(failure.into()),
            TransformError::Abort(failure) => wire::TransformError::Abort(failure.into()),
        }
    }
}

impl From<Outcome> for wire::Outcome {
    fn from(outcome: Outcome) -> wire::Outcome {
        match outcome {
            Outcome::Delivered => wire::Outcome::Delivered,
            Outcome::Retry(failure) => wire::Outcome::Retry(failure.into()),
            // Milliseconds in a u64 outlast any sane wait; saturate rather than wrap.
            Outcome::Throttled(wait) => {
                wire::Outcome::Throttled(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
            }
            Outcome::Abort(failure) => wire::Outcome::Abort(failure.into()),
            Outcome::TooLarge(failure) => wire::Outcome::TooLarge(failure.into()),
        }
    }
}

/// Register `$ty` (which must implement [`Destination`](crate::Destination)) as this
/// component's destination. Invoke it once, at module level, in the plugin crate.
///
/// In a native build (unit tests) it only checks the type; the component exports are
/// emitted for `wasm32` targets only.
///
/// A type that is not a [`Destination`](crate::Destination) is an ordinary compile error:
///
/// ```compile_fail
/// struct NotADestination;
/// sluice_sdk::export_destination!(NotADestination);
/// ```
#[macro_export]
macro_rules! export_destination {
    ($ty:ty) => {
        // A wrong type fails here, with a plain "trait bound not satisfied" error.
        const _: fn() = || {
            fn assert_destination<T: $crate::Destination>() {}
            assert_destination::<$ty>();
        };
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __SluiceDestinationAdapter = $crate::__private::Adapter<$ty>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__SluiceDestinationAdapter with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::job_context;
    use crate::{ConfigError, Event};

    /// Answers each request by its body: "ok" delivers, anything else aborts; "short"
    /// configs return one outcome too few, to exercise the count guard.
    struct Echo {
        short: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EchoConfig {
        mode: String,
        #[serde(default)]
        limit: Option<u64>,
    }

    impl Destination for Echo {
        type Config = EchoConfig;

        fn configure(config: EchoConfig) -> Result<Self, ConfigError> {
            let _ = config.limit;
            match config.mode.as_str() {
                "normal" => Ok(Echo { short: false }),
                "short" => Ok(Echo { short: true }),
                _ => Err(ConfigError::field(
                    "mode",
                    "expected \"normal\" or \"short\"",
                )),
            }
        }

        fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
            let mut outcomes: Vec<Outcome> = requests
                .iter()
                .map(|req| match req.body.as_slice() {
                    b"ok" => Outcome::Delivered,
                    _ => Outcome::abort("bad", "not ok"),
                })
                .collect();
            if self.short {
                outcomes.pop();
            }
            outcomes
        }
    }

    type Exported = Adapter<Echo>;

    fn wire_context() -> wire::JobContext {
        let ctx = job_context(7);
        wire::JobContext {
            job_id: ctx.job_id,
            idempotency_key: ctx.idempotency_key,
            message_id: ctx.message_id,
            workspace_id: ctx.workspace_id,
            source_id: ctx.source_id,
            destination_id: ctx.destination_id,
            attempt: ctx.attempt,
        }
    }

    fn wire_batch() -> wire::BatchContext {
        let ctx = job_context(7);
        wire::BatchContext {
            workspace_id: ctx.workspace_id,
            destination_id: ctx.destination_id,
        }
    }

    fn wire_job(job_id: i64, event: &str) -> wire::BatchJob {
        let ctx = job_context(job_id);
        wire::BatchJob {
            job_id,
            idempotency_key: ctx.idempotency_key,
            message_id: ctx.message_id,
            source_id: ctx.source_id,
            attempt: ctx.attempt,
            event: event.into(),
        }
    }

    /// `transform-batch` of one job with `event`.
    fn transform_one(event: &str) -> Result<Vec<Vec<u8>>, wire::TransformError> {
        let mut results = Exported::transform_batch(wire_batch(), vec![wire_job(7, event)]);
        assert_eq!(results.len(), 1);
        results.remove(0)
    }

    fn wire_request(body: &str) -> wire::Request {
        wire::Request {
            context: wire_context(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn failure_code(outcome: &wire::Outcome) -> Option<&str> {
        match outcome {
            wire::Outcome::Retry(f) | wire::Outcome::Abort(f) | wire::Outcome::TooLarge(f) => {
                Some(&f.code)
            }
            _ => None,
        }
    }

    #[test]
    fn calls_before_configure_retry_as_not_configured() {
        let err = transform_one("{}").expect_err("unconfigured");
        assert!(matches!(err, wire::TransformError::Retry(f) if f.code == "not_configured"));
        let outcomes = Exported::send(vec![wire_request("ok"), wire_request("ok")]);
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, wire::Outcome::Retry(f) if f.code == "not_configured"))
        );
    }

    #[test]
    fn configure_errors_are_reported_and_clear_the_old_instance() {
        let err = Exported::configure("{".into()).expect_err("bad json");
        assert!(err.contains("not valid JSON"), "{err}");
        Exported::configure(r#"{"mode": "normal"}"#.into()).expect("valid");
        let err = Exported::configure(r#"{"mode": 1}"#.into()).expect_err("invalid mode");
        assert!(err.starts_with("mode:"), "{err}");
        let outcomes = Exported::send(vec![wire_request("ok")]);
        assert_eq!(failure_code(&outcomes[0]), Some("not_configured"));
    }

    #[test]
    fn configure_errors_name_the_field_path() {
        let cases = [
            (
                r#"{"mode": "normal", "limit": "123"}"#,
                r#"limit: invalid type: string "123", expected u64"#,
            ),
            (r#"{"limit": 1}"#, "mode: missing field `mode`"),
            (
                r#"{"mode": "fast"}"#,
                r#"mode: expected "normal" or "short""#,
            ),
        ];
        for (config, expected) in cases {
            let err = Exported::configure(config.into()).expect_err(config);
            assert_eq!(err, expected);
        }
        let err = Exported::configure(r#"{"mode": "normal", "lmit": 1}"#.into())
            .expect_err("unknown field");
        assert!(
            err.starts_with("lmit: unknown field `lmit`, expected `mode` or `limit`"),
            "{err}"
        );
    }

    #[test]
    fn transform_defaults_to_the_event_json_and_aborts_invalid_events() {
        Exported::configure(r#"{"mode": "normal"}"#.into()).expect("valid");
        let event = r#"{"type":"track","messageId":"m-7","event":"Signed Up"}"#;
        let payloads = transform_one(event).expect("transformed");
        let parsed: serde_json::Value = serde_json::from_slice(&payloads[0]).expect("json payload");
        assert_eq!(
            parsed,
            serde_json::from_str::<serde_json::Value>(event).expect("json")
        );

        let err = transform_one(r#"{"type":"track"}"#).expect_err("no messageId");
        assert!(matches!(err, wire::TransformError::Abort(f) if f.code == "invalid_event"));
    }

    /// Its payload is the job context it was given, to check what `transform-batch` passes.
    struct Stamp;

    impl Destination for Stamp {
        type Config = serde_json::Value;

        fn configure(_: serde_json::Value) -> Result<Self, ConfigError> {
            Ok(Stamp)
        }

        fn transform(
            &self,
            ctx: &JobContext,
            event: &Event,
        ) -> Result<Vec<Vec<u8>>, TransformError> {
            if event.event.as_deref() == Some("skip") {
                return Ok(Vec::new());
            }
            Ok(vec![format!("{ctx:?}").into_bytes()])
        }

        fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
            vec![Outcome::Delivered; requests.len()]
        }
    }

    #[test]
    fn transform_batch_runs_the_per_event_transform_for_each_job_in_order() {
        Adapter::<Stamp>::configure("{}".into()).expect("valid");
        let track = |id: &str, name: &str| {
            format!(r#"{{"type":"track","messageId":"{id}","event":"{name}"}}"#)
        };
        let mut jobs = vec![
            wire_job(1, &track("m-1", "a")),
            wire_job(2, r#"{"type":"track"}"#),
            wire_job(3, &track("m-3", "skip")),
            wire_job(4, &track("m-4", "b")),
        ];
        jobs[3].attempt = 5;
        jobs[3].source_id = "other-source".into();
        let results = Adapter::<Stamp>::transform_batch(wire_batch(), jobs);
        assert_eq!(results.len(), 4, "one result per job");

        let stamped = |r: &Result<Vec<Vec<u8>>, wire::TransformError>| {
            let payloads = r.as_ref().expect("transformed");
            String::from_utf8(payloads[0].clone()).expect("utf-8")
        };
        let mut first = job_context(1);
        assert_eq!(stamped(&results[0]), format!("{first:?}"));
        assert!(
            matches!(&results[1], Err(wire::TransformError::Abort(f)) if f.code == "invalid_event")
        );
        assert_eq!(
            results[2].as_ref().map(Vec::len).ok(),
            Some(0),
            "filtered out"
        );
        // Each job's own fields, the call's shared ones: nothing leaks from the job before.
        first = job_context(4);
        first.attempt = 5;
        first.source_id = "other-source".into();
        assert_eq!(stamped(&results[3]), format!("{first:?}"));
    }

    #[test]
    fn send_keeps_order_and_fixes_a_wrong_outcome_count() {
        Exported::configure(r#"{"mode": "normal"}"#.into()).expect("valid");
        let outcomes = Exported::send(vec![wire_request("ok"), wire_request("no")]);
        assert!(matches!(outcomes[0], wire::Outcome::Delivered));
        assert_eq!(failure_code(&outcomes[1]), Some("bad"));

        Exported::configure(r#"{"mode": "short"}"#.into()).expect("valid");
        let outcomes = Exported::send(vec![wire_request("ok"), wire_request("ok")]);
        assert_eq!(outcomes.len(), 2);
        assert!(matches!(outcomes[0], wire::Outcome::Delivered));
        assert_eq!(failure_code(&outcomes[1]), Some("missing_outcome"));
    }

    #[test]
    fn throttle_converts_to_milliseconds() {
        let wait = std::time::Duration::from_millis(1500);
        assert!(matches!(
            wire::Outcome::from(Outcome::Throttled(wait)),
            wire::Outcome::Throttled(1500)
        ));
        let forever = std::time::Duration::MAX;
        assert!(matches!(
            wire::Outcome::from(Outcome::Throttled(forever)),
            wire::Outcome::Throttled(u64::MAX)
        ));
    }
}
