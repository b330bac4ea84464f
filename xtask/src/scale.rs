//! `cargo xtask scale`: many agents on one simulated LAN, measured: time
//! to a full mesh, control traffic and resources at rest, IPAM's first
//! allocation, and healing after churn. Figures, not assertions: it fails
//! only when a phase does not finish in time or an address is handed out
//! twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use weave_tests::{Cluster, Host, LAN_IFNAME};

use crate::build;
use crate::util::{self, header};

/// Prefix of the run's namespaces and directories: `wvscale-lan`, `wvscale-h1`...
const PREFIX: &str = "wvscale";
/// Agents launched at once.
const PARALLEL: usize = 8;
/// Agents asked for their status at once. The times come from the agents
/// (when each connection was established), not from when an answer came,
/// so a slow round does not blur them; a fast one would take CPU from the
/// agents measured (a status holds the whole topology: at a hundred peers,
/// 25 at once took a tenth of this machine while the mesh healed).
const POLL_PARALLEL: usize = 4;
/// How many of the agents not yet fully connected a progress line names.
const SHOW_BEHIND: usize = 6;
/// The kernel's neighbour table limits (`gc_thresh1..3`) for the run: all
/// simulated hosts share the one table, whose default (1,024 entries at
/// most) overflows at about 30 fully meshed hosts.
const NEIGH_THRESH: [(&str, &str); 3] = [
    ("gc_thresh1", "16384"),
    ("gc_thresh2", "32768"),
    ("gc_thresh3", "65536"),
];

/// Measure many agents on one simulated LAN: full mesh, control traffic, memory, CPU, IPAM, churn.
///
/// Builds PEERS simulated hosts on one LAN (namespaces wvscale-h1.. on wvscale-lan; a dockerd
/// only on the last --docker-hosts of them), launches an agent on each (a chain: each names
/// the previous one; or a star: each names h1), and measures: the time from the last launch to
/// a full mesh (every agent with PEERS - 1 established connections, timed by the last one the
/// agents say they established); at rest, for
/// --rest-seconds, the control traffic each agent sends per remote peer, its resident memory
/// and CPU; the time `weave run` on the last host takes to get the first automatic address;
/// then churn: --churn-percent of the agents killed (SIGKILL) and launched again all at once,
/// the time from their relaunch until the mesh is full again, and no address in use twice. Prints a table, writes JSON
/// (bench/scale/latest.json unless --out). Not part of `cargo xtask test`; it does not assert
/// the targets, it reports them. Everything is removed at the end, also on failure or
/// Ctrl-C. Needs root.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Number of agents.
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// How the agents are launched: `chain` (each names the previous one) or `star` (each names h1).
    #[arg(long, value_enum, default_value_t = Shape::Chain)]
    shape: Shape,
    /// Hosts with a dockerd (the last ones), for the IPAM measurements.
    #[arg(long, default_value_t = 2)]
    docker_hosts: usize,
    /// Agents killed and launched again in the churn phase, in percent.
    #[arg(long, default_value_t = 10)]
    churn_percent: usize,
    /// How long the mesh is watched at rest.
    #[arg(long, default_value_t = 20)]
    rest_seconds: u64,
    /// Longest wait for each phase.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// The data plane of every agent.
    #[arg(long, default_value = "plain")]
    dataplane: String,
    /// Where the JSON goes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
    /// Run this `weave` binary instead of building one (e.g. another
    /// commit's, to compare two in the same hour on this machine).
    #[arg(long, value_name = "PATH")]
    weave: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shape {
    Chain,
    Star,
}

pub(crate) fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "cargo xtask scale must run as root: it creates network namespaces and loads BPF programs"
        );
    }
    ensure!(
        (2..=250).contains(&args.peers),
        "--peers: 2 to 250 (one LAN /24), not {}",
        args.peers
    );
    ensure!(
        (1..=args.peers).contains(&args.docker_hosts),
        "--docker-hosts: 1 to --peers"
    );
    let weave = match &args.weave {
        Some(path) => {
            ensure!(path.is_file(), "--weave: no file {}", path.display());
            fs::canonicalize(path).with_context(|| format!("--weave {}", path.display()))?
        }
        None => build::run(build::Args {
            release: args.release,
        })?,
    };
    util::catch_interrupts();
    let neigh = NeighbourLimits::raise()?;
    let result = measure(&weave, &args);
    drop(neigh);
    if weave_tests::interrupted() {
        header("scale: interrupted; everything it created has been removed");
        std::process::exit(130);
    }
    let figures = result?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| util::workspace_root().join("bench/scale/latest.json"));
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&out, serde_json::to_string_pretty(&figures.json(&args))?)
        .with_context(|| format!("writing {}", out.display()))?;
    header("scale: done; everything it created has been removed");
    println!("{}", figures.table(&args));
    println!("JSON: {}", out.display());
    Ok(())
}

/// What one run measured.
#[derive(Default)]
struct Figures {
    launch: Duration,
    full_mesh: Duration,
    /// Per agent: bytes its LAN interface sent per second at rest, per remote peer.
    bytes_per_peer: Vec<f64>,
    rss_kib: Vec<u64>,
    /// Per agent: share of one CPU at rest, in percent.
    cpu_percent: Vec<f64>,
    /// Per agent: its threads' context switches per second at rest (each
    /// one a sleep and a wake-up: what idle agents cost a shared machine).
    wakeups_per_s: Vec<f64>,
    /// The same by thread name, averaged over the agents (where they go).
    wakeups_by_thread: BTreeMap<String, f64>,
    first_allocation: Duration,
    churned: usize,
    healed: Duration,
}

fn measure(weave: &Path, args: &Args) -> Result<Figures> {
    let n = args.peers;
    let timeout = Duration::from_secs(args.timeout_seconds);
    header(&format!(
        "scale: {n} agents ({:?}), dockerd on the last {}",
        args.shape, args.docker_hosts
    ));
    let quiet = |_: &str, _: &str| {};
    let first_docker = n - args.docker_hosts + 1;
    let built = Instant::now();
    let cluster =
        Cluster::create_with(PREFIX, n, weave.to_path_buf(), |i| i >= first_docker, quiet)?;
    println!(
        "{n} simulated hosts in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let hosts = cluster.hosts();
    let mut figures = Figures::default();

    // Launch: h1 alone, then the others, PARALLEL at a time.
    let target = |i: usize| match args.shape {
        Shape::Chain => hosts[i - 1].lan_addr(),
        Shape::Star => hosts[0].lan_addr(),
    };
    let started = Instant::now();
    let dataplane = args.dataplane.as_str();
    launch(&hosts[0], dataplane, None)?;
    let rest: Vec<usize> = (1..n).collect();
    for_each_parallel(&rest, |&i| launch(&hosts[i], dataplane, Some(&target(i))))?;
    figures.launch = started.elapsed();
    println!("launched in {:.1} s", figures.launch.as_secs_f64());

    figures.full_mesh = wait_full_mesh(hosts, timeout, "full mesh")?;

    // At rest.
    let before = rest_sample(hosts)?;
    let window = Duration::from_secs(args.rest_seconds);
    println!("at rest for {} s...", window.as_secs());
    std::thread::sleep(window); // a measurement window, not a synchronisation
    let after = rest_sample(hosts)?;
    let secs = window.as_secs_f64();
    let n_agents = hosts.len() as f64;
    let ticks = clock_ticks() as f64;
    for (b, a) in before.iter().zip(&after) {
        figures
            .bytes_per_peer
            .push((a.tx_bytes - b.tx_bytes) as f64 / secs / (n - 1) as f64);
        figures
            .cpu_percent
            .push((a.cpu_ticks - b.cpu_ticks) as f64 / ticks / secs * 100.0);
        figures
            .wakeups_per_s
            .push(total(&a.switches).saturating_sub(total(&b.switches)) as f64 / secs);
        for (thread, n) in &a.switches {
            let was = b.switches.get(thread).copied().unwrap_or(0);
            *figures.wakeups_by_thread.entry(thread.clone()).or_default() +=
                n.saturating_sub(was) as f64 / secs / n_agents;
        }
        figures.rss_kib.push(a.rss_kib);
    }
    let mut largest: Vec<(u64, &str)> = after
        .iter()
        .zip(hosts)
        .map(|(a, h)| (a.rss_kib, h.nickname()))
        .collect();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let largest: Vec<String> = largest
        .iter()
        .take(3)
        .map(|(kib, name)| format!("{name} {:.1} MiB", *kib as f64 / 1024.0))
        .collect();
    println!("largest agents at rest: {}", largest.join(", "));

    // IPAM: the first automatic address, on the last host.
    let last = &hosts[n - 1];
    let asked = Instant::now();
    last.try_weave(&[
        "run",
        "--name",
        "first",
        weave_tests::IMAGE,
        "sleep",
        "3600",
    ])
    .context("the first allocation on the last host")?;
    figures.first_allocation = asked.elapsed();
    println!(
        "first allocation on the last host: {:.2} s",
        figures.first_allocation.as_secs_f64()
    );

    // Churn: every k-th agent (never h1 nor a docker host) killed, launched again.
    let count = (n * args.churn_percent / 100).max(1).min(first_docker - 2);
    let victims: Vec<usize> = (0..count)
        .map(|k| 1 + k * (first_docker - 2) / count)
        .collect();
    for &i in &victims {
        hosts[i].kill_agent();
    }
    // All at once, as hosts restarted together would be: the figure is the
    // mesh's healing, not this process's pace of launching.
    let relaunched = Instant::now();
    map_parallel(&victims, victims.len(), |&i| {
        launch(&hosts[i], dataplane, Some(&target(i)))
    })?
    .into_iter()
    .collect::<Result<()>>()?;
    let launched = relaunched.elapsed();
    println!("relaunched in {:.1} s", launched.as_secs_f64());
    figures.healed = launched + wait_full_mesh(hosts, timeout, "healed after churn")?;
    figures.churned = victims.len();
    for h in hosts.iter().filter(|h| h.has_docker()) {
        h.try_weave(&[
            "run",
            "--name",
            "after-churn",
            weave_tests::IMAGE,
            "sleep",
            "3600",
        ])
        .with_context(|| format!("an allocation on {} after churn", h.nickname()))?;
    }
    weave_tests::no_address_twice(&hosts.iter().filter(|h| h.has_docker()).collect::<Vec<_>>())?;
    Ok(figures)
}

fn launch(h: &Host, dataplane: &str, peer: Option<&str>) -> Result<()> {
    let mut args = vec!["launch", "--dataplane", dataplane];
    args.extend(peer);
    h.try_weave(&args)
        .map(drop)
        .with_context(|| format!("launching {}", h.nickname()))
}

/// Runs `f` on every item, [`PARALLEL`] at a time; the first error wins.
fn for_each_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    map_parallel(items, PARALLEL, f)?.into_iter().collect()
}

/// `f` of every item, in order, `at_once` at a time.
fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    at_once: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Result<Vec<R>> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(at_once) {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunk.iter().map(|item| scope.spawn(|| f(item))).collect();
            for t in running {
                out.push(t.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?);
            }
            anyhow::Ok(())
        })?;
        if weave_tests::interrupted() {
            bail!("interrupted");
        }
    }
    Ok(out)
}

/// Waits until every agent has an established connection to every other,
/// printing progress every few seconds; returns how long it took.
///
/// A round asks only the agents not yet seen fully connected: a status costs
/// its agent and this process work in proportion to the mesh, and a hundred
/// of them a round took most of the machine the agents are measured on.
/// Once every agent has been seen fully connected, one round asks them all
/// again; an agent that lost a connection meanwhile is asked again until it
/// is full. The time is when the last connection of the mesh was
/// established, by the agents' own account (`established_unix_ms`): during
/// a connection storm a round of statuses takes many seconds, and an agent
/// seen behind early in a round is asked again only in the next. Agents
/// that do not say (older builds) are timed by their answer instead.
fn wait_full_mesh(hosts: &[Host], timeout: Duration, what: &str) -> Result<Duration> {
    let want = hosts.len() - 1;
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let mut said = Instant::now();
    // Per agent, once seen full: when its answer came, and when its last
    // connection was established (relative to `started`) if it says.
    let mut full_at: Vec<Option<(Duration, Option<Duration>)>> = vec![None; hosts.len()];
    let mut confirming = false;
    loop {
        let asked: Vec<usize> = (0..hosts.len())
            .filter(|&i| confirming || full_at[i].is_none())
            .collect();
        let seen: Vec<(usize, Option<Connected>, Duration)> =
            map_parallel(&asked, POLL_PARALLEL, |&i| {
                (i, connected(&hosts[i]), started.elapsed())
            })?;
        let now = started.elapsed();
        let mut silent = 0;
        let mut behind = Vec::new();
        for (i, connected, answered) in seen {
            let Some(connected) = connected else {
                silent += 1;
                full_at[i] = None;
                continue;
            };
            if connected.established < want {
                behind.push((connected.established, hosts[i].nickname()));
                full_at[i] = None;
                continue;
            }
            let last = connected
                .last_unix_ms
                .map(|ms| Duration::from_millis(ms.saturating_sub(started_unix_ms)));
            full_at[i] = Some(match full_at[i] {
                // Still full: the answer that first showed it stands.
                Some((first, _)) => (first, last),
                None => (answered, last),
            });
        }
        let full = full_at.iter().filter(|at| at.is_some()).count();
        if full == hosts.len() {
            if confirming {
                let answered = full_at.iter().flatten().map(|(a, _)| *a).max();
                let answered = answered.unwrap_or(now);
                let by_agents: Option<Vec<Duration>> =
                    full_at.iter().flatten().map(|(_, last)| *last).collect();
                let took = if let Some(last) = by_agents.and_then(|all| all.into_iter().max()) {
                    println!(
                        "{what}: {:.1} s (the last connection established; the last status showing it full answered at {:.1} s)",
                        last.as_secs_f64(),
                        answered.as_secs_f64()
                    );
                    last
                } else {
                    println!("{what}: {:.1} s", answered.as_secs_f64());
                    answered
                };
                return Ok(took);
            }
            confirming = true;
            continue;
        }
        confirming = false;
        // Agents whose status could not be read count as unconnected; say
        // how many, so that a reading failure is not taken for the mesh's.
        let silent = match silent {
            0 => String::new(),
            n => format!(", {n} not answering `weave status`"),
        };
        // The agents furthest behind, by name: where to look.
        behind.sort_unstable();
        let shown: Vec<String> = behind
            .iter()
            .take(SHOW_BEHIND)
            .map(|(e, name)| format!("{name} {e}/{want}"))
            .collect();
        let behind = match shown.len() {
            0 => String::new(),
            _ => format!("; behind: {}", shown.join(", ")),
        };
        if said.elapsed() >= Duration::from_secs(5) {
            println!(
                "{what}: {full}/{} agents fully connected ({:.0} s){silent}{behind}",
                hosts.len(),
                now.as_secs_f64()
            );
            said = Instant::now();
        }
        if started.elapsed() > timeout {
            bail!(
                "{what}: not within {timeout:?}: {full}/{} agents fully connected{silent}{behind}",
                hosts.len(),
            );
        }
        if weave_tests::interrupted() {
            bail!("interrupted");
        }
    }
}

/// An agent's established connections, as its status shows them.
struct Connected {
    established: usize,
    /// When the newest of them was established (Unix ms), if the agent says.
    last_unix_ms: Option<u64>,
}

/// The agent's established connections (`None` when its status cannot be
/// read), from `weave status connections --json` read untyped: xtask builds
/// without the agent crate.
fn connected(h: &Host) -> Option<Connected> {
    let json = h.try_weave(&["status", "connections", "--json"]).ok()?;
    let section = serde_json::from_str::<serde_json::Value>(&json).ok()?;
    let established: Vec<&serde_json::Value> = section
        .get("connections")?
        .as_array()?
        .iter()
        .filter(|c| c.get("state").and_then(serde_json::Value::as_str) == Some("established"))
        .collect();
    let since: Option<Vec<u64>> = established
        .iter()
        .map(|c| {
            c.get("established_unix_ms")
                .and_then(serde_json::Value::as_u64)
        })
        .collect();
    Some(Connected {
        established: established.len(),
        last_unix_ms: since.and_then(|s| s.into_iter().max()),
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One agent's counters at one moment.
struct Sample {
    tx_bytes: u64,
    cpu_ticks: u64,
    /// Context switches of the agent's threads so far, by thread name.
    switches: BTreeMap<String, u64>,
    rss_kib: u64,
}

fn rest_sample(hosts: &[Host]) -> Result<Vec<Sample>> {
    hosts
        .iter()
        .map(|h| {
            let pid = h.agent_pid();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("/proc/{pid}/stat"))?;
            // Fields after the command's closing parenthesis: utime and stime
            // are the 12th and 13th.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<u64> = after
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let cpu_ticks =
                fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
            Ok(Sample {
                tx_bytes: h.netns().link_stats(LAN_IFNAME)?.tx_bytes,
                cpu_ticks,
                switches: context_switches(pid),
                rss_kib: h.agent_rss_kib(),
            })
        })
        .collect()
}

/// Voluntary and involuntary context switches of every thread of `pid`,
/// summed by thread name (threads that ended are not counted; at rest the
/// agent's threads stay).
fn context_switches(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for status in tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
    {
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        *by_name.entry(name).or_default() += switches;
    }
    by_name
}

fn total(switches: &BTreeMap<String, u64>) -> u64 {
    switches.values().sum()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// (median, max) of `values`.
fn median_max(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (median, v.last().copied().unwrap_or(0.0))
}

impl Figures {
    fn table(&self, args: &Args) -> String {
        let (bytes_med, bytes_max) = median_max(&self.bytes_per_peer);
        let rss: Vec<f64> = self.rss_kib.iter().map(|&k| k as f64 / 1024.0).collect();
        let (rss_med, rss_max) = median_max(&rss);
        let (cpu_med, cpu_max) = median_max(&self.cpu_percent);
        let (wake_med, wake_max) = median_max(&self.wakeups_per_s);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "scale: {} agents, {:?} launch, {} data plane",
            args.peers, args.shape, args.dataplane
        );
        let rows = [
            (
                "launch (all agents)",
                format!("{:.1} s", self.launch.as_secs_f64()),
                "-".to_string(),
            ),
            (
                "full mesh after the last launch",
                format!("{:.1} s", self.full_mesh.as_secs_f64()),
                "< 30 s".into(),
            ),
            (
                "control traffic per remote peer at rest (median / max)",
                format!("{bytes_med:.0} / {bytes_max:.0} B/s"),
                "< 1024 B/s".into(),
            ),
            (
                "agent RSS at rest (median / max)",
                format!("{rss_med:.1} / {rss_max:.1} MiB"),
                "< 30 MiB".into(),
            ),
            (
                "agent CPU at rest (median / max)",
                format!("{cpu_med:.2} / {cpu_max:.2} %"),
                "-".into(),
            ),
            (
                "agent wake-ups at rest (context switches, median / max)",
                format!("{wake_med:.0} / {wake_max:.0} /s"),
                "-".into(),
            ),
            (
                "first automatic address on the last peer",
                format!("{:.2} s", self.first_allocation.as_secs_f64()),
                "< 5 s".into(),
            ),
            (
                &*format!(
                    "{} agents killed and relaunched: full mesh again",
                    self.churned
                ),
                format!("{:.1} s", self.healed.as_secs_f64()),
                "< 15 s".into(),
            ),
        ];
        let _ = writeln!(t, "| measure | figure | target (issue 14) |");
        let _ = writeln!(t, "|---|---|---|");
        for (what, figure, target) in rows {
            let _ = writeln!(t, "| {what} | {figure} | {target} |");
        }
        let mut threads: Vec<(&String, &f64)> = self.wakeups_by_thread.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let threads: Vec<String> = threads
            .iter()
            .map(|(name, n)| format!("{name} {n:.1}"))
            .collect();
        let _ = writeln!(
            t,
            "\nwake-ups at rest by thread (per agent and second): {}",
            threads.join(", ")
        );
        t
    }

    fn json(&self, args: &Args) -> serde_json::Value {
        let (bytes_med, bytes_max) = median_max(&self.bytes_per_peer);
        let (cpu_med, cpu_max) = median_max(&self.cpu_percent);
        let (wake_med, wake_max) = median_max(&self.wakeups_per_s);
        serde_json::json!({
            "peers": args.peers,
            "shape": format!("{:?}", args.shape).to_lowercase(),
            "dataplane": args.dataplane,
            "launch_s": self.launch.as_secs_f64(),
            "full_mesh_s": self.full_mesh.as_secs_f64(),
            "control_bytes_per_s_per_peer": {"median": bytes_med, "max": bytes_max},
            "rss_kib": {"median": median_max(&self.rss_kib.iter().map(|&k| k as f64).collect::<Vec<_>>()).0,
                        "max": self.rss_kib.iter().max().copied().unwrap_or(0)},
            "cpu_percent": {"median": cpu_med, "max": cpu_max},
            "wakeups_per_s": {"median": wake_med, "max": wake_max},
            "wakeups_per_s_by_thread": self.wakeups_by_thread,
            "first_allocation_s": self.first_allocation.as_secs_f64(),
            "churned": self.churned,
            "healed_s": self.healed.as_secs_f64(),
        })
    }
}

/// The kernel's neighbour table limits, raised for the run and put back
/// when dropped.
struct NeighbourLimits {
    saved: Vec<(PathBuf, String)>,
}

impl NeighbourLimits {
    fn raise() -> Result<Self> {
        let mut saved = Vec::new();
        for (name, value) in NEIGH_THRESH {
            let path = PathBuf::from(format!("/proc/sys/net/ipv4/neigh/default/{name}"));
            let old =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
            saved.push((path, old.trim().to_string()));
        }
        Ok(Self { saved })
    }
}

impl Drop for NeighbourLimits {
    fn drop(&mut self) {
        for (path, old) in self.saved.iter().rev() {
            if let Err(e) = fs::write(path, old) {
                eprintln!("putting back {}: {e}", path.display());
            }
        }
    }
}
