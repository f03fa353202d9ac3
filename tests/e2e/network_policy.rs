//! The outbound network policy (SSRF guard): plugins reach only public addresses, whatever the
//! hostname or the `allowed_hosts` pattern, unless an operator allows a private network.

use std::time::Duration;

use crate::harness::*;

/// A destination of the webhook plugin (or `webhook-any`, whose manifest allows `*`) at `url`.
fn destination(id: &str, plugin: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[destination]]
id = "{id}"
workspace = "acme"
plugin = "{plugin}"
config = {{ url = "{url}", secret = "{SECRET}" }}
retry = {{ min_backoff = "1s", max_backoff = "2s", max_attempts = 3, window = "1h" }}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_in_every_spelling_unless_allowed() {
    let sink = Sink::ok(SECRET);
    let port = sink
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("sink port");

    // The shipped webhook plugin, and the same component with a manifest allowing any host.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugins::own_plugins_dir(dir);
    let shipped = plugins::plugins_dir();
    std::fs::copy(
        shipped.join("webhook.wasm"),
        plugins.join("webhook-any.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(shipped.join("webhook.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    let mut any = manifest.clone();
    any.insert("name".into(), "webhook-any".into());
    any.insert("allowed_hosts".into(), toml::Value::Array(vec!["*".into()]));
    std::fs::write(
        plugins.join("webhook-any.toml"),
        toml::to_string(&any).unwrap(),
    )
    .unwrap();

    // Every way of writing "this machine" that a plugin might use.
    let refused = [
        ("ipv4", "webhook", format!("http://127.0.0.1:{port}/hook")),
        ("name", "webhook", format!("http://localhost:{port}/hook")),
        ("dot", "webhook", format!("http://localhost.:{port}/hook")),
        ("ipv6", "webhook", format!("http://[::1]:{port}/hook")),
        (
            "mapped",
            "webhook",
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ),
        (
            "6to4",
            "webhook",
            format!("http://[2002:7f00:1::]:{port}/hook"),
        ),
        (
            "teredo",
            "webhook",
            format!("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/hook"),
        ),
        (
            "decimal",
            "webhook",
            format!("http://2130706433:{port}/hook"),
        ),
        ("hex", "webhook", format!("http://0x7f.1:{port}/hook")),
        (
            "star",
            "webhook-any",
            format!("http://127.0.0.1:{port}/hook"),
        ),
        (
            "metadata",
            "webhook-any",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
    ];
    let mut body = String::new();
    let mut ids: Vec<&str> = refused.iter().map(|(id, _, _)| *id).collect();
    for (id, plugin, url) in &refused {
        body.push_str(&destination(id, plugin, url, ""));
    }
    // The operator allows loopback for this one destination.
    body.push_str(&destination(
        "allowed",
        "webhook",
        &format!("http://localhost:{port}/hook"),
        r#"allowed_private_networks = ["127.0.0.0/8", "::1/128"]"#,
    ));
    ids.push("allowed");
    let list = ids
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    body.push_str(&format!(
        "\n[[source]]\nid = \"web\"\nworkspace = \"acme\"\nwrite_key = \"{WRITE_KEY}\"\ndestinations = [{list}]\n"
    ));
    let config = plugins::own_plugins(&process::config_text_public_only(&body, ""));
    let sluice = Sluice::start_in(dir, &config, &[]);
    let pool = db(&sluice).await;
    post_all(&sluice, &events(1, 1), 1).await;

    // Each refused destination aborts its job at once with its own code, naming the address.
    for (id, _, url) in &refused {
        let (state, code, text): (String, Option<String>, Option<String>) = wait_until(
            Duration::from_secs(30),
            &format!("{id} to finish"),
            || async {
                sqlx::query_as(
                    "SELECT state::text, error_code, error_text FROM job_overview
                     WHERE destination_id = $1 AND state IN ('aborted', 'delivered')",
                )
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap()
            },
        )
        .await;
        assert_eq!(state, "aborted", "{id} ({url})");
        assert_eq!(code.as_deref(), Some("host_denied_address"), "{id} ({url})");
        let text = text.unwrap_or_default();
        assert!(
            text.contains("127.0.0.1") || text.contains("::1") || text.contains("169.254.169.254"),
            "{id}: the error names the address: {text}"
        );
    }
    wait_all_delivered(&pool, "allowed", 1).await;
    assert_eq!(
        sink.received().len(),
        1,
        "only the allowed destination reached the sink"
    );
}
