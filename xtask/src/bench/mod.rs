//! `cargo xtask bench`: container-to-container throughput, latency and cost
//! on every path between two simulated hosts, against the kernel's own VXLAN.
//!
//! Modules: [`path`] (what is compared), [`workload`] (what is measured),
//! [`setup`] (putting two containers on a path), [`measure`] (iperf3, ping,
//! CPU time, memory), [`iperf`] and [`ping`] (reading their output),
//! [`stats`], [`results`], [`targets`] (issue #5's ratios), [`report`]
//! (Markdown, JSON), [`svg`] (the plot), [`readme`], [`machine`].

mod buffers;
mod iperf;
mod machine;
mod measure;
mod path;
mod ping;
mod readme;
mod report;
mod results;
mod setup;
mod stats;
mod svg;
mod targets;
mod workload;

use std::fs;
use std::io::Write as _;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use weave_tests::{Cluster, TEST_PREFIX};

use crate::build;
use crate::util::{self, header};
use buffers::BufferLimits;
use machine::Machine;
use measure::{CpuTime, IperfServer};
use path::Path;
use results::{BenchResult, PathResult, Run, Status};
use setup::{LaunchRefused, Setup};
use workload::Workload;

/// Where results go by default (relative to the workspace), and where the README's plot points.
const RESULTS_DIR: &str = "bench/results";

/// Measure container-to-container throughput, latency and cost on every path, against kernel VXLAN.
///
/// Creates two simulated hosts (network namespaces wvt<pid>-bench-h1/h2, each with its own
/// dockerd, on a veth LAN with MTU 1500) and, for each path, one container per host (two on h1
/// for the same-host path). Paths: `native` (same host, the bridge only), `vxlan` (Linux's VXLAN
/// device on each host enslaved to weave's bridge; agents launched without peers: the in-kernel
/// reference), `plain` (`weave launch --dataplane plain`), `fastdp` (`--dataplane fastdp`), `xdp`
/// (`--dataplane xdp`), and
/// `plain-encrypted` / `xdp-encrypted` (`--password`). A path this weave binary cannot run is
/// reported as not available, with the reason. On each path, repeated: iperf3 TCP 1 stream, TCP 4
/// streams, UDP with 1400-byte datagrams offered without a rate limit (received rate and loss;
/// 2 MiB socket buffers, `net.core.rmem_max/wmem_max` raised for the run if lower), the
/// small-packet forwarding rate (64-byte UDP from 4 iperf3 clients at once, to 4 servers:
/// packets per second received, and CPU per million packets), 100 pings at 10 ms (median RTT);
/// CPU time of the machine and of the agents per Gbit; the agents' memory under load. Writes
/// results.md, results.json, throughput.svg and packet-rate.svg (and the README's Performance
/// results). Removes everything it created, also on Ctrl-C. Needs root.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Runs of every workload on every path (min/median/max over these).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Only these paths (comma-separated or repeated), in the usual order.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Path>,
    /// Directory for results.md, results.json, throughput.svg and packet-rate.svg [default: bench/results].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Leave README.md alone (it is updated only when writing to bench/results).
    #[arg(long)]
    no_readme: bool,
    /// Measure the debug build instead of the release build (quicker to build, slower).
    #[arg(long)]
    debug: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "cargo xtask bench must run as root: it creates network namespaces, starts dockerd and loads BPF programs"
        );
    }
    let weave = build::run(build::Args {
        release: !args.debug,
    })?;
    for (program, package) in [
        ("iperf3", "iperf3"),
        ("ping", "iputils-ping"),
        ("nsenter", "util-linux"),
    ] {
        if util::find(program).is_none() {
            bail!("`{program}` not found: install Debian's {package} (`cargo xtask setup` does)");
        }
    }
    util::catch_interrupts();
    let launch_help = launch_help(&weave)?;
    let mut paths = if args.only.is_empty() {
        Path::ALL.to_vec()
    } else {
        args.only.clone()
    };
    paths.sort();
    paths.dedup();

    let machine = Machine::describe(!args.debug);
    let limits = BufferLimits::raise()?;
    let result = measure_all(&weave, &args, &paths, &launch_help, machine);
    drop(limits);
    if weave_tests::interrupted() {
        println!();
        header("bench: interrupted; everything it created has been removed");
        std::process::exit(130);
    }
    let result = result?;
    header("bench: everything it created has been removed");

    let default_out = util::workspace_root().join(RESULTS_DIR);
    let out = args.out.clone().unwrap_or_else(|| default_out.clone());
    let readme = (!args.no_readme && same_dir(&out, &default_out))
        .then(|| util::workspace_root().join("README.md"));
    write_outputs(&result, &out, readme.as_deref())?;
    println!();
    print!("{}", report::markdown(&result, ""));

    let failed: Vec<&str> = result
        .paths
        .iter()
        .filter(|p| matches!(p.status, Status::Failed(_)))
        .map(|p| p.path.label())
        .collect();
    let unavailable: Vec<String> = result
        .paths
        .iter()
        .filter_map(|p| match &p.status {
            Status::Unavailable(why) => Some(format!("{}: {why}", p.path.label())),
            _ => None,
        })
        .collect();
    for u in &unavailable {
        println!("==> NOT AVAILABLE, not measured: {u}");
    }
    if !failed.is_empty() {
        bail!(
            "measuring failed on: {} (see above; results written with what was measured)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `weave launch --help`: which dataplanes and options this binary has.
fn launch_help(weave: &FsPath) -> Result<String> {
    let out = Command::new(weave)
        .args(["launch", "--help"])
        .output()
        .with_context(|| format!("running {} launch --help", weave.display()))?;
    if !out.status.success() {
        bail!(
            "{} launch --help failed: {}",
            weave.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn same_dir(a: &FsPath, b: &FsPath) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Counts the measurements and says which one runs.
struct Progress {
    done: usize,
    total: usize,
}

impl Progress {
    fn start(&mut self, what: &str) {
        self.done += 1;
        let width = self.total.to_string().len();
        print!("    [{:>width$}/{}] {what} ... ", self.done, self.total);
        std::io::stdout().flush().ok();
    }
}

fn measure_all(
    weave: &FsPath,
    args: &Args,
    paths: &[Path],
    launch_help: &str,
    machine: Machine,
) -> Result<BenchResult> {
    let available: Vec<Path> = paths
        .iter()
        .copied()
        .filter(|p| p.unsupported_by(launch_help).is_none())
        .collect();
    header(&format!(
        "bench: {} × {} s per workload; paths: {}",
        args.repeat,
        args.seconds,
        paths.iter().map(|p| p.key()).collect::<Vec<_>>().join(", ")
    ));
    for p in paths {
        if let Some(why) = p.unsupported_by(launch_help) {
            println!("==> {}: NOT AVAILABLE: {why}", p.label());
        }
    }
    let mut result = BenchResult {
        machine,
        seconds: args.seconds,
        repeat: args.repeat,
        paths: Vec::new(),
    };
    if available.is_empty() {
        result.paths = paths
            .iter()
            .map(|&p| {
                let why = p.unsupported_by(launch_help).unwrap_or_default();
                PathResult::new(p, Status::Unavailable(why))
            })
            .collect();
        return Ok(result);
    }

    let prefix = format!("{TEST_PREFIX}{}-bench", std::process::id());
    header(&format!(
        "bench: two simulated hosts {prefix}-h1, -h2 on a LAN (veth, MTU 1500), each with its own dockerd"
    ));
    let cluster = Cluster::create(&prefix, 2, weave.to_path_buf(), |host, step| {
        println!("    [{host}] {step}")
    })?;
    let mut progress = Progress {
        done: 0,
        total: available.len() * args.repeat as usize * Workload::ALL.len(),
    };
    for &path in paths {
        if let Some(why) = path.unsupported_by(launch_help) {
            result
                .paths
                .push(PathResult::new(path, Status::Unavailable(why)));
            continue;
        }
        header(&format!("bench: {} ({})", path.label(), path.key()));
        let mut r = PathResult::new(path, Status::Measured);
        let before = progress.done;
        if let Err(e) = measure_path(&cluster, path, args, &mut r, &mut progress) {
            weave_tests::poll::check_interrupted()?;
            println!();
            let refused = e.downcast_ref::<LaunchRefused>().map(|r| r.0.clone());
            match refused {
                Some(why) if path.dataplane() != "plain" || path.encrypted() => {
                    println!("==> {}: NOT AVAILABLE: {why}", path.label());
                    r.status = Status::Unavailable(why);
                }
                _ => {
                    eprintln!("==> {}: FAILED: {e:#}", path.label());
                    r.status = Status::Failed(format!("{e:#}"));
                }
            }
            // The measurements this path will not make.
            progress.done = before + args.repeat as usize * Workload::ALL.len();
        }
        result.paths.push(r);
    }
    Ok(result)
}

fn measure_path(
    cluster: &Cluster,
    path: Path,
    args: &Args,
    r: &mut PathResult,
    progress: &mut Progress,
) -> Result<()> {
    let setup = Setup::create(cluster, path, &|step| println!("    {step}"))?;
    r.dataplane.clone_from(&setup.dataplane);
    r.mtu = setup.mtu;
    let senders = Workload::ALL.map(Workload::senders).into_iter().max();
    let _servers = (0..senders.unwrap_or(1))
        .map(|n| IperfServer::start(setup.host(&setup.server), setup.server.pid, n))
        .collect::<Result<Vec<_>>>()?;
    for rep in 1..=args.repeat {
        for w in Workload::ALL {
            weave_tests::poll::check_interrupted()?;
            progress.start(&format!(
                "{}: {}, run {rep}/{}",
                path.label(),
                w.label(),
                args.repeat
            ));
            let before = CpuTime::now(&setup.agents)?;
            let (run, rss) =
                measure::with_rss_samples(&setup.agents, || measure_once(&setup, w, args.seconds));
            let used = CpuTime::now(&setup.agents)?.since(before);
            setup.check_agents()?;
            let mut run = run?;
            run.busy_cpu_s = used.busy_s;
            run.agent_cpu_s = used.agents_s;
            if let Some(rss) = rss {
                r.agent_rss_max_kib = Some(r.agent_rss_max_kib.map_or(rss, |m| m.max(rss)));
            }
            let loss = run
                .loss_percent
                .map(|l| format!(", {l:.1}% lost"))
                .unwrap_or_default();
            println!(
                "{:.3} {}{loss}; CPU {:.1} s (agents {})",
                run.value,
                w.unit(),
                run.busy_cpu_s,
                run.agent_cpu_s
                    .map_or_else(|| "?".into(), |a| format!("{a:.1} s"))
            );
            r.runs.entry(w).or_default().push(run);
        }
    }
    r.agent_hwm_kib = setup
        .agents
        .iter()
        .filter_map(|&pid| measure::status_kib(pid, "VmHWM"))
        .max();
    Ok(())
}

/// One run of `w` from the client container to the server's address; CPU
/// figures are filled in by the caller.
fn measure_once(setup: &Setup<'_>, w: Workload, seconds: u32) -> Result<Run> {
    let (client, server) = (setup.client.pid, setup.server.addr);
    if w == Workload::Ping {
        let p = measure::ping(client, server)?;
        return Ok(Run {
            value: p.median_ms().context("no RTT")?,
            loss_percent: Some(p.lost_percent()),
            gbit: 0.0,
            packets: None,
            busy_cpu_s: 0.0,
            agent_cpu_s: None,
        });
    }
    let i = measure::iperf(client, server, w, seconds)?;
    let value = if w == Workload::Udp64Rate {
        i.received_pps
            .context("no packet count in iperf3's report")?
            / 1e6
    } else {
        i.received_bps / 1e9
    };
    Ok(Run {
        value,
        loss_percent: i.lost_percent,
        gbit: i.received_gbit(),
        packets: i.received_packets,
        busy_cpu_s: 0.0,
        agent_cpu_s: None,
    })
}

fn write_outputs(result: &BenchResult, out: &FsPath, readme: Option<&FsPath>) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str| {
        let file = out.join(name);
        fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        println!("    wrote {}", file.display());
        Ok::<_, anyhow::Error>(())
    };
    write(
        "results.md",
        &format!("# cargo xtask bench\n\n{}", report::markdown(result, "")),
    )?;
    write(
        "results.json",
        &format!("{}\n", serde_json::to_string_pretty(&report::json(result))?),
    )?;
    write(svg::THROUGHPUT_FILE, &svg::throughput_plot(result))?;
    write(svg::PACKET_RATE_FILE, &svg::packet_rate_plot(result))?;
    if let Some(readme) = readme {
        let text =
            fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
        let block = report::markdown(result, &format!("{RESULTS_DIR}/"));
        fs::write(readme, readme::replace_block(&text, &block)?)
            .with_context(|| format!("writing {}", readme.display()))?;
        println!(
            "    updated the Performance results in {}",
            readme.display()
        );
    }
    Ok(())
}
