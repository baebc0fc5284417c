//! What processes cost, read from `/proc`: CPU time (user + system, children not included),
//! resident memory and open descriptors.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CPU time of `pid` so far, user and system; `None` once the process is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_ticks(&text)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64))
}

/// Resident memory of `pid`, bytes (`VmRSS`).
pub fn rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&text, "VmRSS:").map(|kib| kib * 1024)
}

/// Open descriptors of `pid` (sockets included): for etcd, about one per client connection.
pub fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU used by a set of processes from a moment on.
#[derive(Debug)]
pub struct CpuMeter {
    /// Each process and its CPU time at the start.
    start: Vec<(u32, Duration)>,
    at: Instant,
}

impl CpuMeter {
    /// Starts counting the CPU time of `pids` from now.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            start: pids.iter().map(|p| (*p, cpu_time(*p).unwrap_or_default())).collect(),
            at: Instant::now(),
        }
    }

    /// CPU time used since [`Self::start`], each process's, in the order given.
    fn used(&self) -> impl Iterator<Item = Duration> {
        self.start
            .iter()
            .map(|(pid, was)| cpu_time(*pid).unwrap_or(*was).saturating_sub(*was))
    }

    /// CPU time used since [`Self::start`], summed over the processes.
    pub fn total(&self) -> Duration {
        self.used().sum()
    }

    /// CPU used since [`Self::start`], summed over the processes, percent of one core.
    pub fn percent(&self) -> f64 {
        self.share(self.total())
    }

    /// The busiest process's CPU since [`Self::start`], percent of one core.
    pub fn busiest_percent(&self) -> f64 {
        self.share(self.used().max().unwrap_or_default())
    }

    fn share(&self, used: Duration) -> f64 {
        100.0 * used.as_secs_f64() / self.at.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`): `getconf CLK_TCK`, 100 where that
/// cannot be run (it is 100 on every Linux architecture Switchyard builds for).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` from a `/proc/PID/stat` line, in clock ticks. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself, so fields are counted from the
/// last `)`: `utime` and `stime` are fields 14 and 15.
fn stat_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kB figure of `field` (`VmRSS:`) in `/proc/PID/status`.
fn status_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (etcd (m0) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 99 0 0";
        assert_eq!(stat_ticks(stat), Some(325));
        assert_eq!(stat_ticks("4242 (short) S 1"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn resident_memory_is_read_from_its_line() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t12\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(51_200));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        assert!(rss(me).is_some_and(|b| b > 0));
        assert!(open_files(me).is_some_and(|n| n > 0));
    }
}
