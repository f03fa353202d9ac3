//! The dedup keys of the window, kept in this host's memory (plain PostgreSQL).
//!
//! Ingest records a group's new keys as one `dedup_groups` row per workspace, tagged with the
//! workspace's head after the group (migration 0017), and probes the keys here instead of an
//! index. The invariant, per workspace: **every key of a group whose head_after is at or below
//! [`DedupMemory::head`] is in memory.** Each ingest call passes that head; under the
//! workspace's lock the store returns the keys of the groups above it (other hosts', or this
//! host's other writers' whose apply has not run yet), probes the candidates against them, and
//! after the commit [`DedupMemory::apply`] adds those keys and the group's own and moves the
//! head to the group's head after. A host that starts, or first sees a workspace, has head 0:
//! before its first call it loads the workspace's window outside any lock (`append::one_call`),
//! and the call catches up from there.
//!
//! The memory is bounded ([`DedupMemory::has_room`]); a host whose memory is full records its
//! keys as `dedup_keys` rows instead, which every host probes while any are in the window.
//!
//! Sans-IO: the caller passes the minutes; nothing here reads a clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use uuid::Uuid;

/// Bytes a key costs in memory, as counted against the budget: the probe map's entry (16 + 4
/// bytes, a control byte, at most 1/8 empty, up to twice that while it grows) and its place in
/// the expiry list.
pub const BYTES_PER_KEY: usize = 64;

/// The keys of the window, per workspace.
#[derive(Debug)]
pub struct DedupMemory {
    max_keys: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    workspaces: HashMap<String, Workspace>,
    keys: usize,
}

#[derive(Debug, Default)]
struct Workspace {
    /// Every key of a group with head_after at or below this is in `keys`.
    head: i64,
    /// Key → the minute it was recorded in.
    keys: HashMap<Uuid, i32>,
    /// Minute → the keys recorded in it, for expiry.
    minutes: BTreeMap<i32, Vec<Uuid>>,
}

/// One workspace's part of an ingest call's result, for [`DedupMemory::apply`].
#[derive(Debug, Default)]
pub struct Learned {
    /// The head the call passed ([`DedupMemory::head`] when it was made).
    pub from: i64,
    /// The workspace's head after the group (its head before when it got no new event).
    pub to: i64,
    /// (minute, key) of the keys recorded between `from` and `to`: the catch-up's and the
    /// group's own (when recorded as a group).
    pub keys: Vec<(i32, Uuid)>,
}

impl DedupMemory {
    /// Memory for at most `bytes` of keys.
    pub fn new(bytes: u64) -> DedupMemory {
        DedupMemory {
            max_keys: usize::try_from(bytes).unwrap_or(usize::MAX) / BYTES_PER_KEY,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves the maps consistent (no operation is half done
        // across them in a way a probe could misread), so the poison is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The head `workspace`'s memory covers (0: none).
    pub fn head(&self, workspace: &str) -> i64 {
        self.lock().workspaces.get(workspace).map_or(0, |w| w.head)
    }

    /// Of `candidates` (workspace, key), which are seen within the window (one lock for all).
    pub fn seen_all<'a>(
        &self,
        candidates: impl IntoIterator<Item = (&'a str, &'a Uuid)>,
        oldest: i32,
    ) -> Vec<bool> {
        let inner = self.lock();
        candidates
            .into_iter()
            .map(|(w, h)| {
                inner
                    .workspaces
                    .get(w)
                    .and_then(|w| w.keys.get(h))
                    .is_some_and(|m| *m >= oldest)
            })
            .collect()
    }

    /// Whether `more` keys fit in the budget, on top of what is kept.
    pub fn has_room(&self, more: usize) -> bool {
        self.lock().keys.saturating_add(more) <= self.max_keys
    }

    /// The most keys the budget holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys kept, over all workspaces.
    pub fn len(&self) -> usize {
        self.lock().keys
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds what an ingest call learned for `workspace`, and drops its keys older than
    /// `oldest`. The head moves to `learned.to` only if the memory covered `learned.from`
    /// (always, unless [`DedupMemory::forget`] ran in between): the call's catch-up then
    /// covered every group between the two.
    pub fn apply(&self, workspace: &str, learned: Learned, oldest: i32) {
        let mut inner = self.lock();
        let Inner { workspaces, keys } = &mut *inner;
        let w = workspaces.entry(workspace.to_owned()).or_default();
        for (minute, hash) in learned.keys {
            if minute < oldest {
                continue;
            }
            match w.keys.insert(hash, minute) {
                None => *keys += 1,
                // Recorded again after it expired: kept under the later minute.
                Some(before) if before < minute => {}
                Some(before) => {
                    w.keys.insert(hash, before);
                    continue;
                }
            }
            w.minutes.entry(minute).or_default().push(hash);
        }
        if learned.from <= w.head {
            w.head = w.head.max(learned.to);
        }
        sweep(w, keys, oldest);
    }

    /// Drops every workspace's keys older than `oldest` (maintenance): a workspace that stopped
    /// writing would otherwise keep its keys, and their room in the budget, until its next
    /// write.
    pub fn expire(&self, oldest: i32) {
        let mut inner = self.lock();
        let Inner { workspaces, keys } = &mut *inner;
        for w in workspaces.values_mut() {
            sweep(w, keys, oldest);
        }
    }

    /// Drops `workspace`'s memory: the store's head is below it (another database).
    pub fn forget(&self, workspace: &str) {
        let mut inner = self.lock();
        if let Some(w) = inner.workspaces.remove(workspace) {
            inner.keys -= w.keys.len();
        }
    }
}

/// Drops `w`'s keys older than `oldest`, counting them off `keys`.
fn sweep(w: &mut Workspace, keys: &mut usize, oldest: i32) {
    while let Some(entry) = w.minutes.first_entry() {
        if *entry.key() >= oldest {
            break;
        }
        let (minute, hashes) = entry.remove_entry();
        for hash in hashes {
            // A key recorded again after it expired sits under a later minute.
            if w.keys.get(&hash) == Some(&minute) {
                w.keys.remove(&hash);
                *keys -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn seen(m: &DedupMemory, workspace: &str, key: &Uuid, oldest: i32) -> bool {
        m.seen_all([(workspace, key)], oldest)[0]
    }

    fn learned(from: i64, to: i64, keys: &[(i32, u128)]) -> Learned {
        Learned {
            from,
            to,
            keys: keys.iter().map(|(m, k)| (*m, key(*k))).collect(),
        }
    }

    #[test]
    fn a_key_is_seen_in_its_workspace_within_the_window() {
        let m = DedupMemory::new(1 << 20);
        m.apply("w", learned(0, 5, &[(10, 1), (12, 2)]), 0);
        assert_eq!(m.head("w"), 5);
        assert!(seen(&m, "w", &key(1), 10));
        assert!(!seen(&m, "w", &key(1), 11), "recorded before the window");
        assert!(!seen(&m, "other", &key(1), 0));
        assert_eq!(
            m.seen_all([("w", &key(2)), ("w", &key(3))], 0),
            vec![true, false]
        );
    }

    #[test]
    fn applies_out_of_order_keep_the_head_covering_every_group_below_it() {
        let m = DedupMemory::new(1 << 20);
        m.apply("w", learned(0, 5, &[(1, 1)]), 0);
        // Two writers both passed head 5; the second (head 9) caught up on the first (head 7).
        m.apply("w", learned(5, 9, &[(1, 2), (1, 3)]), 0);
        m.apply("w", learned(5, 7, &[(1, 2)]), 0);
        assert_eq!(m.head("w"), 9);
        assert_eq!(m.len(), 3, "a key learned twice is kept once");
    }

    #[test]
    fn after_a_forget_the_head_stays_until_a_call_from_zero() {
        let m = DedupMemory::new(1 << 20);
        m.apply("w", learned(0, 5, &[(1, 1)]), 0);
        m.forget("w");
        assert_eq!((m.head("w"), m.len()), (0, 0));
        // A call made before the forget (from 5) cannot vouch for the groups below 5.
        m.apply("w", learned(5, 9, &[(1, 2)]), 0);
        assert_eq!(m.head("w"), 0);
        m.apply("w", learned(0, 9, &[(1, 1), (1, 2)]), 0);
        assert_eq!(m.head("w"), 9);
    }

    #[test]
    fn keys_older_than_the_window_are_dropped_and_a_key_recorded_again_stays() {
        let m = DedupMemory::new(1 << 20);
        m.apply("w", learned(0, 1, &[(1, 1), (1, 2), (2, 3)]), 0);
        // Key 1 expired and was recorded again at minute 70.
        m.apply("w", learned(1, 2, &[(70, 1)]), 0);
        m.apply("w", learned(2, 3, &[]), 10);
        assert_eq!(m.len(), 1);
        assert!(seen(&m, "w", &key(1), 10));
        assert!(!seen(&m, "w", &key(3), 0));
    }

    #[test]
    fn expiry_frees_the_room_of_a_workspace_that_stopped_writing() {
        let m = DedupMemory::new(2 * BYTES_PER_KEY as u64);
        m.apply("idle", learned(0, 1, &[(1, 1), (1, 2)]), 0);
        assert!(!m.has_room(1));
        m.expire(2);
        assert!(m.has_room(2));
        assert_eq!(
            m.head("idle"),
            1,
            "the head stays: no group below it is missing"
        );
    }

    #[test]
    fn the_budget_counts_keys() {
        let m = DedupMemory::new(3 * BYTES_PER_KEY as u64);
        assert!(m.has_room(3));
        m.apply("a", learned(0, 1, &[(1, 1), (1, 2)]), 0);
        assert!(m.has_room(1));
        assert!(!m.has_room(2));
        m.forget("a");
        assert!(m.has_room(3));
    }
}
