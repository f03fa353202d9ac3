//! Where a run's CPU went: the host, PostgreSQL, the bench's own load generator, a peer
//! script, and the machine as a whole (busy cores, and time the hypervisor stole).
//!
//! The ingest rows are bounded by the two cores, not by a wait: this split, taken over the
//! same run as the figure, is the profile behind a ratio that falls short (which side spends
//! the CPU per event, and whether the cores were full).

use std::time::Instant;

use super::tools;

/// CPU used so far by each side, in seconds; the difference of two marks is a [`CpuUsed`].
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    host: f64,
    db: f64,
    bench: f64,
    children: f64,
    machine: MachineSeconds,
    at: Instant,
}

impl CpuMark {
    /// Marks now; `host` is the Sluice process (if any), `postmaster` the PostgreSQL server's.
    pub fn now(host: Option<u32>, postmaster: Option<u32>) -> CpuMark {
        CpuMark {
            host: tools::cpu_seconds(host.as_slice()),
            db: postmaster.map_or(0.0, tools::server_cpu_seconds),
            bench: tools::own_cpu_seconds(),
            children: tools::reaped_children_cpu_seconds(),
            machine: MachineSeconds::read().unwrap_or_default(),
            at: Instant::now(),
        }
    }

    /// What was used between `self` and `later`.
    pub fn until(&self, later: &CpuMark) -> CpuUsed {
        CpuUsed {
            host: later.host - self.host,
            db: later.db - self.db,
            bench: later.bench - self.bench,
            children: later.children - self.children,
            busy: later.machine.busy - self.machine.busy,
            stolen: later.machine.stolen - self.machine.stolen,
            secs: later.at.duration_since(self.at).as_secs_f64(),
        }
    }
}

/// CPU seconds used by each side over a stretch of `secs` seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsed {
    pub host: f64,
    pub db: f64,
    pub bench: f64,
    pub children: f64,
    /// The whole machine: every process and the kernel.
    pub busy: f64,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub stolen: f64,
    pub secs: f64,
}

impl std::ops::Add for CpuUsed {
    type Output = CpuUsed;
    fn add(self, o: CpuUsed) -> CpuUsed {
        CpuUsed {
            host: self.host + o.host,
            db: self.db + o.db,
            bench: self.bench + o.bench,
            children: self.children + o.children,
            busy: self.busy + o.busy,
            stolen: self.stolen + o.stolen,
            secs: self.secs + o.secs,
        }
    }
}

impl CpuUsed {
    /// Busy cores of the machine (and stolen ones), e.g. `"cores busy 1.96 of 2, 0.02 stolen"`.
    pub fn cores(&self) -> String {
        let secs = self.secs.max(1e-9);
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        format!(
            "cores busy {:.2} of {cores}, {:.2} stolen",
            self.busy / secs,
            self.stolen / secs
        )
    }

    /// A Sluice run's split per event: host, PostgreSQL, the bench's load generator.
    pub fn per_sluice_event(&self, events: f64) -> String {
        let us = |s: f64| s * 1e6 / events.max(1.0);
        format!(
            "CPU per event: host {:.1} µs, PostgreSQL {:.1} µs, load generator {:.1} µs; {}",
            us(self.host),
            us(self.db),
            us(self.bench),
            self.cores()
        )
    }

    /// A peer script's split per row: PostgreSQL, and the script with its `psql`.
    pub fn per_peer_row(&self, rows: f64) -> String {
        let us = |s: f64| s * 1e6 / rows.max(1.0);
        format!(
            "CPU per row: PostgreSQL {:.1} µs, psql {:.1} µs; {}",
            us(self.db),
            us(self.children),
            self.cores()
        )
    }
}

/// The machine's CPU time so far, from `/proc/stat`, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct MachineSeconds {
    busy: f64,
    stolen: f64,
}

impl MachineSeconds {
    fn read() -> Option<MachineSeconds> {
        let ticks = tools::clock_ticks();
        let (busy, stolen) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(MachineSeconds {
            busy: busy as f64 / ticks,
            stolen: stolen as f64 / ticks,
        })
    }
}

/// Busy and stolen ticks of all CPUs from `/proc/stat`'s first line: `cpu user nice system
/// idle iowait irq softirq steal guest guest_nice`. Busy is everything but idle, iowait and
/// steal (guest time is already inside user and nice).
fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some((busy, at(7)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_leaves_out_idle_iowait_and_steal() {
        let stat = "cpu  100 2 30 5000 40 1 7 9 0 0\ncpu0 50 1 15 2500 20 0 3 4 0 0\nintr 1 2\n";
        assert_eq!(parse_proc_stat(stat), Some((100 + 2 + 30 + 1 + 7, 9)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn splits_per_event_and_counts_busy_cores() {
        let used = CpuUsed {
            host: 0.75,
            db: 1.4,
            bench: 0.13,
            children: 0.0,
            busy: 3.9,
            stolen: 0.1,
            secs: 2.0,
        };
        let text = used.per_sluice_event(100_000.0);
        assert!(
            text.starts_with(
                "CPU per event: host 7.5 µs, PostgreSQL 14.0 µs, load generator 1.3 µs; cores busy 1.95 of "
            ),
            "{text}"
        );
        assert!(text.ends_with(", 0.05 stolen"), "{text}");
        let both = used + used;
        assert_eq!((both.host, both.secs), (1.5, 4.0));
    }
}
