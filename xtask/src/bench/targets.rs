//! The targets of the accelerated path (issues #5 and #13: TCP against
//! kernel VXLAN, with and without a password, is #13's) and of the
//! in-kernel path (issue #12), judged on one run's ratios.
//! Reported, never asserted: figures depend on the machine.

use super::path::Path;
use super::results::{BenchResult, Status};
use super::workload::Workload;

/// A ratio of medians the accelerated path should reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Target {
    pub text: &'static str,
    pub path: Path,
    pub base: Path,
    pub workload: Workload,
    pub measure: Measure,
    pub bound: Bound,
}

/// What the ratio compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Measure {
    /// Medians of the workload's figure (throughput, or RTT for ping).
    Median,
    /// The whole machine's CPU seconds per Gbit received (lower is better).
    CpuPerGbit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Bound {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this (latency).
    AtMost(f64),
}

pub(super) const TARGETS: [Target; 14] = [
    Target {
        text: "accelerated ≥ 3× plain, TCP 1 stream",
        path: Path::Xdp,
        base: Path::Plain,
        measure: Measure::Median,
        workload: Workload::Tcp1,
        bound: Bound::AtLeast(3.0),
    },
    Target {
        text: "accelerated ≥ 3× plain, TCP 4 streams",
        path: Path::Xdp,
        base: Path::Plain,
        measure: Measure::Median,
        workload: Workload::Tcp4,
        bound: Bound::AtLeast(3.0),
    },
    Target {
        text: "accelerated ≥ 3× plain, 64-byte packet rate (4 senders)",
        path: Path::Xdp,
        base: Path::Plain,
        measure: Measure::Median,
        workload: Workload::Udp64Rate,
        bound: Bound::AtLeast(3.0),
    },
    Target {
        text: "accelerated ≥ kernel VXLAN, UDP 1400 B",
        path: Path::Xdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Udp1400,
        bound: Bound::AtLeast(1.0),
    },
    Target {
        text: "accelerated ≥ 0.6× kernel VXLAN, TCP 1 stream",
        path: Path::Xdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Tcp1,
        bound: Bound::AtLeast(0.6),
    },
    Target {
        text: "accelerated ≥ 0.7× kernel VXLAN, TCP 4 streams",
        path: Path::Xdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Tcp4,
        bound: Bound::AtLeast(0.7),
    },
    Target {
        text: "accelerated + password ≥ 0.4× kernel VXLAN, TCP 1 stream",
        path: Path::XdpEncrypted,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Tcp1,
        bound: Bound::AtLeast(0.4),
    },
    Target {
        text: "accelerated RTT ≤ 2× kernel VXLAN",
        path: Path::Xdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Ping,
        bound: Bound::AtMost(2.0),
    },
    Target {
        text: "fastdp ≥ kernel VXLAN, TCP 1 stream",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Tcp1,
        bound: Bound::AtLeast(1.0),
    },
    Target {
        text: "fastdp ≥ kernel VXLAN, TCP 4 streams",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Tcp4,
        bound: Bound::AtLeast(1.0),
    },
    Target {
        text: "fastdp ≥ kernel VXLAN, UDP 1400 B",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Udp1400,
        bound: Bound::AtLeast(1.0),
    },
    Target {
        text: "fastdp RTT ≤ kernel VXLAN",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::Median,
        workload: Workload::Ping,
        bound: Bound::AtMost(1.0),
    },
    Target {
        text: "fastdp machine CPU per Gbit ≤ kernel VXLAN, TCP 1 stream",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::CpuPerGbit,
        workload: Workload::Tcp1,
        bound: Bound::AtMost(1.0),
    },
    Target {
        text: "fastdp machine CPU per Gbit ≤ kernel VXLAN, UDP 1400 B",
        path: Path::Fastdp,
        base: Path::Vxlan,
        measure: Measure::CpuPerGbit,
        workload: Workload::Udp1400,
        bound: Bound::AtMost(1.0),
    },
];

/// A target judged on one run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    pub target: Target,
    pub ratio: Option<f64>,
    pub met: Option<bool>,
    /// `met`, `missed by 30% (2.10× of 3×)`, `not measured: ...`.
    pub text: String,
}

pub(super) fn judge(result: &BenchResult) -> Vec<Verdict> {
    TARGETS.iter().map(|t| judge_one(result, *t)).collect()
}

fn judge_one(result: &BenchResult, target: Target) -> Verdict {
    let ratio = match target.measure {
        Measure::Median => result.ratio(target.path, target.base, target.workload),
        Measure::CpuPerGbit => result.cpu_ratio(target.path, target.base, target.workload),
    };
    let Some(ratio) = ratio else {
        let why: Vec<String> = [target.path, target.base]
            .into_iter()
            .filter(|&p| {
                result
                    .get(p)
                    .and_then(|r| r.median(target.workload))
                    .is_none()
            })
            .map(|p| match result.get(p) {
                None => format!("{} was not run", p.label()),
                Some(r) => match &r.status {
                    // The reason is in the main table; here it would repeat on every line.
                    Status::Unavailable(_) => format!("{} not available", p.label()),
                    Status::Failed(_) if r.runs.is_empty() => format!("{} failed", p.label()),
                    _ => format!("{}: no {} figure", p.label(), target.workload.label()),
                },
            })
            .collect();
        return Verdict {
            target,
            ratio: None,
            met: None,
            text: format!("not measured ({})", why.join("; ")),
        };
    };
    let (met, text) = match target.bound {
        Bound::AtLeast(want) if ratio >= want => (true, "met".to_string()),
        Bound::AtLeast(want) => (
            false,
            format!(
                "missed by {:.0}% ({ratio:.2}× of {want}×)",
                100.0 * (1.0 - ratio / want)
            ),
        ),
        Bound::AtMost(limit) if ratio <= limit => (true, "met".to_string()),
        Bound::AtMost(limit) => (
            false,
            format!(
                "missed: {:.0}% over ({ratio:.2}× for at most {limit}×)",
                100.0 * (ratio / limit - 1.0)
            ),
        ),
    };
    Verdict {
        target,
        ratio: Some(ratio),
        met: Some(met),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::PathResult;
    use crate::bench::results::tests::{run, sample};

    #[test]
    fn judges_ratios_against_bounds() {
        let mut r = sample();
        let mut xdp = PathResult::new(Path::Xdp, Status::Measured);
        // TCP 1: 2.1 = 2.1× plain (missed 3× by 30%), 0.13× VXLAN (0.6×: missed by 78%).
        xdp.runs
            .insert(Workload::Tcp1, vec![run(2.1, 10.0, 1.0, None)]);
        // UDP: 3.4 = VXLAN's (met); 64-byte packets 0.8 Mpps = 4× plain (met).
        xdp.runs
            .insert(Workload::Udp1400, vec![run(3.4, 10.0, 1.0, None)]);
        xdp.runs
            .insert(Workload::Udp64Rate, vec![run(0.8, 1.0, 1.0, None)]);
        // RTT 0.075 ms = 2.5× VXLAN's 0.03 (missed by 25%).
        xdp.runs
            .insert(Workload::Ping, vec![run(0.075, 0.0, 1.0, None)]);
        r.paths[3] = xdp;
        let v = judge(&r);
        let texts: Vec<&str> = v.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts[0], "missed by 30% (2.10× of 3×)");
        assert!(
            texts[1].starts_with("not measured (weave xdp: no TCP 4 streams figure"),
            "{}",
            texts[1]
        );
        assert_eq!(texts[2], "met");
        assert_eq!(texts[3], "met");
        assert_eq!(texts[4], "missed by 78% (0.13× of 0.6×)");
        assert!(
            texts[5].starts_with("not measured (weave xdp: no TCP 4 streams figure"),
            "{}",
            texts[5]
        );
        assert!(texts[6].starts_with("not measured"), "{}", texts[6]);
        assert_eq!(texts[7], "missed: 25% over (2.50× for at most 2×)");
        assert_eq!(v[2].met, Some(true));
        assert_eq!(v[7].met, Some(false));
        assert!(
            texts[8].starts_with("not measured (weave fastdp was not run"),
            "{}",
            texts[8]
        );
    }

    #[test]
    fn judges_cpu_per_gbit_lower_is_better() {
        let mut r = sample();
        let mut fastdp = PathResult::new(Path::Fastdp, Status::Measured);
        let vxlan = r.get(Path::Vxlan).unwrap().runs[&Workload::Tcp1].clone();
        fastdp.runs.insert(Workload::Tcp1, vxlan);
        r.paths.push(fastdp);
        let v = judge(&r);
        let cpu = v
            .iter()
            .find(|v| {
                v.target.measure == Measure::CpuPerGbit && v.target.workload == Workload::Tcp1
            })
            .unwrap();
        assert_eq!(cpu.ratio, Some(1.0));
        assert_eq!(cpu.met, Some(true));
        let tcp1 = v
            .iter()
            .find(|v| v.target.path == Path::Fastdp && v.target.workload == Workload::Tcp1)
            .unwrap();
        assert_eq!(tcp1.text, "met");
    }
}
