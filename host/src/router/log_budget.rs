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
        let mut held_back = None;
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            if self.suppressed > 0 {
                held_back = Some(self.suppressed);
            }
            self.window_start = now;
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LINES {
            self.logged += 1;
            (true, held_back)
        } else {
            self.suppressed += 1;
            (false, held_back)
        }
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
}
