//! A destination built with `wit-bindgen` directly against `wit/destination.wit` as it was at
//! 0.1.1, the last 0.1 release (a frozen copy, never to be edited): a 0.2 host must keep
//! loading it and calling its per-job `transform` (wit/README.md). Config `{ "url": … }`;
//! `transform` logs `wit-0.1.1: transform <job-id>`; `send` asks `log.enabled` (0.1.1's
//! addition) before logging, POSTs each payload there and maps 2xx to delivered, anything
//! else to retry.

use std::cell::RefCell;

use exports::sluice::destination::plugin::Guest;
use sluice::destination::http::{self, HttpRequest};
use sluice::destination::log::{self, Level};
use sluice::destination::types::{Failure, JobContext, Outcome, Request, TransformError};

wit_bindgen::generate!({
    path: "wit",
    world: "destination",
});

thread_local! {
    static URL: RefCell<String> = const { RefCell::new(String::new()) };
}

struct Frozen;

impl Guest for Frozen {
    fn configure(config: String) -> Result<(), String> {
        let config: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        let url = config["url"].as_str().ok_or("url: required")?;
        URL.with(|u| *u.borrow_mut() = url.to_string());
        Ok(())
    }

    fn transform(context: JobContext, event: String) -> Result<Vec<Vec<u8>>, TransformError> {
        log::log(
            Level::Info,
            &format!("wit-0.1.1: transform {}", context.job_id),
        );
        Ok(vec![event.into_bytes()])
    }

    fn send(requests: Vec<Request>) -> Vec<Outcome> {
        let url = URL.with(|u| u.borrow().clone());
        if log::enabled(Level::Info) {
            log::log(Level::Info, "wit-0.1.1: sending");
        }
        requests
            .into_iter()
            .map(|request| {
                let result = http::send(&HttpRequest {
                    method: "POST".into(),
                    url: url.clone(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: request.body,
                    timeout_ms: None,
                });
                match result {
                    Ok(response) if (200..300).contains(&response.status) => Outcome::Delivered,
                    Ok(response) => Outcome::Retry(Failure {
                        code: format!("http_{}", response.status),
                        message: "not accepted".into(),
                    }),
                    Err(error) => Outcome::Retry(Failure {
                        code: "http_error".into(),
                        message: format!("{error:?}"),
                    }),
                }
            })
            .collect()
    }
}

export!(Frozen);
