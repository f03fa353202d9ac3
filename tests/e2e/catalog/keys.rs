//! Write keys through the catalog: rotation with a grace period, and disabled or deleted
//! sources, on every host within a second.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_with_a_grace_period_and_disabled_or_deleted_sources_get_401_on_every_host() {
    let pg = SharedPg::start().await;
    let sink = Sink::ok(SECRET);
    let config = hook_config(&sink);
    let hosts = [
        Sluice::start_on(&pg.url, &config, HOSTS),
        Sluice::start_on(&pg.url, &config, HOSTS),
    ];
    let api = Api::new(&hosts[0], Some(OPS_TOKEN));
    let http = client();
    let send = |host: &Sluice, key: &str| {
        let req = http
            .post(host.url("/v1/track"))
            .basic_auth(key, Some(""))
            .json(&track("u", 0));
        async move {
            req.send()
                .await
                .expect("ingest reachable")
                .status()
                .as_u16()
        }
    };
    // Both hosts answer `want` for `key` within a second.
    async fn within_a_second<F, Fut>(what: &str, check: F) -> Duration
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{what} within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    let (status, created) = api
        .post(
            "/api/v1/catalog/sources",
            &json!({"id": "app", "workspace": "acme", "destinations": ["hook"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key1 = created["write_key"]
        .as_str()
        .expect("a made key")
        .to_string();
    let t = within_a_second("a new source's key works on both hosts", || async {
        send(&hosts[0], &key1).await == 200 && send(&hosts[1], &key1).await == 200
    })
    .await;
    eprintln!("new source: {t:?}");

    let (status, rotated) = api
        .post(
            "/api/v1/catalog/sources/acme/app/keys",
            &json!({"grace": "3s"}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let key2 = rotated["write_key"]
        .as_str()
        .expect("a made key")
        .to_string();
    within_a_second("the new key works on both hosts", || async {
        send(&hosts[0], &key2).await == 200 && send(&hosts[1], &key2).await == 200
    })
    .await;
    for h in &hosts {
        assert_eq!(
            send(h, &key1).await,
            200,
            "the old key works during its grace period"
        );
    }
    let expires =
        OffsetDateTime::parse(rotated["others_expire_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let wait = expires - OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_secs_f64(wait.as_seconds_f64().max(0.0))).await;
    within_a_second("the old key expires on both hosts", || async {
        send(&hosts[0], &key1).await == 401 && send(&hosts[1], &key1).await == 401
    })
    .await;

    let (status, _) = api
        .put(
            "/api/v1/catalog/sources/acme/app",
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200);
    let t = within_a_second("a disabled source gets 401 on both hosts", || async {
        send(&hosts[0], &key2).await == 401 && send(&hosts[1], &key2).await == 401
    })
    .await;
    eprintln!("disable: {t:?}");
    assert_eq!(send(&hosts[0], WRITE_KEY).await, 200, "other sources go on");

    let (status, _) = api.delete("/api/v1/catalog/sources/acme/web").await;
    assert_eq!(status, 200);
    let t = within_a_second("a deleted source gets 401 on both hosts", || async {
        send(&hosts[0], WRITE_KEY).await == 401 && send(&hosts[1], WRITE_KEY).await == 401
    })
    .await;
    eprintln!("delete: {t:?}");
    // The key hashes only: the plain keys are nowhere in the store.
    let pool = db(&hosts[0]).await;
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(hint || ' ' || encode(key_sha256, 'hex'), ' ') FROM source_keys",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!dump.contains(&key2) && !dump.contains(&key1), "{dump}");
}
