//! Test helpers for plugin authors (native builds only).
//!
//! Contract: [`MockHttp::install`] makes [`crate::http::send`] on the current thread call
//! the given handler instead of a host, recording every request; the guard it returns
//! uninstalls the mock when dropped. State is per thread, so tests running in parallel
//! (as `cargo test` does) never see each other's mocks. [`logs`] returns what the plugin
//! logged on this thread since the last install. [`configure`] builds a destination from
//! config JSON exactly as the component export does, errors included.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::config::ConfigError;
use crate::context::{JobContext, Request};
use crate::destination::Destination;
use crate::http::{HttpError, HttpRequest, HttpResponse};
pub use crate::log::Level;

type Handler = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, HttpError>>;

#[derive(Default)]
struct State {
    handler: Option<Handler>,
    requests: Vec<HttpRequest>,
    logs: Vec<(Level, String)>,
    /// Bumped by every install, so an older guard's drop cannot remove a newer mock.
    generation: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// A mock HTTP host for the current thread; dropping it uninstalls the mock.
#[must_use = "the mock is uninstalled when the guard is dropped"]
pub struct MockHttp {
    generation: u64,
    // The mock lives in a thread-local: keep the guard on the thread that installed it.
    _not_send: PhantomData<*const ()>,
}

impl MockHttp {
    /// Answer every request on this thread with `handler`, replacing any previous mock and
    /// clearing the recorded requests.
    pub fn install<F>(handler: F) -> MockHttp
    where
        F: FnMut(&HttpRequest) -> Result<HttpResponse, HttpError> + 'static,
    {
        let generation = STATE.with_borrow_mut(|state| {
            state.generation += 1;
            state.handler = Some(Box::new(handler));
            state.requests.clear();
            state.logs.clear();
            state.generation
        });
        MockHttp {
            generation,
            _not_send: PhantomData,
        }
    }

    /// Answer every request with a copy of `response`.
    pub fn always(response: HttpResponse) -> MockHttp {
        MockHttp::install(move |_| Ok(response.clone()))
    }

    /// The requests sent so far, oldest first.
    pub fn requests(&self) -> Vec<HttpRequest> {
        STATE.with_borrow(|state| state.requests.clone())
    }
}

impl Drop for MockHttp {
    fn drop(&mut self) {
        STATE.with_borrow_mut(|state| {
            if state.generation == self.generation {
                state.handler = None;
                state.requests.clear();
            }
        });
    }
}

/// What the plugin logged (through [`crate::log`]) on this thread since the last
/// [`MockHttp::install`], oldest first.
pub fn logs() -> Vec<(Level, String)> {
    STATE.with_borrow(|state| state.logs.clone())
}

pub(crate) fn record_log(level: Level, msg: &str) {
    STATE.with_borrow_mut(|state| state.logs.push((level, msg.to_owned())));
}

/// What [`crate::http::send`] does in a native build.
pub(crate) fn dispatch(req: &HttpRequest) -> Result<HttpResponse, HttpError> {
    // Take the handler out while it runs, so a handler that itself sends a request (or
    // installs a new mock) does not hit an already-borrowed RefCell.
    let (handler, generation) = STATE.with_borrow_mut(|state| {
        state.requests.push(req.clone());
        (state.handler.take(), state.generation)
    });
    let Some(mut handler) = handler else {
        return Err(HttpError::Other(
            "no mock HTTP host installed on this thread (see sluice_sdk::testing::MockHttp)"
                .to_owned(),
        ));
    };
    let result = handler(req);
    STATE.with_borrow_mut(|state| {
        if state.generation == generation && state.handler.is_none() {
            state.handler = Some(handler);
        }
    });
    result
}

/// Configure a `T` from the destination config `json` (text, as the host passes it) the way
/// the component does: deserialize [`Destination::Config`], then call
/// [`Destination::configure`]. The error is the one the operator would see.
///
/// ```
/// # use sluice_sdk::{ConfigError, Destination, Outcome, Request};
/// #[derive(serde::Deserialize)]
/// struct Config {
///     batch: u32,
/// }
/// struct Dest;
/// impl Destination for Dest {
///     type Config = Config;
///     fn configure(config: Config) -> Result<Self, ConfigError> {
///         if config.batch == 0 {
///             return Err(ConfigError::field("batch", "must be positive"));
///         }
///         Ok(Dest)
///     }
///     fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
///         vec![Outcome::Delivered; requests.len()]
///     }
/// }
///
/// use sluice_sdk::testing::configure;
/// assert!(configure::<Dest>(r#"{"batch": 10}"#).is_ok());
/// let err = configure::<Dest>(r#"{"batch": 0}"#).err().unwrap();
/// assert_eq!(err.to_string(), "batch: must be positive");
/// let err = configure::<Dest>(r#"{"batch": -1}"#).err().unwrap();
/// assert_eq!(err.to_string(), "batch: invalid value: integer `-1`, expected u32");
/// ```
pub fn configure<T: Destination>(json: &str) -> Result<T, ConfigError> {
    crate::config::configure::<T>(json)
}

/// A plausible [`JobContext`] for `job_id` on its first attempt; adjust fields with struct
/// update syntax, e.g. `JobContext { attempt: 2, ..job_context(1) }`.
pub fn job_context(job_id: i64) -> JobContext {
    JobContext {
        job_id,
        idempotency_key: format!("msg-{job_id}:dest-test"),
        message_id: format!("msg-{job_id}"),
        workspace_id: "ws-test".to_owned(),
        source_id: "src-test".to_owned(),
        destination_id: "dest-test".to_owned(),
        attempt: 0,
    }
}

/// A [`Request`] for `job_id` (context from [`job_context`]) carrying `body`.
pub fn request(job_id: i64, body: impl Into<Vec<u8>>) -> Request {
    Request {
        context: job_context(job_id),
        body: body.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::send;

    #[test]
    fn records_requests_and_uninstalls_on_drop() {
        let mut calls = 0;
        let mock = MockHttp::install(move |_| {
            calls += 1;
            Ok(HttpResponse::new(200 + calls))
        });
        let first = send(&HttpRequest::post("http://a/").body("1")).expect("mocked");
        let second = send(&HttpRequest::post("http://b/")).expect("mocked");
        assert_eq!((first.status, second.status), (201, 202));
        let urls: Vec<_> = mock.requests().into_iter().map(|r| r.url).collect();
        assert_eq!(urls, ["http://a/", "http://b/"]);
        drop(mock);
        assert!(matches!(
            send(&HttpRequest::get("http://c/")),
            Err(HttpError::Other(_))
        ));
    }

    #[test]
    fn logs_are_captured_per_thread_and_cleared_by_install() {
        let _mock = MockHttp::always(HttpResponse::new(200));
        crate::log::info("sent 3 events");
        crate::log::warn("one was late");
        assert_eq!(
            logs(),
            vec![
                (Level::Info, "sent 3 events".to_owned()),
                (Level::Warn, "one was late".to_owned())
            ]
        );
        let _again = MockHttp::always(HttpResponse::new(200));
        assert!(logs().is_empty());
    }

    #[test]
    fn an_old_guard_does_not_remove_a_newer_mock() {
        let old = MockHttp::always(HttpResponse::new(500));
        let new = MockHttp::always(HttpResponse::new(204));
        drop(old);
        assert_eq!(
            send(&HttpRequest::get("http://x/")).map(|r| r.status),
            Ok(204)
        );
        assert_eq!(new.requests().len(), 1);
    }
}
