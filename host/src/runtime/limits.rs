//! Per-call sandbox limits: a guest-time deadline and a linear-memory cap.
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

#[cfg(test)]
mod tests {
    use super::*;

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
