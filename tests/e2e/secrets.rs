//! Secrets stay secret: config values the manifest marks secret, and tokens in URLs, never
//! reach the host's log or the store, however the plugin or the destination echoes them.

use std::time::Duration;

use crate::harness::*;

const SECRET_VALUE: &str = "S3CRET-do-not-leak-7f3a";
const URL_TOKEN: &str = "URLTOKEN";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_and_url_tokens_never_reach_the_log_or_the_store() {
    // A destination that answers 500 quoting the secret and its own URL, as careless APIs do.
    let probe = Probe::start(ProbeOptions {
        echo: format!(
            "bad signature made with {SECRET_VALUE} for {}/echo?token={URL_TOKEN}",
            "http://127.0.0.1"
        ),
        ..ProbeOptions::default()
    });
    // And one that is down: nothing listens on the port of a dropped listener.
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dests = [
        (
            "down",
            format!("http://user:{SECRET_VALUE}@127.0.0.1:{down_port}/hook?token={URL_TOKEN}"),
        ),
        ("echo", format!("{}?token={URL_TOKEN}", probe.url("echo"))),
    ];
    let mut body = String::new();
    for (id, url) in &dests {
        body.push_str(&format!(
            r#"
[[destination]]
id = "{id}"
workspace = "acme"
plugin = "webhook"
config = {{ url = "{url}", secret = "{SECRET_VALUE}", headers = {{ Authorization = "Bearer {SECRET_VALUE}" }} }}
retry = {{ min_backoff = "1s", max_backoff = "1s", max_attempts = 3, window = "1h" }}
"#
        ));
    }
    body.push_str(&format!(
        "\n[[source]]\nid = \"web\"\nworkspace = \"acme\"\nwrite_key = \"{WRITE_KEY}\"\ndestinations = [\"down\", \"echo\"]\n"
    ));
    let sluice = Sluice::start(&body);
    post_all(&sluice, &events(2, 4), 4).await;
    let pool = db(&sluice).await;

    // Both fail, and retry, with the text above in their errors (masked).
    for (id, _) in &dests {
        let what = format!("{id} to fail twice");
        let (code, text): (String, String) = wait_until(Duration::from_secs(90), &what, || async {
            sqlx::query_as(
                "SELECT error_code, error_text FROM job_overview
                     WHERE destination_id = $1 AND error_code IS NOT NULL AND attempt >= 2
                     LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        })
        .await;
        let expected = if *id == "echo" {
            "http_500"
        } else {
            "http_connect"
        };
        assert_eq!(code, expected, "{id}: {text}");
        if *id == "echo" {
            assert!(text.contains("bad signature made with ***"), "{text}");
        }
    }
    assert!(probe.requests() > 0, "the echoing destination was reached");

    // Nowhere in the store: every column of every table.
    assert_not_stored(&pool, &[SECRET_VALUE, URL_TOKEN]).await;
    // Nowhere in the host's log.
    let log = sluice.log_text();
    assert!(
        log.contains("attempt failed"),
        "the failures were logged:\n{log}"
    );
    for needle in [SECRET_VALUE, URL_TOKEN] {
        assert!(
            !log.contains(needle),
            "`{needle}` in the host's log:\n{log}"
        );
    }
}
