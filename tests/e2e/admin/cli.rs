//! `sluice jobs|destinations|plugins|stats` against a real host: JSON for scripts, tables for
//! people, and exit codes (0 ok, 1 failure, 2 usage, 77 authentication).

use std::process::{Command, Output};
use std::time::Duration;

use super::workflow::start_failing;
use super::*;

fn sluice_cli(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.args(args)
        .env("SLUICE_ADMIN_URL", url)
        .env_remove("SLUICE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("SLUICE_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run sluice")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_json_and_tables_and_exits_with_documented_codes() {
    let (sluice, _sink, _fixed) = start_failing().await;
    let url = admin_url(&sluice);
    let failed = [
        "jobs",
        "list",
        "--destination",
        "hook",
        "--state",
        "failed",
        "--json",
    ];
    let list = wait_until(Duration::from_secs(30), "two failed jobs", || async {
        let out = sluice_cli(&url, Some(READ_TOKEN), &failed);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        (jobs(&v).len() == 2).then_some(v)
    })
    .await;
    let head = jobs(&list)[0]["event_id"].as_i64().unwrap().to_string();

    // Tables for people.
    let out = sluice_cli(
        &url,
        Some(READ_TOKEN),
        &["jobs", "show", "acme", "hook", &head],
    );
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("http_500") && text.contains("retry"),
        "{text}"
    );
    for args in [
        vec!["destinations", "list"],
        vec!["destinations", "blocked", "acme", "hook"],
        vec!["plugins"],
        vec!["stats", "acme", "hook", "--minutes", "5"],
    ] {
        let out = sluice_cli(&url, Some(READ_TOKEN), &args);
        assert_eq!(
            code(&out),
            0,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sluice_cli(&url, Some(READ_TOKEN), &["destinations", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hook"));

    // Changes need an operator token: 77, and nothing changed.
    let retry = [
        "jobs",
        "retry",
        "acme",
        "hook",
        "--id",
        head.as_str(),
        "--json",
    ];
    let out = sluice_cli(&url, Some(READ_TOKEN), &retry);
    assert_eq!(code(&out), 77, "{}", String::from_utf8_lossy(&out.stderr));
    let out = sluice_cli(&url, Some(OPS_TOKEN), &retry);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"], 1);

    // No token or a wrong one: 77. A request the API refuses as invalid, or bad flags: 2.
    // Not found, or nobody listening: 1.
    assert_eq!(code(&sluice_cli(&url, None, &["plugins"])), 77);
    assert_eq!(
        code(&sluice_cli(
            &url,
            Some("wrong-token-0123456789"),
            &["plugins"]
        )),
        77
    );
    let bad_state = ["jobs", "list", "--state", "sideways"];
    assert_eq!(code(&sluice_cli(&url, Some(READ_TOKEN), &bad_state)), 2);
    assert_eq!(
        code(&sluice_cli(
            &url,
            Some(READ_TOKEN),
            &["jobs", "list", "--bogus"]
        )),
        2
    );
    let missing = ["jobs", "show", "acme", "hook", "999999999"];
    assert_eq!(code(&sluice_cli(&url, Some(READ_TOKEN), &missing)), 1);
    assert_eq!(
        code(&sluice_cli(
            "http://127.0.0.1:9",
            Some(READ_TOKEN),
            &["plugins"]
        )),
        1
    );

    // The exit codes are documented in --help.
    let out = sluice_cli(&url, None, &["jobs", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("77") && help.contains("Exit status"),
        "{help}"
    );
}
