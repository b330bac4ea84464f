//! Running the measurements inside the containers' network namespaces, and
//! what they cost: CPU time (machine-wide and the agents') and the agents' memory.
//!
//! iperf3 and ping are the machine's (busybox has neither), run with
//! `nsenter --net=/proc/<container pid>/ns/net`, which unlike `ip netns exec`
//! leaves /sys alone.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_tests::Host;

use super::iperf::{self, IperfResult};
use super::ping::{self, PingResult};
use super::workload::{PING_COUNT, PING_INTERVAL, Workload};

/// iperf3's default port: the first server's; more servers (one per
/// parallel client) listen on the ports after it.
const IPERF_PORT: u16 = 5201;
/// How long iperf3's server may take to listen.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack on top of a run's duration before its client is killed.
const CLIENT_SLACK: Duration = Duration::from_mins(1);
/// Interval of the agents' memory samples during a run.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// A command running `program` in the network namespace of process `pid`.
fn in_netns_of(pid: u32, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{pid}/ns/net")).arg(program);
    c
}

/// `iperf3 -s` in a container's network namespace, on port `IPERF_PORT + n`;
/// killed on drop.
///
/// Its pid file lives in the simulated host's directory: the harness kills
/// whatever names that directory on its command line when the host goes
/// away, so even a bench killed with SIGKILL leaves no server behind (the
/// next run's sweep of dead runs removes it).
pub(super) struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub(super) fn start(host: &Host, container_pid: u32, n: u16) -> Result<Self> {
        let port = IPERF_PORT + n;
        let pidfile: PathBuf = host.dir().join(format!("bench-iperf3-server-{port}.pid"));
        let log = host.dir().join(format!("bench-iperf3-server-{port}.log"));
        let log = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut c = in_netns_of(container_pid, "iperf3");
        c.arg("-s")
            .args(["-p", &port.to_string()])
            .arg("-I")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: Ctrl-C reaches the bench, which stops it in order.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let child = c.spawn().context("cannot start iperf3 -s")?;
        let mut server = Self { child };
        weave_tests::wait_for("iperf3 -s to listen", SERVER_START_TIMEOUT, || {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("iperf3 -s exited ({status})");
            }
            let tcp = ["tcp", "tcp6"].map(|f| {
                fs::read_to_string(format!("/proc/{container_pid}/net/{f}")).unwrap_or_default()
            });
            ensure!(
                tcp.iter().any(|t| listens(t, port)),
                "not listening on {port} yet"
            );
            Ok(())
        })?;
        Ok(server)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Whether a `/proc/net/tcp{,6}` table has a socket listening on `port`.
fn listens(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
    })
}

/// One run of `seconds` of the workload's iperf3 clients (all at once, the
/// n-th to server `n`) from the namespace of `client_pid` to `server`; what
/// they measured together.
pub(super) fn iperf(
    client_pid: u32,
    server: &str,
    workload: Workload,
    seconds: u32,
) -> Result<IperfResult> {
    let args = workload.iperf_args().context("not an iperf3 workload")?;
    let client = |n: u16| {
        let mut c = in_netns_of(client_pid, "iperf3");
        c.args(["-c", server, "-J", "-t", &seconds.to_string()])
            .args(["-p", &(IPERF_PORT + n).to_string()])
            .args(&args);
        let out = weave_tests::run(&mut c, Duration::from_secs(seconds.into()) + CLIENT_SLACK)?;
        iperf::parse(&out.stdout).with_context(|| format!("{} failed:\n{out}", workload.label()))
    };
    let results = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..workload.senders())
            .map(|n| scope.spawn(move || client(n)))
            .collect();
        clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| anyhow::bail!("an iperf3 client thread panicked"))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    IperfResult::together(&results).context("no iperf3 client ran")
}

/// [`PING_COUNT`] pings at [`PING_INTERVAL`] from the namespace of `client_pid` to `server`.
pub(super) fn ping(client_pid: u32, server: &str) -> Result<PingResult> {
    let mut c = in_netns_of(client_pid, "ping");
    c.args([
        "-n",
        "-c",
        &PING_COUNT.to_string(),
        "-i",
        PING_INTERVAL,
        "-W",
        "1",
        server,
    ]);
    let out = weave_tests::run(&mut c, CLIENT_SLACK)?;
    ping::parse(&out.stdout).with_context(|| format!("ping failed:\n{out}"))
}

/// CPU time used so far: by the whole machine (every core, any process, the
/// kernel's softirqs included) and by the agents.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuTime {
    pub busy_s: f64,
    pub agents_s: Option<f64>,
}

impl CpuTime {
    pub(super) fn now(agents: &[u32]) -> Result<Self> {
        let tick = clock_tick();
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let busy = busy_ticks(&stat).context("no cpu line in /proc/stat")?;
        let agents_s = agents
            .iter()
            .map(|pid| {
                let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                process_ticks(&s)
            })
            .sum::<Option<u64>>()
            .map(|t| t as f64 / tick);
        Ok(Self {
            busy_s: busy as f64 / tick,
            agents_s,
        })
    }

    /// CPU time used between `earlier` and `self`.
    pub(super) fn since(self, earlier: Self) -> Self {
        Self {
            busy_s: self.busy_s - earlier.busy_s,
            agents_s: match (self.agents_s, earlier.agents_s) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            },
        }
    }
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Busy ticks of all CPUs from `/proc/stat`: everything but idle and iowait
/// (guest time is already inside user time).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    (v.len() >= 8).then(|| v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

/// utime + stime of a process (all its threads) from `/proc/<pid>/stat`.
fn process_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub(super) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, field)
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs `f` while sampling the agents' resident memory; returns what `f`
/// returned and the largest `VmRSS` any agent had meanwhile (KiB).
pub(super) fn with_rss_samples<T: Send>(
    agents: &[u32],
    f: impl FnOnce() -> T + Send,
) -> (T, Option<u64>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut max: Option<u64> = None;
            loop {
                for &pid in agents {
                    if let Some(kib) = status_kib(pid, "VmRSS") {
                        max = Some(max.map_or(kib, |m| m.max(kib)));
                    }
                }
                if done.load(Ordering::Relaxed) {
                    return max;
                }
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
            }
        });
        let value = f();
        done.store(true, Ordering::Relaxed);
        (value, sampler.join().unwrap_or(None))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listening_socket() {
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
";
        assert!(listens(tcp6, 5201));
        assert!(!listens(tcp6, 5202));
        let established = tcp6.replace(" 0A ", " 01 ");
        assert!(!listens(&established, 5201));
    }

    #[test]
    fn reads_cpu_ticks() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        let pid_stat =
            "4242 (weave (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 70 30 0 0 20 0 9 0 1234 0 0";
        assert_eq!(process_ticks(pid_stat), Some(100));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn reads_memory_fields() {
        let status = "Name:\tweave\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS"), Some(10240));
        assert_eq!(status_field_kib(status, "VmHWM"), Some(20480));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
    }
}
