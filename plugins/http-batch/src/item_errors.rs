//! Per-item outcomes from a response that lists the items it rejected (`item_errors = "errors"`).
//!
//! Contract: for a 2xx, or a 4xx other than 408, 413 and 429, a body of the form
//! `{"errors": [{"index": 3, "message": "…", "retryable": false, "code": "…"}]}` marks item
//! `index` of the request (0-based) aborted, or retried when `retryable` is true, with `code`
//! (default `item_rejected`) and `message`; every other item is delivered. When the body lists
//! nothing (or is not that JSON), or for any other status, the status decides for every item
//! (the SDK's standard mapping).

use serde::Deserialize;
use sluice_sdk::Outcome;
use sluice_sdk::http::HttpResponse;

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    errors: Vec<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemError {
    index: usize,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    code: Option<String>,
}

/// One outcome per item of a request that carried `n` items and got `response`.
pub fn outcomes(n: usize, response: &HttpResponse) -> Vec<Outcome> {
    let status = response.status;
    // 408, 413 and 429 say nothing about individual items; 5xx may come from a proxy.
    let judged = response.is_success()
        || ((400..500).contains(&status) && !matches!(status, 408 | 413 | 429));
    let listed = if judged {
        serde_json::from_slice::<Body>(&response.body)
            .map(|body| body.errors)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let failed = listed.into_iter().map(|item| {
        let code = item
            .code
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "item_rejected".to_owned());
        let message = item.message.unwrap_or_else(|| {
            format!("the receiver rejected item {} (HTTP {status})", item.index)
        });
        let outcome = if item.retryable {
            Outcome::retry(code, message)
        } else {
            Outcome::abort(code, message)
        };
        (item.index, outcome)
    });
    Outcome::per_item(n, response, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_body(status: u16, body: &str) -> Vec<Outcome> {
        outcomes(3, &HttpResponse::new(status).with_body(body))
    }

    #[test]
    fn listed_items_fail_and_the_rest_are_delivered() {
        let body = r#"{"errors":[{"index":1,"message":"bad email","retryable":false,"code":"invalid_email"},
                                 {"index":2,"message":"locked","retryable":true}]}"#;
        for status in [200, 207, 400, 422] {
            assert_eq!(
                with_body(status, body),
                [
                    Outcome::Delivered,
                    Outcome::abort("invalid_email", "bad email"),
                    Outcome::retry("item_rejected", "locked"),
                ],
                "{status}"
            );
        }
        let bare = with_body(400, r#"{"errors":[{"index":0}]}"#);
        assert_eq!(
            bare[0],
            Outcome::abort("item_rejected", "the receiver rejected item 0 (HTTP 400)")
        );
    }

    #[test]
    fn without_a_list_the_status_decides() {
        assert_eq!(with_body(200, "ok"), vec![Outcome::Delivered; 3]);
        assert_eq!(
            with_body(200, r#"{"errors":[]}"#),
            vec![Outcome::Delivered; 3]
        );
        assert!(
            with_body(400, "nope")
                .iter()
                .all(|o| matches!(o, Outcome::Abort(f) if f.code == "http_400"))
        );
        // Statuses about the whole request ignore any list.
        let listed = r#"{"errors":[{"index":0}]}"#;
        assert!(
            with_body(503, listed)
                .iter()
                .all(|o| matches!(o, Outcome::Retry(_)))
        );
        assert!(
            with_body(429, listed)
                .iter()
                .all(|o| matches!(o, Outcome::Throttled(_)))
        );
        assert!(
            with_body(413, listed)
                .iter()
                .all(|o| matches!(o, Outcome::TooLarge(_)))
        );
        // An index past the end names no item.
        assert_eq!(
            with_body(200, r#"{"errors":[{"index":9}]}"#),
            vec![Outcome::Delivered; 3]
        );
    }
}
