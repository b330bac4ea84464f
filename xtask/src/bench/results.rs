//! What a bench run measured, path by path, and the figures derived from it.

use std::collections::BTreeMap;

use super::machine::Machine;
use super::path::Path;
use super::stats::{self, Spread};
use super::workload::Workload;

/// One repetition of one workload.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Run {
    /// Gbit/s received, millions of packets received per second, or the
    /// median RTT in ms (see [`Workload::unit`]).
    pub value: f64,
    /// UDP datagrams or pings lost, in percent.
    pub loss_percent: Option<f64>,
    /// Gbit received (0 for ping).
    pub gbit: f64,
    /// UDP datagrams received (none for TCP and ping).
    pub packets: Option<u64>,
    /// CPU seconds the whole machine was busy during the run.
    pub busy_cpu_s: f64,
    /// CPU seconds the agents used during the run (none on paths without agents' work).
    pub agent_cpu_s: Option<f64>,
}

/// How a path's measurement went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    Measured,
    /// The weave binary cannot run this path (e.g. the dataplane has not landed).
    Unavailable(String),
    /// Setting it up or measuring failed; the runs done before are kept.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct PathResult {
    pub path: Path,
    pub status: Status,
    pub runs: BTreeMap<Workload, Vec<Run>>,
    /// What the agents' connection reported as its dataplane (overlay paths).
    pub dataplane: Option<String>,
    /// MTU of the containers' `ethwe` on this path.
    pub mtu: Option<u32>,
    /// Largest `VmRSS` of any agent sampled during the runs, KiB.
    pub agent_rss_max_kib: Option<u64>,
    /// Largest `VmHWM` (peak RSS since start) of any agent after the runs, KiB.
    pub agent_hwm_kib: Option<u64>,
}

impl PathResult {
    pub(super) const fn new(path: Path, status: Status) -> Self {
        Self {
            path,
            status,
            runs: BTreeMap::new(),
            dataplane: None,
            mtu: None,
            agent_rss_max_kib: None,
            agent_hwm_kib: None,
        }
    }

    fn runs(&self, w: Workload) -> &[Run] {
        self.runs.get(&w).map_or(&[], Vec::as_slice)
    }

    pub(super) fn spread(&self, w: Workload) -> Option<Spread> {
        Spread::of(&self.runs(w).iter().map(|r| r.value).collect::<Vec<_>>())
    }

    pub(super) fn median(&self, w: Workload) -> Option<f64> {
        self.spread(w).map(|s| s.median)
    }

    pub(super) fn median_loss(&self, w: Workload) -> Option<f64> {
        let losses: Vec<f64> = self.runs(w).iter().filter_map(|r| r.loss_percent).collect();
        stats::median(&losses)
    }

    /// Machine-wide CPU seconds per Gbit received, over all runs of `w`.
    pub(super) fn cpu_s_per_gbit(&self, w: Workload) -> Option<f64> {
        per_gbit(self.runs(w), |r| Some(r.busy_cpu_s))
    }

    /// The agents' CPU seconds per Gbit received, over all runs of `w`.
    pub(super) fn agent_cpu_s_per_gbit(&self, w: Workload) -> Option<f64> {
        per_gbit(self.runs(w), |r| r.agent_cpu_s)
    }

    /// Machine-wide CPU seconds per million packets received, over all
    /// runs of `w` (UDP workloads).
    pub(super) fn cpu_s_per_mpkt(&self, w: Workload) -> Option<f64> {
        per_mpkt(self.runs(w), |r| Some(r.busy_cpu_s))
    }

    /// The agents' CPU seconds per million packets received, over all runs
    /// of `w` (UDP workloads).
    pub(super) fn agent_cpu_s_per_mpkt(&self, w: Workload) -> Option<f64> {
        per_mpkt(self.runs(w), |r| r.agent_cpu_s)
    }

    /// Why there are no figures, if there are none to show.
    pub(super) fn missing_reason(&self) -> Option<String> {
        match &self.status {
            Status::Unavailable(why) => Some(format!("not available: {why}")),
            Status::Failed(why) if self.runs.is_empty() => Some(format!("failed: {why}")),
            _ => None,
        }
    }
}

fn per_gbit(runs: &[Run], cpu: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let gbit: f64 = runs.iter().map(|r| r.gbit).sum();
    let cpu: f64 = runs.iter().map(cpu).sum::<Option<f64>>()?;
    (gbit > 0.0).then(|| cpu / gbit)
}

fn per_mpkt(runs: &[Run], cpu: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let packets: u64 = runs.iter().map(|r| r.packets).sum::<Option<u64>>()?;
    let cpu: f64 = runs.iter().map(cpu).sum::<Option<f64>>()?;
    (packets > 0).then(|| cpu / (packets as f64 / 1e6))
}

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone)]
pub(super) struct BenchResult {
    pub machine: Machine,
    pub seconds: u32,
    pub repeat: u32,
    pub paths: Vec<PathResult>,
}

impl BenchResult {
    pub(super) fn get(&self, path: Path) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.path == path)
    }

    /// The median of `path` over the median of `base` for `w` (for ping: RTT
    /// over RTT, so below 1 is better there).
    pub(super) fn ratio(&self, path: Path, base: Path, w: Workload) -> Option<f64> {
        let a = self.get(path)?.median(w)?;
        let b = self.get(base)?.median(w)?;
        (b > 0.0).then(|| a / b)
    }

    /// The machine's CPU seconds per Gbit on `path` over those on `base` for `w`.
    pub(super) fn cpu_ratio(&self, path: Path, base: Path, w: Workload) -> Option<f64> {
        let a = self.get(path)?.cpu_s_per_gbit(w)?;
        let b = self.get(base)?.cpu_s_per_gbit(w)?;
        (b > 0.0).then(|| a / b)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn run(value: f64, gbit: f64, busy: f64, agent: Option<f64>) -> Run {
        Run {
            value,
            loss_percent: None,
            gbit,
            packets: None,
            busy_cpu_s: busy,
            agent_cpu_s: agent,
        }
    }

    /// A run of three paths: native, kernel VXLAN, plain measured; xdp not available.
    pub(crate) fn sample() -> BenchResult {
        let machine = Machine {
            date: "2026-11-26T05:00:00Z".into(),
            kernel: "6.18.44".into(),
            cpu_model: "Test CPU <2 GHz>".into(),
            cpus: 2,
            memory_gib: 7.8,
            load_at_start: 0.5,
            commit: "abcdef123456".into(),
            profile: "release",
            iperf3: "iperf 3.12".into(),
        };
        let path = |path: Path, tcp1: [f64; 3], udp: f64, mpps: f64, rtt: f64| {
            let mut p = PathResult::new(path, Status::Measured);
            p.runs.insert(
                Workload::Tcp1,
                tcp1.iter()
                    .map(|&v| run(v, v * 5.0, 10.0, Some(1.0)))
                    .collect(),
            );
            p.runs.insert(
                Workload::Tcp4,
                vec![run(tcp1[0] * 2.0, tcp1[0] * 10.0, 10.0, Some(1.0))],
            );
            p.runs.insert(
                Workload::Udp1400,
                vec![Run {
                    loss_percent: Some(12.5),
                    ..run(udp, udp * 5.0, 10.0, Some(2.0))
                }],
            );
            // 5 s at `mpps`: 5 M packets per Mpps, 4 s of CPU, the agents' 1 s.
            p.runs.insert(
                Workload::Udp64Rate,
                vec![Run {
                    loss_percent: Some(2.0),
                    packets: Some((mpps * 5e6) as u64),
                    ..run(mpps, mpps * 5.0 * 92.0 * 8.0 / 1e3, 4.0, Some(1.0))
                }],
            );
            p.runs.insert(
                Workload::Ping,
                vec![Run {
                    loss_percent: Some(0.0),
                    ..run(rtt, 0.0, 1.0, None)
                }],
            );
            p.agent_rss_max_kib = Some(10240);
            p.agent_hwm_kib = Some(20480);
            p
        };
        let mut plain = path(Path::Plain, [1.0, 0.5, 1.5], 0.5, 0.2, 0.12);
        plain.dataplane = Some("plain".into());
        plain.mtu = Some(1426);
        BenchResult {
            machine,
            seconds: 5,
            repeat: 3,
            paths: vec![
                path(Path::Native, [18.0, 17.0, 19.0], 5.5, 1.0, 0.02),
                path(Path::Vxlan, [16.0, 15.0, 16.5], 3.4, 0.8, 0.03),
                plain,
                PathResult::new(
                    Path::Xdp,
                    Status::Unavailable("no `xdp` in this weave".into()),
                ),
            ],
        }
    }

    #[test]
    fn ratios_of_medians() {
        let r = sample();
        assert_eq!(
            r.ratio(Path::Vxlan, Path::Plain, Workload::Tcp1),
            Some(16.0)
        );
        assert_eq!(
            r.ratio(Path::Plain, Path::Vxlan, Workload::Udp1400),
            Some(0.5 / 3.4)
        );
        assert_eq!(r.ratio(Path::Xdp, Path::Plain, Workload::Tcp1), None);
        assert_eq!(
            r.ratio(Path::XdpEncrypted, Path::Plain, Workload::Tcp1),
            None
        );
    }

    #[test]
    fn cpu_per_gbit_sums_over_runs() {
        let mut p = PathResult::new(Path::Plain, Status::Measured);
        p.runs.insert(
            Workload::Tcp1,
            vec![
                run(1.0, 10.0, 4.0, Some(2.0)),
                run(3.0, 30.0, 6.0, Some(3.0)),
            ],
        );
        assert_eq!(p.cpu_s_per_gbit(Workload::Tcp1), Some(0.25));
        assert_eq!(p.agent_cpu_s_per_gbit(Workload::Tcp1), Some(0.125));
        assert_eq!(p.median(Workload::Tcp1), Some(2.0));
        assert_eq!(p.cpu_s_per_gbit(Workload::Udp1400), None);
        p.runs
            .get_mut(&Workload::Tcp1)
            .unwrap()
            .push(run(2.0, 1.0, 1.0, None));
        assert_eq!(p.agent_cpu_s_per_gbit(Workload::Tcp1), None);
    }

    #[test]
    fn cpu_per_million_packets_sums_over_runs() {
        let r = sample();
        let plain = r.get(Path::Plain).unwrap();
        // 4 s of the machine and 1 s of the agents for 1 M packets.
        let near = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(near(plain.cpu_s_per_mpkt(Workload::Udp64Rate), 4.0));
        assert!(near(plain.agent_cpu_s_per_mpkt(Workload::Udp64Rate), 1.0));
        assert_eq!(plain.agent_cpu_s_per_mpkt(Workload::Tcp1), None);
        assert_eq!(
            r.ratio(Path::Plain, Path::Vxlan, Workload::Udp64Rate),
            Some(0.2 / 0.8)
        );
    }
}
