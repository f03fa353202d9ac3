//! The end-of-history checks of the model test: nothing lost, duplicates only from failures,
//! and the store agrees.

use sluice_store::JobState;

use super::{HOSTS, World};

impl World {
    pub(super) async fn check_end(&mut self) {
        // Duplicates come only from failures.
        for (id, n) in &self.delivered {
            if *n > 1 && !self.at_risk.contains(id) {
                self.fail(&format!("{id} delivered {n} times but was never at risk"));
            }
        }
        // The store agrees: every job of this history that it still holds is finished, and
        // nothing is blocked or open.
        let ids: Vec<i64> = self.key_of.keys().copied().collect();
        let states: Vec<(i64, JobState)> = sqlx::query_as(
            "SELECT event_id, state FROM job_overview WHERE destination_id = 'hook' AND event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        // (Finished datasets may have been dropped already: those jobs are gone, as designed.)
        for (id, state) in states {
            if !state.is_terminal() {
                self.fail(&format!("the store says {id} is {state:?}"));
            }
        }
        let blocked: i64 = sqlx::query_scalar("SELECT count(*) FROM blocked_keys")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        if blocked != 0 {
            self.fail(&format!("{blocked} keys still blocked"));
        }
        // Leave the lane free for the next history.
        for h in 0..HOSTS {
            if let Some(a) = self.hosts[h].active.take() {
                self.store.lane_release(&a.lease, None).await.unwrap();
            }
        }
    }
}
