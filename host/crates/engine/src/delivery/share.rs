//! How many lanes this host may hold: its fair share when several hosts share the store.
//!
//! Maintenance counts the live hosts and the lanes with work (`store::lanes::host_heartbeat`)
//! and sets the share to ceil(lanes / hosts). A lane runner does not take a lane while its host
//! holds its share already, and a host holding more than its share gives a lane back (after
//! finishing what that lane has in flight), so that a host that starts or restarts gets its
//! part of the work instead of watching the first host keep everything. Some host always has
//! room: the shares add up to at least the number of lanes.
//!
//! The count is of the lanes that had work when it was made, so lanes that get work after it
//! find every host at its share until the next count (which the ingest that gave them the work
//! asks for). Two rules keep that from delaying them:
//! - a host alone has no limit: there is no one to leave a lane to;
//! - a lane refused for want of room looks again as soon as the next count is in
//!   ([`HostShare::recounts`]), not after a fixed pause.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

#[derive(Debug)]
pub struct HostShare {
    held: AtomicUsize,
    share: AtomicUsize,
    /// Bumped by every count.
    counted: watch::Sender<u64>,
}

impl Default for HostShare {
    fn default() -> Self {
        HostShare {
            held: AtomicUsize::new(0),
            // Until maintenance has counted, no limit.
            share: AtomicUsize::new(usize::MAX),
            counted: watch::Sender::new(0),
        }
    }
}

impl HostShare {
    /// Sets the share from the counts of live hosts and lanes with work.
    pub fn set(&self, hosts: i64, lanes: i64) {
        let share = match hosts.max(1) as usize {
            // Alone, the host takes every lane that has work, however many there are now.
            1 => usize::MAX,
            hosts => (lanes.max(0) as usize).div_ceil(hosts).max(1),
        };
        self.share.store(share, Ordering::Relaxed);
        self.counted.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sees the counts made from now on: take it before [`HostShare::has_room`], so that a
    /// count made in between is not missed, and wait on `changed()`.
    pub fn recounts(&self) -> watch::Receiver<u64> {
        self.counted.subscribe()
    }

    /// Whether this host may take one more lane.
    pub fn has_room(&self) -> bool {
        self.held.load(Ordering::Relaxed) < self.share.load(Ordering::Relaxed)
    }

    /// A lane was taken.
    pub fn took(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// A lane was given up.
    pub fn gave_up(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| h.checked_sub(1));
    }

    /// If this host holds more than its share, claims the right to give one lane back (one
    /// caller at a time wins it): the caller then hands its lane over and counts it given up.
    pub fn claim_surplus(&self) -> bool {
        let share = self.share.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h > share).then(|| h - 1)
            })
            .is_ok()
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_surplus_is_given_back_one_at_a_time() {
        let s = HostShare::default();
        for _ in 0..4 {
            assert!(s.has_room());
            s.took();
        }
        s.set(2, 8);
        assert!(!s.has_room());
        assert!(!s.claim_surplus(), "exactly at its share");
        s.set(3, 4);
        assert!(s.claim_surplus(), "4 held, share ceil(4/3) = 2");
        assert!(s.claim_surplus());
        assert!(!s.claim_surplus());
        assert_eq!(s.held(), 2);
        s.gave_up();
        assert!(s.has_room());
    }

    #[test]
    fn a_host_alone_takes_every_lane_whatever_the_last_count() {
        let s = HostShare::default();
        for _ in 0..4 {
            s.took();
        }
        // Counted when two lanes had work; a hundred more get some before the next count.
        s.set(1, 2);
        assert!(s.has_room(), "a host alone has no share to keep to");
        assert!(!s.claim_surplus(), "nor another host to give a lane to");
        s.set(2, 2);
        assert!(!s.has_room(), "with a second host, the share applies again");
    }

    #[tokio::test]
    async fn a_lane_refused_for_room_sees_the_next_count() {
        let s = HostShare::default();
        s.set(2, 2);
        s.took();
        let mut recounts = s.recounts();
        assert!(!s.has_room());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), recounts.changed())
                .await
                .is_err(),
            "no count yet"
        );
        // A count made before the lane waits is seen all the same.
        s.set(2, 4);
        recounts.changed().await.expect("the share lives");
        assert!(s.has_room());
    }
}
