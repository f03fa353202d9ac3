//! The rules every catalog change follows: a refused config changes nothing and names the
//! field, `sluice apply` plans and is idempotent, configs are sealed with the hosts' key, and
//! secrets given by reference are read on the host and stored nowhere.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_is_a_400_naming_the_field_and_changes_nothing() {
    let sink = Sink::ok(SECRET);
    let config = hook_config(&sink);
    let host = Sluice::start(&config);
    let api = Api::new(&host, Some(OPS_TOKEN));
    let before = api.ok("/api/v1/catalog", &[]).await["version"].clone();
    let (status, body) = api
        .post(
            "/api/v1/catalog/destinations",
            &json!({"id": "bad", "workspace": "acme", "plugin": "webhook",
                    "config": {"url": "ftp://example.com/x", "secret": SECRET}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "config.url", "{body}");
    let (status, body) = api
        .post(
            "/api/v1/catalog/destinations",
            &json!({"id": "bad", "workspace": "acme", "plugin": "no-such-plugin"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("plugin")),
        "{body}"
    );
    // An update the plugin refuses leaves the old config in force.
    let (status, body) = api
        .put(
            "/api/v1/catalog/destinations/acme/hook",
            &json!({"plugin": "webhook", "config": {"url": sink.url, "secret": ""}}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("config.secret")),
        "{body}"
    );
    assert_eq!(api.ok("/api/v1/catalog", &[]).await["version"], before);
    // A read token may not change the catalog.
    let (status, _) = Api::new(&host, Some(READ_TOKEN))
        .post(
            "/api/v1/catalog/sources",
            &json!({"id": "x", "workspace": "acme"}),
        )
        .await;
    assert_eq!(status, 403);
    post_all(&host, &events(2, 10), 10).await;
    wait_until(
        Duration::from_secs(30),
        "the old config still delivers",
        || async { (sink.accepted().len() >= 10).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_prints_the_diff_apply_is_idempotent_and_a_refusal_changes_nothing() {
    let sink = Sink::ok(SECRET);
    let config = hook_config(&sink);
    let host = Sluice::start(&config);
    let url = crate::admin::admin_url(&host);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.toml");
    let table = |id: &str, url: &str| {
        destination_table(
            id,
            "webhook",
            &format!(r#"{{ url = "{url}", secret = "{SECRET}" }}"#),
            RETRY,
        )
    };
    // `hook` changes its URL, `second` is new, and source `web` feeds both.
    let wanted = source_config(
        &["hook", "second"],
        &format!(
            "{}{}",
            table("hook", &format!("{}/v2", sink.url)),
            table("second", &sink.url)
        ),
    );
    std::fs::write(&file, &wanted).unwrap();
    let apply = |args: &[&str]| {
        let out = std::process::Command::new(sluice_bin())
            .arg("apply")
            .args(args)
            .arg(&file)
            .env("SLUICE_ADMIN_URL", &url)
            .env("SLUICE_ADMIN_TOKEN", OPS_TOKEN)
            .output()
            .expect("sluice apply runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let api = Api::new(&host, Some(READ_TOKEN));
    let before = api.ok("/api/v1/catalog", &[]).await["version"].clone();
    let (code, out, err) = apply(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ destination acme/second"), "{out}");
    assert!(
        out.contains("~ destination acme/hook (config.url)"),
        "{out}"
    );
    assert!(out.contains("~ source acme/web (destinations)"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(
        api.ok("/api/v1/catalog", &[]).await["version"],
        before,
        "a dry run writes nothing"
    );

    let (code, out, err) = apply(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied: catalog version"), "{out}");
    let (code, out, _) = apply(&[]);
    assert_eq!(
        (code, out.as_str()),
        (0, "no changes\n"),
        "a second apply changes nothing"
    );

    // A config the plugin refuses: exit 2, the field named, nothing changed.
    let version = api.ok("/api/v1/catalog", &[]).await["version"].clone();
    std::fs::write(
        &file,
        wanted.replace(&format!("{}/v2", sink.url), "ftp://example.com/x"),
    )
    .unwrap();
    let (code, out, err) = apply(&[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("destination[0].config.url"), "{err}");
    assert_eq!(api.ok("/api/v1/catalog", &[]).await["version"], version);

    // A file without `second` deletes it.
    std::fs::write(&file, webhook_config(&sink.url, RETRY, "")).unwrap();
    let (code, out, err) = apply(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("- destination acme/second"), "{out}");
    post_all(&host, &events(2, 10), 10).await;
    wait_until(Duration::from_secs(30), "hook delivers", || async {
        (sink.accepted().len() >= 10).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_the_wrong_secrets_key_fails_at_start_naming_what_it_cannot_open() {
    let pg = SharedPg::start().await;
    let sink = Sink::ok(SECRET);
    let config = webhook_config(&sink.url, RETRY, "");
    let key_a = "q9JmIUVn7TH0xGDx8GkG8yMZ1Q9XmZRz7yZrJ3b0X3c=";
    let mut first = Sluice::start_fresh_on(&pg.url, &config, &[("SLUICE_SECRETS_KEY", key_a)]);
    first.stop();
    // Another host of the same database with another key.
    let key_b = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo=";
    let out = std::process::Command::new(sluice_bin())
        .args(["serve", "--config"])
        .arg(&first.config_path)
        .env("DATABASE_URL", &pg.url)
        .env("SLUICE_SECRETS_KEY", key_b)
        .output()
        .expect("sluice runs");
    assert!(
        !out.status.success(),
        "a host that cannot open the catalog must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("destination acme/hook") && stderr.contains("secrets_old_key_files"),
        "{stderr}"
    );
    // A key that is not a key is named too.
    let out = std::process::Command::new(sluice_bin())
        .args(["serve", "--config"])
        .arg(&first.config_path)
        .env("DATABASE_URL", &pg.url)
        .env("SLUICE_SECRETS_KEY", "not-a-key")
        .output()
        .expect("sluice runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SLUICE_SECRETS_KEY is not 32 bytes in base64"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_given_by_reference_is_read_on_the_host_and_stored_nowhere() {
    let sink = Sink::ok(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("hook-secret");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let config = hook_config(&sink);
    let host = Sluice::start_with_env(&config, &[("SLUICE_E2E_HOOK_SECRET", SECRET)]);
    let api = Api::new(&host, Some(OPS_TOKEN));
    let create = |id: &str, secret: Value| {
        json!({"id": id, "workspace": "acme", "plugin": "webhook", "sources": ["web"],
               "config": {"url": format!("{}/{id}", sink.url), "secret": secret}})
    };
    for (id, secret) in [
        ("by-env", json!({"env": "SLUICE_E2E_HOOK_SECRET"})),
        ("by-file", json!({"file": key_file.display().to_string()})),
    ] {
        let (status, body) = api
            .post("/api/v1/catalog/destinations", &create(id, secret))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["destination"]["config"]["secret"], "***");
    }
    let (status, body) = api
        .post(
            "/api/v1/catalog/destinations",
            &create("unset", json!({"env": "SLUICE_E2E_NOT_SET_ANYWHERE"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "config.secret", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("SLUICE_E2E_NOT_SET_ANYWHERE is not set on this host"),
        "{body}"
    );

    post_all(&host, &events(2, 10), 10).await;
    let signed_by = |dest: &str| {
        sink.accepted()
            .iter()
            .filter(|r| r.webhook_id.ends_with(&format!(":{dest}")) && r.signature_ok)
            .count()
    };
    wait_until(
        Duration::from_secs(30),
        "both referenced secrets sign",
        || async { (signed_by("by-env") >= 10 && signed_by("by-file") >= 10).then_some(()) },
    )
    .await;
    assert_not_stored(&db(&host).await, &[SECRET]).await;
}
