//! Jobs per call after a destination said "too large" (413): halved at each such answer,
//! doubled back after a run of clean calls.

use crate::lane::Decision;
use sluice_store::LaneId;

/// The call size a lane uses, below the plugin's batch size after a 413.
#[derive(Debug, Default)]
pub(super) struct BatchCap {
    cap: Option<usize>,
    clean_calls: u32,
}

/// Clean calls at the cap before it doubles.
const CLEAN_CALLS_TO_GROW: u32 = 8;

impl BatchCap {
    /// The call size to use, given the plugin's batch size.
    pub(super) fn limit(&self, batch_size: usize) -> usize {
        self.cap.map_or(batch_size, |c| c.min(batch_size)).max(1)
    }

    pub(super) fn observe(
        &mut self,
        call_len: usize,
        too_large: bool,
        decisions: &[Decision],
        lane: &LaneId,
    ) {
        if too_large {
            let cap = (call_len / 2).max(1);
            tracing::info!(lane = %lane, jobs_per_call = cap, "destination answered too large; halving the calls");
            self.cap = Some(cap);
            self.clean_calls = 0;
            return;
        }
        let Some(cap) = self.cap else { return };
        if call_len >= cap
            && decisions
                .iter()
                .all(|d| matches!(d, Decision::Delivered | Decision::Skipped))
        {
            self.clean_calls += 1;
            if self.clean_calls >= CLEAN_CALLS_TO_GROW {
                self.cap = Some(cap * 2);
                self.clean_calls = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_halves_the_calls_and_clean_calls_grow_them_back() {
        let lane = LaneId {
            workspace_id: "w".into(),
            destination_id: "d".into(),
        };
        let mut cap = BatchCap::default();
        assert_eq!(cap.limit(100), 100);
        cap.observe(100, true, &[], &lane);
        assert_eq!(cap.limit(100), 50);
        cap.observe(50, true, &[], &lane);
        assert_eq!(cap.limit(100), 25);
        // Skipped jobs (no payload) finish like delivered ones: the call is clean.
        let mut clean = vec![Decision::Delivered; 24];
        clean.push(Decision::Skipped);
        for _ in 0..CLEAN_CALLS_TO_GROW - 1 {
            cap.observe(25, false, &clean, &lane);
        }
        assert_eq!(cap.limit(100), 25, "not yet");
        cap.observe(25, false, &clean, &lane);
        assert_eq!(cap.limit(100), 50);
        // A call with a failure does not count as clean.
        let mut mixed = vec![Decision::Delivered; 49];
        mixed.push(Decision::Released);
        for _ in 0..CLEAN_CALLS_TO_GROW {
            cap.observe(50, false, &mixed, &lane);
        }
        assert_eq!(cap.limit(100), 50);
        cap.observe(1, true, &[], &lane);
        assert_eq!(cap.limit(100), 1, "never below one");
    }
}
