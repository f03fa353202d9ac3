//! Model-based test of the lane engine (`sluice_engine::lane`) and the store together.
//!
//! Random histories of: ingest, hosts acquiring lanes, reading the log, fetching due rows,
//! sending calls, outcomes (delivered, retry, throttle, abort), commits, host crashes, clock
//! jumps that expire leases (with the self-fencing a real host does), and dataset rotation,
//! retirement and compaction, some of them interrupted. Checked against a simple model:
//!
//! - **order**: a job is sent only when every earlier job of its key has been finished
//!   (delivered or aborted) by some host;
//! - **one call at a time**: no two calls carry jobs of a key at once, across all hosts; a
//!   call with several jobs of a key (ordered batches) has them in order, and the lane's
//!   partial-outcome rule is checked against the model's own;
//! - **nothing lost**: once healed, every accepted event is finished, the store agrees, and no
//!   key is left blocked;
//! - **duplicates only from failures**: a job is delivered twice only if it was in flight (read
//!   and unfinished) on a host that crashed or lost its lease.
//!
//! `SLUICE_MODEL_SEEDS` sets how many histories run (default 12); a failure names its seed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use libtest_mimic::Trial;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_engine::lane::{Decision, Job, Lane, LaneLimits};
use sluice_store::datasets::{DatasetPolicy, StopAfter};
use sluice_store::{FetchLimits, LaneId, Lease, OrderingScope, ReadLimits, Store, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fixtures::*;
use crate::harness::{Db, trial};

#[path = "checks.rs"]
mod checks;

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "model_random_histories_keep_order_and_lose_nothing",
        run_histories,
    )]
}

const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
const HOSTS: usize = 3;
const OPS: usize = 250;

async fn run_histories(db: Db) {
    let seeds: u64 = std::env::var("SLUICE_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    db.store
        .lanes_sync(&[spec("hook", &["web", "app"], OrderingScope::User)])
        .await
        .unwrap();
    for seed in 0..seeds {
        // Each history gets a clean store: earlier histories' events are all finished, so a
        // new lane starting at the head is as good as a new database.
        sqlx::query("TRUNCATE blocked_keys")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE lanes SET owner = NULL, lease_until = NULL, next_due = NULL")
            .execute(&db.pool)
            .await
            .unwrap();
        let mut world = World::new(db.store.clone(), db.pool.clone(), seed);
        world.run().await;
    }
}

struct Host {
    id: Uuid,
    active: Option<Active>,
}

struct Active {
    lane: Lane,
    lease: Lease,
    /// Calls sent and not yet completed (a call may carry a run of one key's jobs).
    in_flight: Vec<Vec<Job>>,
    /// When the lease was last renewed (model clock).
    renewed_at: OffsetDateTime,
}

struct World {
    store: Store,
    pool: sqlx::PgPool,
    seed: u64,
    rng: StdRng,
    now: OffsetDateTime,
    hosts: Vec<Host>,
    lane: LaneId,
    /// Accepted event ids per key, in order.
    by_key: BTreeMap<String, Vec<i64>>,
    key_of: HashMap<i64, String>,
    finished: HashSet<i64>,
    delivered: HashMap<i64, u32>,
    /// Jobs that may be sent again: read and unfinished on a host that crashed or lost its lease.
    at_risk: HashSet<i64>,
    /// Key → host with a job of it in flight.
    in_flight_keys: HashMap<String, usize>,
    next_msg: u64,
    log: Vec<String>,
}

impl World {
    fn new(store: Store, pool: sqlx::PgPool, seed: u64) -> World {
        let now = t0() + time::Duration::days(seed as i64);
        World {
            store,
            pool,
            seed,
            rng: StdRng::seed_from_u64(seed),
            now,
            hosts: (0..HOSTS)
                .map(|_| Host {
                    id: Uuid::new_v4(),
                    active: None,
                })
                .collect(),
            lane: lane("hook"),
            by_key: BTreeMap::new(),
            key_of: HashMap::new(),
            finished: HashSet::new(),
            delivered: HashMap::new(),
            at_risk: HashSet::new(),
            in_flight_keys: HashMap::new(),
            next_msg: 0,
            log: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(40).collect();
        panic!(
            "seed {}: {what}\nlast steps (newest first):\n{tail:#?}",
            self.seed
        );
    }

    async fn run(&mut self) {
        for _ in 0..OPS {
            let op = self.rng.random_range(0..100);
            let h = self.rng.random_range(0..HOSTS);
            match op {
                0..=14 => self.ingest().await,
                15..=79 => self.step(h, false).await,
                80..=84 => self.crash(h),
                85..=92 => {
                    let secs = self.rng.random_range(1..40);
                    self.now += time::Duration::seconds(secs);
                    self.log.push(format!("clock +{secs}s"));
                }
                _ => self.maintenance().await,
            }
        }
        self.heal().await;
        self.check_end().await;
    }

    async fn ingest(&mut self) {
        let n = self.rng.random_range(1..6);
        let source = if self.rng.random_bool(0.5) {
            "web"
        } else {
            "app"
        };
        let mut events = Vec::new();
        for _ in 0..n {
            let user = USERS[self.rng.random_range(0..USERS.len())];
            // Now and then a client resends a message: dedup drops it.
            let msg = if self.next_msg > 0 && self.rng.random_bool(0.05) {
                format!("s{}-m{}", self.seed, self.next_msg - 1)
            } else {
                self.next_msg += 1;
                format!("s{}-m{}", self.seed, self.next_msg)
            };
            events.push(event(user, &msg, self.rng.random_range(5..200)));
        }
        let r = request(source, self.now, events);
        let out = self
            .store
            .event_append(&[&r], Some(DEDUP), None)
            .await
            .unwrap()
            .remove(0);
        // Which events were accepted: ids are handed out in order to the fresh ones.
        let ids: Vec<i64> = out.ids.clone();
        let accepted: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, user_key FROM events WHERE id = ANY($1) ORDER BY id")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .unwrap();
        for (id, user) in accepted {
            self.by_key.entry(user.clone()).or_default().push(id);
            self.key_of.insert(id, user);
        }
        self.log
            .push(format!("ingest {n} from {source}: accepted {ids:?}"));
    }

    /// One action of host `h`. With `heal`, every outcome is a delivery.
    async fn step(&mut self, h: usize, heal: bool) {
        if self.hosts[h].active.is_none() {
            match self
                .store
                .lane_acquire(&self.lane, self.hosts[h].id, self.now, TTL)
                .await
                .unwrap()
            {
                Some(acquired) => {
                    self.log.push(format!(
                        "host {h} acquires (cursor {}, claimed {})",
                        acquired.cursor, acquired.claimed_to
                    ));
                    self.hosts[h].active = Some(Active {
                        lane: Lane::resume(
                            &acquired,
                            LaneLimits {
                                max_jobs_per_key: 3,
                            },
                        ),
                        lease: acquired.lease,
                        in_flight: Vec::new(),
                        renewed_at: self.now,
                    });
                }
                None => return,
            }
        }
        // A real host stops sending, and cancels its calls, once its lease may have expired.
        let renewed_at = self.hosts[h].active.as_ref().map(|a| a.renewed_at).unwrap();
        if self.now - renewed_at >= time::Duration::try_from(TTL * 2 / 3).unwrap() {
            self.self_fence(h).await;
            return;
        }
        let action = if heal {
            self.rng.random_range(0..4)
        } else {
            self.rng.random_range(0..5)
        };
        match action {
            0 => self.read(h, heal).await,
            1 => self.fetch(h, heal).await,
            2 => self.send(h, heal),
            3 if heal => {
                while self.hosts[h]
                    .active
                    .as_ref()
                    .is_some_and(|a| !a.in_flight.is_empty())
                {
                    self.complete(h, true);
                }
            }
            3 => self.complete(h, false),
            _ => {}
        }
        self.commit(h).await;
    }

    async fn read(&mut self, h: usize, heal: bool) {
        let limits = if heal {
            ReadLimits {
                max_events: 100,
                max_bytes: 1 << 20,
            }
        } else {
            ReadLimits {
                max_events: self.rng.random_range(1..8),
                max_bytes: self.rng.random_range(50..2000),
            }
        };
        let a = self.hosts[h].active.as_mut().unwrap();
        let read = self
            .store
            .log_read(
                &self.lane,
                &sluice_store::testing::fixtures::links(&["web", "app"]),
                a.lane.read_to(),
                a.lane.skip_rows_to(),
                limits,
            )
            .await
            .unwrap();
        let ids: Vec<i64> = read.events.iter().map(|e| e.id).collect();
        a.lane.accept_log(read.events, read.read_to, self.now);
        self.log
            .push(format!("host {h} reads {ids:?} to {}", read.read_to));
    }

    async fn fetch(&mut self, h: usize, heal: bool) {
        let limits = if heal {
            FetchLimits {
                max_keys: 10,
                max_jobs_per_key: 10,
                max_bytes: 1 << 20,
            }
        } else {
            FetchLimits {
                max_keys: self.rng.random_range(1..4),
                max_jobs_per_key: self.rng.random_range(1..4),
                max_bytes: self.rng.random_range(50..2000),
            }
        };
        let a = self.hosts[h].active.as_mut().unwrap();
        if !a.lane.may_fetch_rows() {
            return;
        }
        let fetch = self
            .store
            .blocked_fetch(&self.lane, self.now, &a.lane.fetch_exclusions(), limits)
            .await
            .unwrap();
        let ids: Vec<i64> = fetch.jobs.iter().map(|j| j.event_id).collect();
        a.lane.accept_rows(fetch.jobs);
        a.lane.accept_empty_keys(fetch.empty_keys.clone());
        self.log.push(format!(
            "host {h} fetches rows {ids:?} (empty keys {:?})",
            fetch.empty_keys
        ));
    }

    fn send(&mut self, h: usize, heal: bool) {
        let size = if heal {
            10
        } else {
            self.rng.random_range(1..4)
        };
        let a = self.hosts[h].active.as_mut().unwrap();
        // Half the histories' calls may carry several jobs of a key (ordered batches).
        let per_key = if self.seed.is_multiple_of(2) {
            1
        } else {
            self.rng.random_range(1..4)
        };
        let call = a.lane.take_call(size, usize::MAX, per_key);
        let ids: Vec<i64> = call.iter().map(|j| j.event_id).collect();
        for (i, job) in call.iter().enumerate() {
            // Every earlier job of the key is finished, or goes ahead of it in this call.
            let ahead: HashSet<i64> = call[..i]
                .iter()
                .filter(|j| j.key == job.key)
                .map(|j| j.event_id)
                .collect();
            let earlier: Vec<i64> = self.by_key[&*job.key]
                .iter()
                .copied()
                .filter(|id| {
                    *id < job.event_id && !self.finished.contains(id) && !ahead.contains(id)
                })
                .collect();
            if !earlier.is_empty() {
                self.fail(&format!(
                    "host {h} sends {} of {} before {earlier:?} finished",
                    job.event_id, job.key
                ));
            }
            if !ahead.is_empty() {
                continue;
            }
            if let Some(other) = self.in_flight_keys.get(&*job.key) {
                self.fail(&format!(
                    "host {h} sends {} while host {other} has a job of {} in flight",
                    job.event_id, job.key
                ));
            }
            self.in_flight_keys.insert(job.key.to_string(), h);
        }
        self.hosts[h].active.as_mut().unwrap().in_flight.push(call);
        self.log.push(format!("host {h} sends {ids:?}"));
    }

    fn complete(&mut self, h: usize, heal: bool) {
        let a = self.hosts[h].active.as_mut().unwrap();
        if a.in_flight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..a.in_flight.len());
        let call = a.in_flight.swap_remove(i);
        let mut results = Vec::with_capacity(call.len());
        for job in call {
            let decision = self.roll(heal);
            results.push((job, decision));
        }
        let who: Vec<(i64, String)> = results
            .iter()
            .map(|(j, _)| (j.event_id, j.key.to_string()))
            .collect();
        let given: Vec<Decision> = results.iter().map(|(_, d)| d.clone()).collect();
        let a = self.hosts[h].active.as_mut().unwrap();
        let taken = a.lane.complete_call(results, self.now);
        let mut stopped: HashSet<&str> = HashSet::new();
        for (((id, key), decision), given) in who.iter().zip(&taken).zip(&given) {
            // The lane's rule for a key's later jobs in the call, checked independently.
            let expected = if stopped.contains(key.as_str()) {
                &Decision::Parked
            } else {
                given
            };
            if decision != expected {
                self.fail(&format!(
                    "host {h}: {id} of {key} was given {given:?} and taken as {decision:?}"
                ));
            }
            if !matches!(decision, Decision::Delivered | Decision::Aborted { .. }) {
                stopped.insert(key);
            }
            self.in_flight_keys.remove(key);
            match decision {
                Decision::Delivered => {
                    self.finished.insert(*id);
                    *self.delivered.entry(*id).or_default() += 1;
                }
                Decision::Aborted { .. } => {
                    self.finished.insert(*id);
                }
                _ => {}
            }
            self.log.push(format!("host {h}: {id} -> {decision:?}"));
        }
    }

    fn roll(&mut self, heal: bool) -> Decision {
        let roll = if heal {
            0
        } else {
            self.rng.random_range(0..100)
        };
        match roll {
            0..=69 => Decision::Delivered,
            70..=84 => Decision::Retry {
                code: "http_500".into(),
                text: "boom".into(),
                at: self.now + time::Duration::seconds(self.rng.random_range(0..20)),
            },
            85..=89 => Decision::Throttled {
                at: self.now + time::Duration::seconds(self.rng.random_range(0..5)),
            },
            _ => Decision::Aborted {
                code: "http_400".into(),
                text: "bad".into(),
            },
        }
    }

    async fn commit(&mut self, h: usize) {
        let a = self.hosts[h].active.as_mut().unwrap();
        if !a.lane.wants_commit() {
            return;
        }
        let Some(commit) = a.lane.take_commit(&a.lease, self.now, TTL) else {
            return;
        };
        match self.store.lane_commit(&commit).await {
            Ok(result) => {
                a.lane.commit_written(&commit, result.clone());
                a.renewed_at = self.now;
                self.log.push(format!(
                    "host {h} commits cursor {} claimed {} rows {:?} updates {:?} unblocked {:?}",
                    commit.cursor,
                    commit.claimed_to,
                    commit
                        .new_rows
                        .iter()
                        .map(|r| (r.event_id, r.state))
                        .collect::<Vec<_>>(),
                    commit
                        .row_updates
                        .iter()
                        .map(|r| (r.event_id, r.state))
                        .collect::<Vec<_>>(),
                    result.unblocked
                ));
            }
            Err(StoreError::LeaseLost(_)) => {
                self.log.push(format!("host {h} lost its lease"));
                self.lose(h);
            }
            Err(e) => self.fail(&format!("commit failed: {e}")),
        }
    }

    /// The lease may have expired: cancel calls in flight (their fate is unknown), then renew
    /// or give up the lane.
    async fn self_fence(&mut self, h: usize) {
        let a = self.hosts[h].active.as_mut().unwrap();
        let cancelled: Vec<Job> = a.in_flight.drain(..).flatten().collect();
        for job in cancelled {
            self.at_risk.insert(job.event_id);
            self.in_flight_keys.remove(&*job.key);
            let a = self.hosts[h].active.as_mut().unwrap();
            a.lane.complete(job, Decision::Released, self.now);
        }
        let a = self.hosts[h].active.as_mut().unwrap();
        if self
            .store
            .lane_renew(&a.lease, self.now, TTL)
            .await
            .unwrap()
        {
            a.renewed_at = self.now;
            self.log.push(format!("host {h} self-fenced and renewed"));
        } else {
            self.log
                .push(format!("host {h} self-fenced and lost the lane"));
            self.lose(h);
        }
    }

    /// Host `h` no longer holds the lane: whatever it had read and not finished may be sent again.
    fn lose(&mut self, h: usize) {
        if let Some(a) = self.hosts[h].active.take() {
            for job in a.in_flight.iter().flatten() {
                self.in_flight_keys.remove(&*job.key);
                self.at_risk.insert(job.event_id);
            }
            // Everything read beyond the written cursor may come back.
            for (id, _) in self.key_of.iter().filter(|(id, _)| **id > a.lane.cursor()) {
                self.at_risk.insert(*id);
            }
        }
    }

    fn crash(&mut self, h: usize) {
        if self.hosts[h].active.is_some() {
            self.log.push(format!("host {h} crashes"));
            self.lose(h);
            // A restarted host is a new incarnation.
            self.hosts[h].id = Uuid::new_v4();
        }
    }

    async fn maintenance(&mut self) {
        let policy = DatasetPolicy {
            max_events: 5,
            max_bytes: i64::MAX,
            max_age: Duration::from_secs(3600),
            compact_below: 4,
            aborted_retention: Duration::from_secs(60),
            retain: Duration::ZERO,
        };
        let stops = [
            None,
            None,
            Some(StopAfter::RotationPartitions),
            Some(StopAfter::CompactionEvents),
            Some(StopAfter::CompactionJobs),
            Some(StopAfter::Drop),
        ];
        let stop = stops[self.rng.random_range(0..stops.len())];
        let rotated = self.store.dataset_rotate(&policy, self.now, stop).await;
        let retired = self.store.dataset_retire(&policy, self.now, stop).await;
        let _ = self.store.lanes_orphaned(self.now).await.unwrap();
        self.log.push(format!(
            "maintenance (stop {stop:?}): {rotated:?} {retired:?}"
        ));
        if stop.is_none()
            && let (Err(e), _) | (_, Err(e)) = (&rotated, &retired)
        {
            self.fail(&format!("maintenance failed: {e}"));
        }
    }

    /// Every outcome a delivery from now on, the clock moving on, until everything is finished.
    async fn heal(&mut self) {
        for round in 0..20_000 {
            let all_done = self.key_of.keys().all(|id| self.finished.contains(id));
            let idle = self.hosts.iter().all(|h| {
                h.active.as_ref().is_none_or(|a| {
                    a.in_flight.is_empty() && a.lane.is_drained() && !a.lane.wants_commit()
                })
            });
            if all_done && idle {
                return;
            }
            if round % 50 == 49 {
                self.now += time::Duration::seconds(25);
            }
            let h = self.rng.random_range(0..HOSTS);
            self.step(h, true).await;
            if round % 100 == 99 {
                self.maintenance().await;
            }
        }
        let missing: Vec<&i64> = self
            .key_of
            .keys()
            .filter(|id| !self.finished.contains(id))
            .collect();
        self.fail(&format!("not healed: unfinished {missing:?}"));
    }
}
