//! A test destination that misbehaves on purpose, for the host's sandbox tests.
//!
//! Contract, by config `{ "mode": …, "url"?: string, "stage"?: "transform" | "send" }`:
//! - `loop`: spins forever (the host's deadline must interrupt it).
//! - `alloc`: allocates 1 MiB blocks without bound (the host's memory limit must stop it).
//! - `panic`: panics with "misbehave: deliberate panic" (the host must contain the trap).
//! - `denied`: `send` POSTs to `http://forbidden.example.invalid/`, a host outside its
//!   allowlist, and maps the host's refusal with `Outcome::from_result` (→ retry `host_denied`).
//! - `ok`: behaves; `send` POSTs each body to `url` (unsigned) and maps the result. Each POST
//!   carries `x-batch-size: <requests in this send call>`, so a receiver sees how the host
//!   batched, and the request's own `timeout_ms` when the config sets one.
//! - `chatty`: logs [`CHATTY_LINES`] lines in every `transform`, then behaves as `ok` (the
//!   host caps a call's log lines).
//!
//! `loop`, `alloc` and `panic` misbehave in `transform` by default; `"stage": "send"` moves
//! the misbehaviour into `send` instead, so both exports' sandboxing can be tested. With
//! `"only_event": NAME`, `transform` misbehaves only for events of that name (a host call of
//! several jobs then fails for one job's sake). Whenever the instance is not misbehaving,
//! `send` acts as in `ok` (and needs `url`).

use std::hint::black_box;

use serde::Deserialize;
use sluice_sdk::http::{self, HttpRequest};
use sluice_sdk::{ConfigError, Destination, Event, JobContext, Outcome, Request, TransformError};

/// The host `denied` mode calls: never in any allowlist (`.invalid` cannot resolve either).
pub const FORBIDDEN_URL: &str = "http://forbidden.example.invalid/";

/// Lines `chatty` logs per `transform`: more than the host keeps per call.
pub const CHATTY_LINES: usize = 150;

/// The config: `mode` is required, `stage` defaults to `transform`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which misbehaviour to show.
    pub mode: Mode,
    /// Where it strikes.
    #[serde(default)]
    pub stage: Stage,
    /// Where `ok` (and a non-misbehaving `send`) POSTs.
    #[serde(default)]
    pub url: Option<String>,
    /// The `timeout-ms` of each POST (the host clamps it to the manifest's `http_timeout`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Misbehave in `transform` only for events with this `event` name.
    #[serde(default)]
    pub only_event: Option<String>,
}

/// Which misbehaviour to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Spin forever.
    Loop,
    /// Allocate without bound.
    Alloc,
    /// Panic.
    Panic,
    /// Send to a host outside the allowlist.
    Denied,
    /// Log too much, then behave.
    Chatty,
    /// Behave.
    Ok,
}

/// Where `loop`/`alloc`/`panic` strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// In `transform` (the default).
    #[default]
    Transform,
    /// In `send`.
    Send,
}

/// The configured test destination.
#[derive(Debug)]
pub struct Misbehave {
    mode: Mode,
    stage: Stage,
    url: Option<String>,
    timeout: Option<std::time::Duration>,
    only_event: Option<String>,
}

impl Destination for Misbehave {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let Config {
            mode,
            stage,
            url,
            timeout_ms,
            only_event,
        } = config;
        if (matches!(mode, Mode::Ok | Mode::Chatty) || only_event.is_some()) && url.is_none() {
            return Err(ConfigError::field("url", "required in ok mode"));
        }
        Ok(Misbehave {
            mode,
            stage,
            url,
            timeout: timeout_ms.map(std::time::Duration::from_millis),
            only_event,
        })
    }

    fn transform(&self, _ctx: &JobContext, event: &Event) -> Result<Vec<Vec<u8>>, TransformError> {
        let chosen = self
            .only_event
            .as_ref()
            .is_none_or(|name| event.event.as_deref() == Some(name.as_str()));
        if self.stage == Stage::Transform && chosen {
            self.misbehave();
        }
        if self.mode == Mode::Chatty {
            for n in 0..CHATTY_LINES {
                sluice_sdk::log::info(&format!("misbehave: chatter {n}"));
            }
        }
        serde_json::to_vec(&event.raw)
            .map(|body| vec![body])
            .map_err(|err| TransformError::abort("invalid_event", err.to_string()))
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        if self.stage == Stage::Send {
            self.misbehave();
        }
        let batch = requests.len();
        requests
            .into_iter()
            .map(|req| self.deliver(req, batch))
            .collect()
    }
}

impl Misbehave {
    /// Diverges in the `loop`, `alloc` and `panic` modes; returns in the others.
    fn misbehave(&self) {
        match self.mode {
            Mode::Loop => spin(),
            Mode::Alloc => hoard(),
            Mode::Panic => panic!("misbehave: deliberate panic"),
            Mode::Denied | Mode::Chatty | Mode::Ok => {}
        }
    }

    fn deliver(&self, req: Request, batch: usize) -> Outcome {
        let url = match (self.mode, &self.url) {
            (Mode::Denied, _) => FORBIDDEN_URL,
            (_, Some(url)) => url,
            (_, None) => return Outcome::abort("no_url", "this misbehave config has no url"),
        };
        let post = HttpRequest::post(url)
            .header("content-type", "application/json")
            .header("x-batch-size", batch.to_string())
            .body(req.body)
            .timeout(self.timeout);
        Outcome::from_result(http::send(&post))
    }
}

fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        // black_box keeps the optimiser from proving the loop pointless.
        turns = black_box(turns.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero fill: a zeroed block could come from untouched (lazily committed)
        // memory, and black_box keeps the hoard from being optimised away.
        hoard.push(vec![0xA5; 1 << 20]);
        black_box(&hoard);
    }
}

sluice_sdk::export_destination!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use sluice_sdk::http::{HttpError, HttpResponse};
    use sluice_sdk::testing::{MockHttp, request};

    fn configure(config: Value) -> Result<Misbehave, String> {
        sluice_sdk::testing::configure::<Misbehave>(&config.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(
            configure(json!({})).unwrap_err(),
            "mode: missing field `mode`"
        );
        let err = configure(json!({"mode": "explode"})).unwrap_err();
        assert!(err.starts_with("mode: unknown variant `explode`"), "{err}");
        assert_eq!(
            configure(json!({"mode": "ok"})).unwrap_err(),
            "url: required in ok mode"
        );
        let err = configure(json!({"mode": "loop", "stage": "never"})).unwrap_err();
        assert!(err.starts_with("stage: unknown variant `never`"), "{err}");
        let err = configure(json!({"mode": "loop", "url": 5})).unwrap_err();
        assert!(err.starts_with("url: invalid type: integer `5`"), "{err}");
        let denied = configure(json!({"mode": "denied"})).expect("valid");
        assert_eq!(
            (denied.mode, denied.stage),
            (Mode::Denied, Stage::Transform)
        );
        let send =
            configure(json!({"mode": "panic", "stage": "send", "url": null})).expect("valid");
        assert_eq!(send.stage, Stage::Send);
    }

    #[test]
    fn denied_posts_to_the_forbidden_host() {
        let dest = configure(json!({"mode": "denied"})).expect("valid");
        let mock = MockHttp::install(|req| Err(HttpError::Denied(req.url.clone())));
        let outcomes = dest.send(vec![request(1, "{}")]);
        assert!(matches!(&outcomes[0], Outcome::Retry(f) if f.code == "host_denied"));
        assert_eq!(mock.requests()[0].url, FORBIDDEN_URL);
    }

    #[test]
    fn ok_posts_to_the_configured_url() {
        let dest = configure(json!({"mode": "ok", "url": "http://127.0.0.1:9/x"})).expect("valid");
        let mock = MockHttp::always(HttpResponse::new(200));
        assert_eq!(
            dest.send(vec![request(1, "{}"), request(2, "{}")]),
            [Outcome::Delivered, Outcome::Delivered]
        );
        let sent = &mock.requests()[0];
        assert_eq!(sent.url, "http://127.0.0.1:9/x");
        assert_eq!(sent.header_value("x-batch-size"), Some("2"));
        assert_eq!(sent.timeout, None);
    }

    #[test]
    #[should_panic(expected = "misbehave: deliberate panic")]
    fn panic_mode_panics_in_transform() {
        let dest = configure(json!({"mode": "panic"})).expect("valid");
        let event = Event::from_json(r#"{"type":"track","messageId":"m"}"#).expect("event");
        let _ = dest.transform(&sluice_sdk::testing::job_context(1), &event);
    }
}
