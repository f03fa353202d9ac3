//! Rate limits the per-job log lines of one lane, so that 100,000 failing jobs do not print
//! 100,000 lines: the first few of each window are logged, and the rest are counted and
//! reported in one line when the window ends. Time is passed in, so the tests need no clock.

use std::time::Duration;

use tokio::time::Instant;

/// Lines logged per window, per lane.
const LINES: u32 = 20;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct LogBudget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(now: Instant) -> LogBudget {
        LogBudget {
            window_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more line now. When a window ends with lines held back, returns
    /// how many (log them as one summary line).
    pub fn allow(&mut self, now: Instant) -> (bool, Option<u64>) {
        let held_back = self.window_end(now);
        if self.logged < LINES {
            self.logged += 1;
            (true, held_back)
        } else {
            self.suppressed += 1;
            (false, held_back)
        }
    }

    /// Ends the window now, whatever its time, returning how many lines it held back.
    pub fn take_held_back(&mut self) -> Option<u64> {
        let held_back = (self.suppressed > 0).then_some(self.suppressed);
        self.suppressed = 0;
        held_back
    }

    /// Ends the window if its time is up, returning how many lines it held back (if any).
    /// Called on the lane's periodic wake too, so that the summary of a flood that stopped
    /// is not left waiting for the next failure.
    pub fn window_end(&mut self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.window_start) < WINDOW {
            return None;
        }
        self.window_start = now;
        self.logged = 0;
        self.take_held_back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_the_first_lines_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        let logged = (0..1000).filter(|_| b.allow(t0).0).count();
        assert_eq!(logged, LINES as usize);
        // The next window starts by reporting what the last one held back.
        let (ok, held_back) = b.allow(t0 + WINDOW);
        assert!(ok);
        assert_eq!(held_back, Some(1000 - u64::from(LINES)));
        let (_, again) = b.allow(t0 + WINDOW * 2);
        assert_eq!(again, None, "nothing held back in a quiet window");
    }

    #[test]
    fn a_flood_that_stopped_is_summed_up_when_its_window_ends() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        (0..50).for_each(|_| {
            b.allow(t0);
        });
        assert_eq!(
            b.window_end(t0 + WINDOW / 2),
            None,
            "the window is still open"
        );
        assert_eq!(b.window_end(t0 + WINDOW), Some(50 - u64::from(LINES)));
        assert_eq!(b.window_end(t0 + WINDOW * 3), None, "reported once");
        // A lane let go mid-window reports at once.
        (0..30).for_each(|_| {
            b.allow(t0 + WINDOW * 3);
        });
        assert_eq!(b.take_held_back(), Some(10));
        assert_eq!(b.take_held_back(), None);
    }
}
