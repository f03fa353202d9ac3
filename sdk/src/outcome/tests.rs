//! Tests of `Outcome` and the HTTP-status mapping.

use super::*;

fn status(code: u16) -> Outcome {
    Outcome::from_response(&HttpResponse::new(code).with_body("nope"))
}

#[test]
fn success_statuses_are_delivered() {
    for code in [200, 201, 202, 204, 299] {
        assert_eq!(status(code), Outcome::Delivered, "{code}");
    }
}

#[test]
fn server_errors_and_408_retry() {
    for code in [408, 500, 502, 503, 599] {
        assert_eq!(
            status(code),
            Outcome::retry(format!("http_{code}"), format!("HTTP {code}: nope"))
        );
    }
}

#[test]
fn other_statuses_abort() {
    for code in [100, 301, 304, 400, 401, 403, 404, 409, 422, 600] {
        assert_eq!(
            status(code),
            Outcome::abort(format!("http_{code}"), format!("HTTP {code}: nope"))
        );
    }
}

#[test]
fn throttled_uses_retry_after_seconds() {
    let resp = HttpResponse::new(429).with_header("Retry-After", " 7 ");
    assert_eq!(
        Outcome::from_response(&resp),
        Outcome::Throttled(Duration::from_secs(7))
    );
    for bad in [
        "soon",
        "-1",
        "1.5",
        "Wed, 21 Oct 2015 07:28:00",
        "2015-10-21T07:28:00Z",
    ] {
        let resp = HttpResponse::new(429).with_header("retry-after", bad);
        assert_eq!(
            Outcome::from_response(&resp),
            Outcome::Throttled(DEFAULT_THROTTLE),
            "{bad}"
        );
    }
    assert_eq!(status(429), Outcome::Throttled(DEFAULT_THROTTLE));
}

#[test]
fn throttled_accepts_retry_after_as_an_http_date() {
    // Wed, 21 Oct 2015 07:28:00 GMT
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
    let throttle = |value: &str| {
        let resp = HttpResponse::new(429).with_header("Retry-After", value);
        Outcome::from_response_at(&resp, now)
    };
    assert_eq!(
        throttle("Wed, 21 Oct 2015 07:28:00 GMT"),
        Outcome::Throttled(Duration::ZERO)
    );
    assert_eq!(
        throttle("Wed, 21 Oct 2015 07:29:30 GMT"),
        Outcome::Throttled(Duration::from_secs(90))
    );
    assert_eq!(
        throttle(" Thu, 22 Oct 2015 07:28:00 GMT "),
        Outcome::Throttled(Duration::from_secs(86_400))
    );
    // A date in the past means "retry now", not "use the default".
    assert_eq!(
        throttle("Sun, 06 Nov 1994 08:49:37 GMT"),
        Outcome::Throttled(Duration::ZERO)
    );
    // Sub-second precision of our clock does not matter: the wait rounds to what is left.
    let later = now + Duration::from_millis(400);
    let resp = HttpResponse::new(429).with_header("retry-after", "Wed, 21 Oct 2015 07:28:01 GMT");
    assert_eq!(
        Outcome::from_response_at(&resp, later),
        Outcome::Throttled(Duration::from_millis(600))
    );
    // The date a formatter writes is read back.
    let in_a_minute = OffsetDateTime::from(now) + time::Duration::minutes(1);
    let written = in_a_minute
        .format(&Rfc2822)
        .expect("formattable")
        .replace("+0000", "GMT");
    assert_eq!(
        throttle(&written),
        Outcome::Throttled(Duration::from_secs(60))
    );
    for bad in [
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 25:28:00 GMT",
    ] {
        assert_eq!(throttle(bad), Outcome::Throttled(DEFAULT_THROTTLE), "{bad}");
    }
}

#[test]
fn per_item_marks_listed_items_and_delivers_the_rest() {
    let rejected = || Outcome::abort("invalid_record", "bad time");
    let outcomes = Outcome::per_item(
        4,
        &HttpResponse::new(400).with_body("{\"failed_records\":[...]}"),
        [
            (2, rejected()),
            (0, Outcome::retry("busy", "later")),
            (2, Outcome::Delivered),
        ],
    );
    assert_eq!(
        outcomes,
        [
            Outcome::retry("busy", "later"),
            Outcome::Delivered,
            rejected(),
            Outcome::Delivered
        ]
    );
    let ok = Outcome::per_item(2, &HttpResponse::new(200), [(1, rejected())]);
    assert_eq!(ok, [Outcome::Delivered, rejected()]);
}

#[test]
fn per_item_keeps_the_most_final_outcome_of_an_index_listed_twice() {
    let response = HttpResponse::new(400);
    let abort = |message: &str| Outcome::abort("invalid_record", message);
    let retry = |message: &str| Outcome::retry("busy", message);
    // The listing order does not change the outcome, only the order of the reasons.
    assert_eq!(
        Outcome::per_item(1, &response, [(0, retry("later")), (0, abort("bad time"))]),
        [abort("bad time; later")]
    );
    assert_eq!(
        Outcome::per_item(1, &response, [(0, abort("bad time")), (0, retry("later"))]),
        [abort("bad time; later")]
    );
    // Among equals the first listed gives the code; a repeated message is kept once.
    let outcomes = Outcome::per_item(
        2,
        &response,
        [
            (1, Outcome::abort("missing_field", "`event` is missing")),
            (1, Outcome::abort("invalid_field", "`time` is invalid")),
            (1, Outcome::abort("missing_field", "`event` is missing")),
        ],
    );
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered,
            Outcome::abort("missing_field", "`event` is missing; `time` is invalid"),
        ]
    );
    // Too large beats a retry, a retry beats a throttle, the longest throttle wins, and
    // any failure beats a listing that says delivered.
    let too_large = Outcome::TooLarge(Failure::new("too_big", "over 1 MB"));
    assert_eq!(
        Outcome::per_item(1, &response, [(0, retry("later")), (0, too_large.clone())]),
        [Outcome::TooLarge(Failure::new(
            "too_big",
            "over 1 MB; later"
        ))]
    );
    let wait = |secs| Outcome::Throttled(Duration::from_secs(secs));
    assert_eq!(
        Outcome::per_item(1, &response, [(0, wait(3)), (0, wait(9)), (0, wait(1))]),
        [wait(9)]
    );
    assert_eq!(
        Outcome::per_item(1, &response, [(0, wait(3)), (0, retry("later"))]),
        [retry("later")]
    );
    assert_eq!(
        Outcome::per_item(1, &response, [(0, Outcome::Delivered), (0, wait(3))]),
        [wait(3)]
    );
}

#[test]
fn per_item_without_listed_items_follows_the_status() {
    let none: [(usize, Outcome); 0] = [];
    assert_eq!(
        Outcome::per_item(2, &HttpResponse::new(200), none.clone()),
        [Outcome::Delivered, Outcome::Delivered]
    );
    let unavailable = Outcome::per_item(3, &HttpResponse::new(503), none.clone());
    assert_eq!(unavailable.len(), 3);
    assert!(
        unavailable
            .iter()
            .all(|o| matches!(o, Outcome::Retry(f) if f.code == "http_503"))
    );
    let throttled = HttpResponse::new(429).with_header("retry-after", "3");
    assert_eq!(
        Outcome::per_item(1, &throttled, none),
        [Outcome::Throttled(Duration::from_secs(3))]
    );
    // An index past the end matches no request: the status decides.
    let out_of_range = Outcome::per_item(2, &HttpResponse::new(400), [(2, Outcome::Delivered)]);
    assert!(out_of_range.iter().all(|o| matches!(o, Outcome::Abort(_))));
    assert!(Outcome::per_item(0, &HttpResponse::new(200), [(0, Outcome::Delivered)]).is_empty());
}

#[test]
fn failure_message_is_the_first_kib_of_the_body_lossily() {
    let mut body = vec![b'a'; 2000];
    body[0] = 0xff;
    let Outcome::Retry(failure) = Outcome::from_response(&HttpResponse::new(503).with_body(body))
    else {
        panic!("503 must retry");
    };
    assert_eq!(failure.code, "http_503");
    let excerpt = failure
        .message
        .strip_prefix("HTTP 503: ")
        .expect("status prefix");
    assert!(excerpt.starts_with('\u{fffd}'));
    assert_eq!(excerpt.chars().count(), BODY_EXCERPT);
    let Outcome::Abort(failure) = Outcome::from_response(&HttpResponse::new(400)) else {
        panic!("400 must abort");
    };
    assert_eq!(failure.message, "HTTP 400 (empty body)");
    // Whitespace is no body either (the docs promise the same text).
    let Outcome::Abort(failure) =
        Outcome::from_response(&HttpResponse::new(401).with_body(" \r\n"))
    else {
        panic!("401 must abort");
    };
    assert_eq!(failure, Failure::new("http_401", "HTTP 401 (empty body)"));
    let Outcome::TooLarge(failure) = Outcome::from_response(&HttpResponse::new(413)) else {
        panic!("413 is too large");
    };
    assert_eq!(failure.code, "http_413");
}

#[test]
fn transport_errors_map_to_codes() {
    let cases = [
        (
            HttpError::Denied("evil.example".into()),
            Outcome::retry("host_denied", "evil.example"),
        ),
        (
            HttpError::DeniedAddress("127.0.0.1".into()),
            Outcome::abort("host_denied_address", "127.0.0.1"),
        ),
        (
            HttpError::Timeout,
            Outcome::retry("http_timeout", "no response within the deadline"),
        ),
        (
            HttpError::Connect("refused".into()),
            Outcome::retry("http_connect", "refused"),
        ),
        (
            HttpError::InvalidRequest("bad url".into()),
            Outcome::abort("invalid_request", "bad url"),
        ),
        (
            HttpError::Other("too big".into()),
            Outcome::retry("http_error", "too big"),
        ),
        (
            HttpError::Other("response_too_large: over 4194304 bytes".into()),
            Outcome::retry(
                "http_response_too_large",
                "response_too_large: over 4194304 bytes",
            ),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(Outcome::from_result(Err(error)), expected);
    }
    assert_eq!(
        Outcome::from_result(Ok(HttpResponse::new(200))),
        Outcome::Delivered
    );
}
