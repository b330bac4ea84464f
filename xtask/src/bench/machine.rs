//! The machine a bench ran on, as the results describe it.

use std::fs;
use std::process::Command;

use crate::util;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Machine {
    /// UTC, e.g. `2026-11-26T05:10:00Z`.
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    /// Load average (1 min) when the bench started: others' work skews the figures.
    pub load_at_start: f64,
    /// The commit measured (`git describe --always --dirty`).
    pub commit: String,
    /// Build profile of the measured `weave`.
    pub profile: &'static str,
    pub iperf3: String,
}

impl Machine {
    pub(super) fn describe(release: bool) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            date: output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "?".into(), |s| s.trim().to_string()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map_or_else(
                    || "?".into(),
                    |(_, m)| m.split_whitespace().collect::<Vec<_>>().join(" "),
                ),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / (1024.0 * 1024.0)),
            load_at_start: fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(f64::NAN),
            commit: output(util::git().args(["describe", "--always", "--dirty", "--abbrev=12"])),
            profile: if release { "release" } else { "debug" },
            iperf3: output(Command::new("iperf3").arg("--version"))
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

impl Machine {
    /// Whether others' work was likely to skew the figures: a load average
    /// at the start above half the CPUs.
    pub(super) fn busy(&self) -> bool {
        self.load_at_start > self.cpus as f64 / 2.0
    }
}

fn output(c: &mut Command) -> String {
    c.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}
