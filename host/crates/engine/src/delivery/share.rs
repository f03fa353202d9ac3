//! How many lanes this host may hold: its fair share when several hosts share the store.
//!
//! Maintenance counts the live hosts and the lanes with work (`store::lanes::host_heartbeat`)
//! and sets the share to ceil(lanes / hosts). A lane runner does not take a lane while its host
//! holds its share already, and a host holding more than its share gives a lane back (after
//! finishing what that lane has in flight), so that a host that starts or restarts gets its
//! part of the work instead of watching the first host keep everything. Some host always has
//! room: the shares add up to at least the number of lanes.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct HostShare {
    held: AtomicUsize,
    share: AtomicUsize,
}

impl Default for HostShare {
    fn default() -> Self {
        HostShare {
            held: AtomicUsize::new(0),
            // Until maintenance has counted, no limit.
            share: AtomicUsize::new(usize::MAX),
        }
    }
}

impl HostShare {
    /// Sets the share from the counts of live hosts and lanes with work.
    pub fn set(&self, hosts: i64, lanes: i64) {
        let hosts = hosts.max(1) as usize;
        let lanes = lanes.max(0) as usize;
        self.share
            .store(lanes.div_ceil(hosts).max(1), Ordering::Relaxed);
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
        s.set(1, 4);
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
}
