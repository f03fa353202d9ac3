//! The embedded PostgreSQL's settings that Sluice's behaviour depends on (`embedded_pg`).

use libtest_mimic::Trial;

use crate::harness::{Db, trial};

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "the_embedded_server_writes_new_wal_segments_without_zero_filling_them",
        wal_init_zero,
    )]
}

/// A fresh cluster has no old WAL segments to recycle: with the default, the commit that
/// fills a segment first writes 16 MB of zeros to the next one (14 ms on this VM, every ~11 s
/// at 1,000 events/s: the latency benchmark's p99).
async fn wal_init_zero(db: Db) {
    if db.store.is_distributed() {
        return; // the Citus test cluster is configured on its own (testing::citus)
    }
    let setting: String = sqlx::query_scalar("SHOW wal_init_zero")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(setting, "off");
}
