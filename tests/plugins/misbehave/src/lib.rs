//! A test destination that misbehaves on purpose, for the host's sandbox tests.
//!
//! Contract, by config `{ "mode": …, "url"?: string, "stage"?: "transform" | "send" }`:
//! - `loop`: spins forever (the host's deadline must interrupt it).
//! - `alloc`: allocates 1 MiB blocks without bound (the host's memory limit must stop it).
//! - `panic`: panics with "misbehave: deliberate panic" (the host must contain the trap).
//! - `denied`: `send` POSTs to `http://forbidden.example.invalid/`, a host outside its
//!   allowlist, and maps the host's refusal with `Outcome::from_result` (→ retry `host_denied`).
//! - `ok`: behaves; `send` POSTs each body to `url` (unsigned) and maps the result.
//!
//! `loop`, `alloc` and `panic` misbehave in `transform` by default; `"stage": "send"` moves
//! the misbehaviour into `send` instead, so both exports' sandboxing can be tested. Whenever
//! the instance is not misbehaving, `send` acts as in `ok` (and needs `url`).

use std::hint::black_box;

use serde_json::Value;
use sluice_sdk::http::{self, HttpRequest};
use sluice_sdk::{Destination, Event, JobContext, Outcome, Request, TransformError};

/// The host `denied` mode calls: never in any allowlist (`.invalid` cannot resolve either).
pub const FORBIDDEN_URL: &str = "http://forbidden.example.invalid/";

/// Which misbehaviour to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spin forever.
    Loop,
    /// Allocate without bound.
    Alloc,
    /// Panic.
    Panic,
    /// Send to a host outside the allowlist.
    Denied,
    /// Behave.
    Ok,
}

/// Where `loop`/`alloc`/`panic` strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In `transform` (the default).
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
}

impl Destination for Misbehave {
    fn configure(config: Value) -> Result<Self, String> {
        let mode = match config.get("mode").and_then(Value::as_str) {
            Some("loop") => Mode::Loop,
            Some("alloc") => Mode::Alloc,
            Some("panic") => Mode::Panic,
            Some("denied") => Mode::Denied,
            Some("ok") => Mode::Ok,
            _ => return Err("mode: required, one of loop, alloc, panic, denied, ok".to_owned()),
        };
        let stage = match config.get("stage").and_then(Value::as_str) {
            None | Some("transform") => Stage::Transform,
            Some("send") => Stage::Send,
            Some(other) => return Err(format!("stage: expected transform or send, got {other:?}")),
        };
        let url = match config.get("url") {
            None | Some(Value::Null) => None,
            Some(Value::String(url)) => Some(url.clone()),
            Some(_) => return Err("url: must be a string".to_owned()),
        };
        if mode == Mode::Ok && url.is_none() {
            return Err("url: required in ok mode".to_owned());
        }
        Ok(Misbehave { mode, stage, url })
    }

    fn transform(&self, _ctx: &JobContext, event: &Event) -> Result<Vec<Vec<u8>>, TransformError> {
        if self.stage == Stage::Transform {
            self.misbehave();
        }
        serde_json::to_vec(&event.raw)
            .map(|body| vec![body])
            .map_err(|err| TransformError::abort("invalid_event", err.to_string()))
    }

    fn send(&self, requests: Vec<Request>) -> Vec<Outcome> {
        if self.stage == Stage::Send {
            self.misbehave();
        }
        requests.into_iter().map(|req| self.deliver(req)).collect()
    }
}

impl Misbehave {
    /// Diverges in the `loop`, `alloc` and `panic` modes; returns in the others.
    fn misbehave(&self) {
        match self.mode {
            Mode::Loop => spin(),
            Mode::Alloc => hoard(),
            Mode::Panic => panic!("misbehave: deliberate panic"),
            Mode::Denied | Mode::Ok => {}
        }
    }

    fn deliver(&self, req: Request) -> Outcome {
        let url = match (self.mode, &self.url) {
            (Mode::Denied, _) => FORBIDDEN_URL,
            (_, Some(url)) => url,
            (_, None) => return Outcome::abort("no_url", "this misbehave config has no url"),
        };
        let post = HttpRequest::post(url)
            .header("content-type", "application/json")
            .body(req.body);
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
    use serde_json::json;
    use sluice_sdk::http::{HttpError, HttpResponse};
    use sluice_sdk::testing::{MockHttp, request};

    #[test]
    fn config_is_validated() {
        assert!(Misbehave::configure(json!({})).is_err());
        assert!(Misbehave::configure(json!({"mode": "explode"})).is_err());
        assert!(
            Misbehave::configure(json!({"mode": "ok"})).is_err(),
            "ok needs a url"
        );
        assert!(Misbehave::configure(json!({"mode": "loop", "stage": "never"})).is_err());
        assert!(Misbehave::configure(json!({"mode": "denied"})).is_ok());
    }

    #[test]
    fn denied_posts_to_the_forbidden_host() {
        let dest = Misbehave::configure(json!({"mode": "denied"})).expect("valid");
        let mock = MockHttp::install(|req| Err(HttpError::Denied(req.url.clone())));
        let outcomes = dest.send(vec![request(1, "{}")]);
        assert!(matches!(&outcomes[0], Outcome::Retry(f) if f.code == "host_denied"));
        assert_eq!(mock.requests()[0].url, FORBIDDEN_URL);
    }

    #[test]
    fn ok_posts_to_the_configured_url() {
        let dest = Misbehave::configure(json!({"mode": "ok", "url": "http://127.0.0.1:9/x"}))
            .expect("valid");
        let mock = MockHttp::always(HttpResponse::new(200));
        assert_eq!(dest.send(vec![request(1, "{}")]), [Outcome::Delivered]);
        assert_eq!(mock.requests()[0].url, "http://127.0.0.1:9/x");
    }

    #[test]
    #[should_panic(expected = "misbehave: deliberate panic")]
    fn panic_mode_panics_in_transform() {
        let dest = Misbehave::configure(json!({"mode": "panic"})).expect("valid");
        let event = Event::from_json(r#"{"type":"track","messageId":"m"}"#).expect("event");
        let _ = dest.transform(&sluice_sdk::testing::job_context(1), &event);
    }
}
