//! Ingest's write commits without waiting for its WAL to reach the disk, then waits for it in a
//! second statement (`append::one_call`): what `event_append` returned must survive a crash of
//! PostgreSQL that comes right after. Plain PostgreSQL only (on Citus ingest commits in the
//! usual way), and on a server of the test's own: the crash would take the shared one down.

use std::time::Duration;

use libtest_mimic::Trial;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_store::Store;

use crate::fixtures::*;
use crate::harness::{own_postgres, trial_alone};

pub fn tests() -> Vec<Trial> {
    vec![trial_alone(
        "an_acknowledged_append_survives_a_postgresql_crash_right_after_it",
        acknowledged_append_survives_a_crash,
    )]
}

async fn acknowledged_append_survives_a_crash() {
    let own = own_postgres("sluice-store-crash-").await;
    let url = own.pg.url().to_string();
    let store = Store::connect(&url).await.expect("connect");
    let admin = sqlx::PgPool::connect(&url).await.expect("connect");

    // The WAL writer flushes async commits within milliseconds on an idle server; stopped, it
    // leaves them in memory, and only a flush the write asks for itself puts them on disk.
    let walwriter: i32 =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
            .fetch_one(&admin)
            .await
            .expect("the WAL writer");
    let walwriter = Pid::from_raw(walwriter);
    kill(walwriter, Signal::SIGSTOP).expect("stop the WAL writer");

    let out = append(
        &store,
        "web",
        t0(),
        vec![
            event("u1", "m1", 900),
            event("u2", "m2", 900),
            event("u1", "m3", 900),
        ],
    )
    .await;
    assert_eq!(out.accepted, 3);

    // A crash: a server process dies, the postmaster ends every other one and recovers from
    // the WAL on disk; what was only in memory is gone.
    kill(walwriter, Signal::SIGKILL).expect("kill the WAL writer");
    store.close().await;
    admin.close().await;

    let mut stored = None;
    for _ in 0..300 {
        let counted = async {
            let pool = sqlx::PgPool::connect(&url).await?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY($1)")
                .bind(&out.ids)
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            Ok::<i64, sqlx::Error>(n)
        };
        match counted.await {
            Ok(n) => {
                stored = Some(n);
                break;
            }
            // Recovering: connections are refused until it is done.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        stored,
        Some(3),
        "the three acknowledged events after the crash (None: the server did not come back)"
    );
    own.pg.stop().await.expect("stop");
}
