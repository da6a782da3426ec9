//! Reading processes and the machine off `/proc`: resident memory and CPU time of the server
//! under test and of the harness itself.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcSample {
    pub(crate) at: Instant,
    /// User + system CPU seconds since the process started (all threads).
    pub(crate) cpu_s: f64,
    /// Resident set, bytes.
    pub(crate) rss: u64,
}

/// Processes to watch, summed (the nodes of a mesh on one machine); none reads the harness
/// itself.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pids: Arc<[u32]>,
    ticks_per_s: f64,
}

impl Proc {
    pub(crate) fn harness() -> Self {
        Self {
            pids: Arc::new([]),
            ticks_per_s: clock_ticks(),
        }
    }

    /// The processes `pids` (at least one).
    pub(crate) fn pids(pids: &[u32]) -> Self {
        Self {
            pids: pids.into(),
            ticks_per_s: clock_ticks(),
        }
    }

    /// The watched process ids (empty for the harness itself).
    pub(crate) fn ids(&self) -> &[u32] {
        &self.pids
    }

    fn read(&self, pid: Option<u32>) -> Option<ProcSample> {
        let path = |file: &str| match pid {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        };
        let stat = std::fs::read_to_string(path("stat")).ok()?;
        let status = std::fs::read_to_string(path("status")).ok()?;
        Some(ProcSample {
            at: Instant::now(),
            cpu_s: cpu_ticks(&stat)? as f64 / self.ticks_per_s,
            rss: rss_bytes(&status)?,
        })
    }

    /// The processes' CPU time and RSS now, summed; `None` if one is gone or /proc is
    /// unreadable.
    pub(crate) fn sample(&self) -> Option<ProcSample> {
        if self.pids.is_empty() {
            return self.read(None);
        }
        let mut total = ProcSample {
            at: Instant::now(),
            cpu_s: 0.0,
            rss: 0,
        };
        for &pid in self.pids.iter() {
            let one = self.read(Some(pid))?;
            total.cpu_s += one.cpu_s;
            total.rss += one.rss;
            total.at = one.at;
        }
        Some(total)
    }
}

/// `utime + stime` of a `/proc/PID/stat` line (fields 14 and 15; the command name in field 2
/// may contain spaces and parentheses, so fields are counted after the last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The kernel's clock ticks per second (`AT_CLKTCK` of the auxiliary vector), 100 if unknown.
fn clock_ticks() -> f64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100.0;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == AT_CLKTCK)
        .map_or(100.0, |(_, value)| value as f64)
}

/// CPU use between two samples, in cores (1.0 = one core busy all the time).
pub(crate) fn cores_used(before: &ProcSample, after: &ProcSample) -> f64 {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (after.cpu_s - before.cpu_s).max(0.0) / wall
}

/// The machine a report came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpu_model: String,
    pub(crate) cpus: usize,
    pub(crate) memory_bytes: u64,
    pub(crate) kernel: String,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024);
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (tern (serve) x) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(280));
        assert_eq!(
            rss_bytes("Name:\ttern\nVmRSS:\t  1234 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(rss_bytes("Name:\ttern\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = Proc::harness();
        let sample = me.sample().expect("own /proc entry");
        assert!(sample.rss > 0);
        assert!(sample.cpu_s >= 0.0);
        assert!((1.0..=10_000.0).contains(&clock_ticks()));
    }

    #[test]
    fn several_processes_are_summed() {
        let me = std::process::id();
        let one = Proc::pids(&[me]).sample().expect("own entry");
        let twice = Proc::pids(&[me, me]).sample().expect("own entry twice");
        // Memory is steady enough between two reads; CPU only grows.
        assert!(
            twice.rss.abs_diff(2 * one.rss) <= one.rss / 10,
            "{one:?} {twice:?}"
        );
        assert!(twice.cpu_s >= 2.0 * one.cpu_s);
        assert_eq!(Proc::pids(&[me, me]).ids(), &[me, me]);
        // A process that is gone makes the whole reading unavailable.
        assert!(Proc::pids(&[me, u32::MAX]).sample().is_none());
    }
}
