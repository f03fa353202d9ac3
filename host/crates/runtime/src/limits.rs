//! Per-call sandbox limits: a guest-time deadline, a linear-memory cap and a log budget.
//!
//! The deadline uses epoch interruption (a tokio timeout alone cannot stop a tight wasm loop):
//! a ticker thread bumps the engine's epoch every [`TICK`], and each store's epoch callback runs
//! once per tick while the guest executes. It traps when the guest's own time exceeds the
//! deadline, and otherwise yields to tokio, so a busy plugin never monopolises a worker thread.
//! Time spent inside host imports (outbound HTTP) is subtracted: a slow destination is the
//! HTTP timeout's business, not the plugin's CPU budget.

use std::time::{Duration, Instant};

/// Epoch tick: the resolution of deadlines and how often a running guest yields.
pub const TICK: Duration = Duration::from_millis(10);

/// Guest-time accounting for the call in progress.
#[derive(Debug, Default)]
pub struct CallClock {
    started: Option<Instant>,
    host_time: Duration,
    pub deadline: Duration,
    /// Set when the deadline fired, so the resulting trap is reported as a timeout.
    pub timed_out: bool,
}

impl CallClock {
    pub fn new(deadline: Duration) -> Self {
        CallClock {
            deadline,
            ..Default::default()
        }
    }

    /// Starts a new call.
    pub fn begin(&mut self) {
        self.started = Some(Instant::now());
        self.host_time = Duration::ZERO;
        self.timed_out = false;
    }

    /// Records time spent in a host import.
    pub fn add_host_time(&mut self, d: Duration) {
        self.host_time += d;
    }

    /// Guest time used by the current call.
    pub fn guest_elapsed(&self) -> Duration {
        self.started
            .map(|s| s.elapsed().saturating_sub(self.host_time))
            .unwrap_or_default()
    }

    /// Called once per epoch tick: `true` if the call must be stopped.
    pub fn expired(&mut self) -> bool {
        if self.guest_elapsed() >= self.deadline {
            self.timed_out = true;
        }
        self.timed_out
    }
}

/// Caps linear memory and remembers that the cap was hit, so the trap gets its own code.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub exceeded: bool,
    /// The most linear memory the instance has had (`sluice plugin call` reports it).
    pub peak: usize,
}

/// Tables hold function references; no honest plugin needs more than this many entries.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit exceeded: the plugin asked for {desired} bytes (had {current}), the cap is {}",
                self.max_bytes
            );
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Guest log lines kept per call; the rest are counted and reported in one line.
pub const MAX_LOG_LINES: usize = 100;
/// Guest log bytes kept per call.
pub const MAX_LOG_BYTES: usize = 64 << 10;

/// How much a call may log: a plugin logging in a loop must not flood the host's log (or its
/// disk). Once a call has used its budget, further lines are dropped and counted.
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: usize,
    bytes: usize,
    dropped: usize,
}

impl LogBudget {
    /// Starts a new call.
    pub fn begin(&mut self) {
        *self = LogBudget::default();
    }

    /// Whether a line of `len` bytes may still be logged in this call.
    pub fn admit(&mut self, len: usize) -> bool {
        if self.lines < MAX_LOG_LINES && self.bytes + len <= MAX_LOG_BYTES {
            self.lines += 1;
            self.bytes += len;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// How many lines were dropped in this call (then counts from zero again).
    pub fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_caps_lines_and_bytes_per_call() {
        let mut budget = LogBudget::default();
        budget.begin();
        let admitted = (0..150).filter(|_| budget.admit(10)).count();
        assert_eq!(admitted, MAX_LOG_LINES);
        assert_eq!(budget.take_dropped(), 50);
        assert_eq!(budget.take_dropped(), 0);

        budget.begin();
        assert!(budget.admit(MAX_LOG_BYTES - 1));
        assert!(!budget.admit(2), "over the byte budget");
        assert!(budget.admit(1), "a line that still fits");
        assert_eq!(budget.take_dropped(), 1);
        budget.begin();
        assert!(budget.admit(100), "a new call has a new budget");
    }

    #[test]
    fn clock_excludes_host_time() {
        let mut c = CallClock::new(Duration::from_millis(50));
        c.begin();
        std::thread::sleep(Duration::from_millis(60));
        c.add_host_time(Duration::from_millis(40));
        assert!(!c.expired(), "20ms of guest time is within 50ms");
        c.add_host_time(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.expired());
        assert!(c.timed_out);
    }
}
