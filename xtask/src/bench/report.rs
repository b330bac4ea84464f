//! The bench's results as Markdown tables and as JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::path::Path;
use super::results::{BenchResult, PathResult, Status};
use super::stats::Spread;
use super::svg;
use super::targets::{self, Bound};
use super::workload::{UDP_PAYLOAD, Workload};

/// IPv4 and UDP headers in front of a UDP payload.
const UDP_IP_HEADERS: u32 = 28;

const DASH: &str = "—";

/// The Markdown report; `plots` is where the SVGs are relative to where the
/// text goes (empty, or a directory with a trailing slash).
pub(super) fn markdown(result: &BenchResult, plots: &str) -> String {
    let mut md = String::new();
    let m = &result.machine;
    let _ = writeln!(
        md,
        "Measured {} on {} × {} ({:.1} GiB, Linux {}), load average {:.2} at the start; \
         weave {} ({} build), {}. Each workload {} × {} s per path; figures are medians \
         with [min–max].\n",
        m.date,
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.load_at_start,
        m.commit,
        m.profile,
        m.iperf3,
        result.repeat,
        result.seconds,
    );
    if m.busy() {
        let _ = writeln!(
            md,
            "**The machine was busy (load average {:.2} on {} CPUs) and the runs were {}: \
             treat these figures as rough; compare paths only within this run.**\n",
            m.load_at_start,
            m.cpus,
            if result.repeat * result.seconds < 15 {
                "short"
            } else {
                "as configured"
            }
        );
    }

    md.push_str("| path | TCP 1 stream, Gbit/s | TCP 4 streams, Gbit/s | UDP 1400 B, Gbit/s received (loss) | UDP 64 B × 4 senders, Mpps received (loss) | ping RTT, ms |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    for p in &result.paths {
        let mut row = vec![label(p)];
        if let Some(why) = p.missing_reason() {
            row.push(why);
            row.extend([DASH, DASH, DASH, DASH].map(String::from));
        } else {
            for w in Workload::ALL {
                let mut cell = spread_cell(p.spread(w), w);
                if matches!(w, Workload::Udp1400 | Workload::Udp64Rate)
                    && let Some(loss) = p.median_loss(w)
                {
                    let _ = write!(cell, " ({loss:.1}% lost)");
                }
                row.push(cell);
            }
        }
        push_row(&mut md, &row);
    }

    md.push_str(
        "\nRatios of medians to kernel VXLAN and to weave plain (for RTT, lower is better):\n\n",
    );
    md.push_str("| path | TCP 1 ÷ VXLAN | TCP 1 ÷ plain | TCP 4 ÷ VXLAN | TCP 4 ÷ plain | UDP ÷ VXLAN | UDP ÷ plain | 64 B pps ÷ VXLAN | 64 B pps ÷ plain | RTT ÷ VXLAN | RTT ÷ plain |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in result.paths.iter().filter(|p| p.missing_reason().is_none()) {
        let mut row = vec![label(p)];
        for w in Workload::ALL {
            for base in [Path::Vxlan, Path::Plain] {
                row.push(ratio_cell(result.ratio(p.path, base, w)));
            }
        }
        push_row(&mut md, &row);
    }

    md.push_str(
        "\nCost: CPU seconds per Gbit received, of the whole machine (senders, receivers, \
         softirqs, agents, and whatever else runs: meaningful on a quiet machine only) and of \
         the agents alone; for 64-byte packets, CPU seconds per million packets received; and \
         the agents' memory under load:\n\n",
    );
    md.push_str("| path | CPU s/Gbit TCP 1 | TCP 4 | UDP | agents' CPU s/Gbit TCP 1 | TCP 4 | UDP | CPU s/M packets 64 B | agents' CPU s/M packets 64 B | agent RSS under load, MiB (max VmRSS / VmHWM) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for p in result.paths.iter().filter(|p| p.missing_reason().is_none()) {
        let mut row = vec![label(p)];
        for w in Workload::THROUGHPUT {
            row.push(num_cell(p.cpu_s_per_gbit(w), 3));
        }
        for w in Workload::THROUGHPUT {
            row.push(num_cell(p.agent_cpu_s_per_gbit(w), 3));
        }
        for w in Workload::PACKET_RATE {
            row.push(num_cell(p.cpu_s_per_mpkt(w), 3));
            row.push(num_cell(p.agent_cpu_s_per_mpkt(w), 3));
        }
        row.push(format!(
            "{} / {}",
            mib_cell(p.agent_rss_max_kib),
            mib_cell(p.agent_hwm_kib)
        ));
        push_row(&mut md, &row);
    }

    md.push_str("\nTargets of the accelerated (xdp, issues #5 and #13) and in-kernel (fastdp, issue #12) paths, judged on this run:\n\n");
    md.push_str("| target | measured | verdict |\n|---|---|---|\n");
    for v in targets::judge(result) {
        push_row(
            &mut md,
            &[
                v.target.text.to_string(),
                ratio_cell(v.ratio),
                v.text.clone(),
            ],
        );
    }

    let problems: Vec<String> = result
        .paths
        .iter()
        .filter_map(|p| match &p.status {
            Status::Measured => None,
            Status::Unavailable(why) => Some(format!("- {}: not available: {why}", p.path.label())),
            Status::Failed(why) => Some(format!(
                "- {}: **failed**: {}",
                p.path.label(),
                why.lines().next().unwrap_or(why)
            )),
        })
        .collect();
    let fragmented: Vec<String> = result
        .paths
        .iter()
        .filter_map(|p| {
            let mtu = p.mtu?;
            (UDP_PAYLOAD + UDP_IP_HEADERS > mtu).then(|| {
                format!(
                    "- {}: the containers' MTU is {mtu}, so each {UDP_PAYLOAD}-byte UDP datagram \
                     ({} bytes of IP) leaves as two IP fragments.",
                    p.path.label(),
                    UDP_PAYLOAD + UDP_IP_HEADERS
                )
            })
        })
        .collect();
    if !fragmented.is_empty() {
        md.push('\n');
        md.push_str(&fragmented.join("\n"));
        md.push('\n');
    }
    if !problems.is_empty() {
        md.push_str("\nPaths not (fully) measured:\n\n");
        md.push_str(&problems.join("\n"));
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\n![Throughput per path]({plots}{})\n\n![Packet rate per path]({plots}{})",
        svg::THROUGHPUT_FILE,
        svg::PACKET_RATE_FILE
    );
    md
}

fn label(p: &PathResult) -> String {
    match &p.dataplane {
        Some(dp) if p.path.uses_overlay() && dp != p.path.dataplane() => {
            format!("{} (`{dp}`)", p.path.label())
        }
        _ => p.path.label().to_string(),
    }
}

fn push_row(md: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

const fn decimals(w: Workload) -> usize {
    match w {
        Workload::Ping | Workload::Udp64Rate => 3,
        _ => 2,
    }
}

fn spread_cell(s: Option<Spread>, w: Workload) -> String {
    let d = decimals(w);
    match s {
        Some(s) => format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max),
        None => DASH.into(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| DASH.into(), |r| format!("{r:.2}×"))
}

fn num_cell(v: Option<f64>, d: usize) -> String {
    v.map_or_else(|| DASH.into(), |v| format!("{v:.d$}"))
}

fn mib_cell(kib: Option<u64>) -> String {
    kib.map_or_else(|| DASH.into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Everything measured, for other tools: every run, the summaries, ratios, targets.
pub(super) fn json(result: &BenchResult) -> Value {
    let m = &result.machine;
    let paths: Vec<Value> = result
        .paths
        .iter()
        .map(|p| {
            let (status, reason) = match &p.status {
                Status::Measured => ("measured", None),
                Status::Unavailable(why) => ("not available", Some(why.clone())),
                Status::Failed(why) => ("failed", Some(why.clone())),
            };
            let workloads: serde_json::Map<String, Value> = p
                .runs
                .iter()
                .map(|(&w, runs)| {
                    let s = p.spread(w);
                    (
                        w.key().to_string(),
                        json!({
                            "unit": w.unit(),
                            "min": s.map(|s| s.min),
                            "median": s.map(|s| s.median),
                            "max": s.map(|s| s.max),
                            "loss_percent_median": p.median_loss(w),
                            "cpu_s_per_gbit": p.cpu_s_per_gbit(w),
                            "agent_cpu_s_per_gbit": p.agent_cpu_s_per_gbit(w),
                            "cpu_s_per_million_packets": p.cpu_s_per_mpkt(w),
                            "agent_cpu_s_per_million_packets": p.agent_cpu_s_per_mpkt(w),
                            "ratio_to_vxlan": result.ratio(p.path, Path::Vxlan, w),
                            "ratio_to_plain": result.ratio(p.path, Path::Plain, w),
                            "runs": runs.iter().map(|r| json!({
                                "value": r.value,
                                "loss_percent": r.loss_percent,
                                "gbit": r.gbit,
                                "packets": r.packets,
                                "busy_cpu_s": r.busy_cpu_s,
                                "agent_cpu_s": r.agent_cpu_s,
                            })).collect::<Vec<_>>(),
                        }),
                    )
                })
                .collect();
            json!({
                "path": p.path.key(),
                "label": p.path.label(),
                "status": status,
                "reason": reason,
                "dataplane": p.dataplane,
                "container_mtu": p.mtu,
                "agent_rss_max_kib": p.agent_rss_max_kib,
                "agent_vmhwm_kib": p.agent_hwm_kib,
                "workloads": workloads,
            })
        })
        .collect();
    let targets: Vec<Value> = targets::judge(result)
        .into_iter()
        .map(|v| {
            let (kind, bound) = match v.target.bound {
                Bound::AtLeast(b) => ("at least", b),
                Bound::AtMost(b) => ("at most", b),
            };
            json!({
                "target": v.target.text,
                "path": v.target.path.key(),
                "base": v.target.base.key(),
                "workload": v.target.workload.key(),
                "bound": { kind: bound },
                "ratio": v.ratio,
                "met": v.met,
                "verdict": v.text,
            })
        })
        .collect();
    json!({
        "machine": {
            "date": m.date,
            "kernel": m.kernel,
            "cpu_model": m.cpu_model,
            "cpus": m.cpus,
            "memory_gib": m.memory_gib,
            "load_at_start": m.load_at_start,
            "commit": m.commit,
            "profile": m.profile,
            "iperf3": m.iperf3,
        },
        "settings": { "seconds": result.seconds, "repeat": result.repeat },
        "paths": paths,
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::tests::sample;

    #[test]
    fn table_shows_every_path_with_spread_ratios_and_cost() {
        let md = markdown(&sample(), "");
        assert!(!md.contains("busy"), "{md}");
        assert!(
            md.contains("Measured 2026-11-26T05:00:00Z on 2 × Test CPU <2 GHz>"),
            "{md}"
        );
        assert!(md.contains("| same host (bridge) | 18.00 [17.00–19.00] | 36.00 [36.00–36.00] | 5.50 [5.50–5.50] (12.5% lost) | 1.000 [1.000–1.000] (2.0% lost) | 0.020 [0.020–0.020] |"), "{md}");
        assert!(
            md.contains("| weave xdp | not available: no `xdp` in this weave | — | — | — | — |"),
            "{md}"
        );
        // weave plain: TCP 1 is 1/16 of VXLAN and 1× itself; 64-byte
        // packets a quarter of VXLAN's rate; RTT 4× VXLAN's.
        assert!(
            md.contains(
                "| weave plain | 0.06× | 1.00× | 0.06× | 1.00× | 0.15× | 1.00× | 0.25× | 1.00× | 4.00× | 1.00× |"
            ),
            "{md}"
        );
        // CPU s/Gbit: 30 s over 15 Gbit for TCP 1 on plain (10 s over 10 for 4 streams); agents 3 s over 15 Gbit.
        // 64-byte packets: 4 s of the machine and 1 s of the agents for 1 M packets.
        assert!(
            md.contains(
                "| weave plain | 2.000 | 1.000 | 4.000 | 0.200 | 0.100 | 0.800 | 4.000 | 1.000 | 10.0 / 20.0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| accelerated ≥ 3× plain, 64-byte packet rate (4 senders) | — | not measured (weave xdp not available) |"), "{md}");
        assert!(md.contains("| accelerated ≥ 3× plain, TCP 1 stream | — | not measured (weave xdp not available) |"), "{md}");
        assert!(
            md.contains("- weave xdp: not available: no `xdp` in this weave"),
            "{md}"
        );
        assert!(
            md.ends_with(
                "![Throughput per path](throughput.svg)\n\n![Packet rate per path](packet-rate.svg)\n"
            ),
            "{md}"
        );
        let readme = markdown(&sample(), "bench/results/");
        assert!(
            readme.contains("![Packet rate per path](bench/results/packet-rate.svg)"),
            "{readme}"
        );
    }

    #[test]
    fn a_busy_machine_is_called_out() {
        let mut r = sample();
        r.machine.load_at_start = 3.5;
        let md = markdown(&r, "");
        assert!(
            md.contains("**The machine was busy (load average 3.50 on 2 CPUs) and the runs were as configured: treat these figures as rough;"),
            "{md}"
        );
    }

    #[test]
    fn json_has_runs_summaries_and_targets() {
        let j = json(&sample());
        assert_eq!(j["settings"]["repeat"], 3);
        assert_eq!(j["paths"][2]["path"], "plain");
        assert_eq!(j["paths"][2]["workloads"]["tcp_1_stream"]["median"], 1.0);
        assert_eq!(
            j["paths"][2]["workloads"]["tcp_1_stream"]["runs"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            j["paths"][2]["workloads"]["udp_1400"]["loss_percent_median"],
            12.5
        );
        assert_eq!(
            j["paths"][1]["workloads"]["tcp_1_stream"]["ratio_to_plain"],
            16.0
        );
        assert_eq!(j["paths"][3]["status"], "not available");
        assert_eq!(
            j["targets"].as_array().unwrap().len(),
            targets::TARGETS.len()
        );
        assert_eq!(j["targets"][0]["met"], Value::Null);
        let rate = &j["paths"][2]["workloads"]["udp_64_packet_rate"];
        assert_eq!(rate["unit"], "Mpps");
        assert_eq!(rate["agent_cpu_s_per_million_packets"], 1.0);
        assert_eq!(rate["runs"][0]["packets"], 1_000_000);
        assert_eq!(
            j["paths"][2]["workloads"]["tcp_1_stream"]["runs"][0]["packets"],
            Value::Null
        );
    }
}
