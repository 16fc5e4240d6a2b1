//! What a workload cost the whole machine in CPU time, from `/proc/stat` (Linux): the server,
//! the database and this load generator together. Next to a throughput ratio, the CPU time per
//! operation tells whether a workload was bound by the machine's cores (busy near 100 %) or by
//! waits, and how far the cores alone would let it go.

/// The kernel's accounting unit in `/proc/stat`: USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// The machine's CPU counters at one instant, in ticks summed over every core.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    busy: u64,
    total: u64,
}

/// The machine's CPU use between two readings.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Share of all cores busy, in percent.
    pub busy_pct: f64,
    /// Core-seconds spent (any process, user and system).
    pub busy_seconds: f64,
}

impl CpuClock {
    /// The counters now; `None` where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The first line, `cpu user nice system idle iowait irq softirq steal …`: idle and
    /// iowait are the idle time, everything else is busy.
    fn parse(stat: &str) -> Option<Self> {
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some(Self { busy: total - idle, total })
    }

    /// The use since this reading; `None` if the counters cannot be read again or did not move.
    pub fn used(&self) -> Option<CpuUse> {
        let now = Self::now()?;
        let total = now.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let busy = now.busy.saturating_sub(self.busy);
        Some(CpuUse {
            busy_pct: busy as f64 * 100.0 / total as f64,
            busy_seconds: busy as f64 / TICKS_PER_SECOND,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_busy_and_total_ticks_from_the_summary_line() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        // Busy: user, nice, system, irq, softirq, steal; idle: idle and iowait.
        assert_eq!(CpuClock::parse(stat).map(|clock| (clock.busy, clock.total)), Some((160, 980)));
    }

    #[test]
    fn refuses_a_file_without_the_summary_line() {
        assert!(CpuClock::parse("intr 1 2 3\n").is_none());
        assert!(CpuClock::parse("cpu  1 2 x 4\n").is_none());
    }
}
