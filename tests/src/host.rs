//! A simulated host: a network namespace with its own dockerd, the busybox
//! image, and the `weave` binary pointed at this host only.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};

use crate::cleanup::{alive, host_dir, kill, purge, remove_tree, sweep_stale};
use crate::command::{Output, run};
use crate::dockerd::Dockerd;
use crate::image::import_busybox;
use crate::lan::{Capture, Lan, LanPort};
use crate::netns::{Link, Netns, in_netns};
use crate::poll::wait_until;
use crate::prereq::{is_executable, is_root, require_root, weave_bin};
use crate::report::{self, Connection, PsEntry, Summary, parse_connections};
use crate::{CMD_TIMEOUT, IMAGE, PING_TIMEOUT, TEST_PREFIX};

/// A simulated host: network namespace + dockerd + busybox image + the weave
/// binary pointed at this host's own socket, state directory and dockerd,
/// and once it has joined a [`Lan`], an `eth0` on it.
///
/// Drop runs `weave reset` (failure ignored), stops dockerd, kills what is left
/// in the namespace, deletes it (its `eth0` and LAN port go with it) and
/// removes the host's directory.
#[derive(Debug)]
pub struct Host {
    name: String,
    nickname: String,
    dir: PathBuf,
    weave_bin: PathBuf,
    lan: Option<LanPort>,
    dockerd: Option<Dockerd>,
    netns: Option<Netns>,
    /// Set up completely (its dockerd, if it has one, running): teardown
    /// then resets weave in it.
    built: bool,
}

impl Host {
    /// A host for test `test` (a short tag) named `wvt<pid>-<test>-<host>`.
    /// Panics loudly when a prerequisite is missing (root, dockerd, busybox, weave).
    #[track_caller]
    pub fn new(test: &str, host: &str) -> Self {
        require_root("this integration test");
        let weave_bin = weave_bin().unwrap_or_else(|e| panic!("\n\n*** {e:#}\n\n"));
        let name = format!("{TEST_PREFIX}{}-{test}-{host}", std::process::id());
        Self::create(&name, weave_bin, |step| eprintln!("[{name}] {step}"))
            .unwrap_or_else(|e| panic!("\n\n*** cannot set up simulated host {name}: {e:#}\n\n"))
    }

    /// Creates host `name` (leftovers of dead test runs, and of an earlier
    /// host of that name, are removed first), reporting each step through `say`.
    pub fn create(name: &str, weave_bin: PathBuf, say: impl Fn(&str)) -> Result<Self> {
        ensure!(is_root(), "creating a simulated host needs root");
        sweep_stale();
        Self::build(name, weave_bin, say)
    }

    /// [`Host::create`] without the sweep of dead runs (done once by the
    /// caller when hosts are created side by side).
    pub(crate) fn build(name: &str, weave_bin: PathBuf, say: impl Fn(&str)) -> Result<Self> {
        Self::build_with(name, weave_bin, true, say)
    }

    /// [`Host::build`], with its own dockerd and the busybox image or (for
    /// runs of many hosts that only need agents) without: then `weave run`
    /// and the docker methods are unavailable.
    pub(crate) fn build_with(
        name: &str,
        weave_bin: PathBuf,
        docker: bool,
        say: impl Fn(&str),
    ) -> Result<Self> {
        ensure!(
            is_executable(&weave_bin),
            "weave binary not found at {}",
            weave_bin.display()
        );
        purge(name);
        let dir = host_dir(name);
        say(&format!("create network namespace {name}"));
        let netns = Netns::create(name)?;
        let mut host = Self {
            name: name.to_string(),
            nickname: name.rsplit('-').next().unwrap_or(name).to_string(),
            dir: dir.clone(),
            weave_bin,
            lan: None,
            dockerd: None,
            netns: Some(netns),
            built: false,
        };
        if docker {
            say(&format!(
                "start dockerd in it (files and log under {})",
                dir.display()
            ));
            host.dockerd = Some(Dockerd::start(host.netns(), &dir.join("docker"))?);
            say(&format!("import the busybox image as {IMAGE}"));
            import_busybox(host.dockerd(), &dir)?;
        }
        host.built = true;
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last part of the name (`h1`): the peer's nickname (`WEAVE_NICKNAME`,
    /// since all simulated hosts share the machine's hostname) and the name of
    /// its port on the LAN.
    pub fn nickname(&self) -> &str {
        &self.nickname
    }

    pub const fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("host has a netns until dropped")
    }

    pub const fn dockerd(&self) -> &Dockerd {
        self.dockerd
            .as_ref()
            .expect("host has a dockerd until dropped")
    }

    /// The host's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `WEAVE_SOCKET` of this host.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("weave.sock")
    }

    /// `WEAVE_STATE_DIR` of this host.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `WEAVE_PLUGIN_SOCKET` of this host: `weave.sock` in the directory
    /// its dockerd sees as `/run/docker/plugins` (none without a dockerd).
    pub fn plugin_socket(&self) -> Option<PathBuf> {
        self.dockerd
            .as_ref()
            .map(|d| d.plugins_dir().join("weave.sock"))
    }

    /// `DOCKER_HOST` of this host.
    pub fn docker_host(&self) -> String {
        self.dockerd().host()
    }

    /// Whether this host runs a dockerd (see [`Host::build_with`]).
    pub const fn has_docker(&self) -> bool {
        self.dockerd.is_some()
    }

    /// A `weave` command running inside the namespace with this host's
    /// `WEAVE_SOCKET`, `WEAVE_STATE_DIR`, `DOCKER_HOST` and `WEAVE_NICKNAME`, and
    /// `WEAVE_DATAPLANE` from [`test_dataplane`] (what `weave launch` uses).
    pub fn weave_command(&self, args: &[&str]) -> Command {
        let mut c = self.netns().command(&self.weave_bin);
        c.args(args)
            .env("WEAVE_DATAPLANE", test_dataplane())
            .env("WEAVE_SOCKET", self.socket())
            .env("WEAVE_STATE_DIR", self.state_dir())
            .env("WEAVE_NICKNAME", &self.nickname);
        if let Some(dockerd) = &self.dockerd {
            c.env("DOCKER_HOST", dockerd.host());
        }
        // The Docker plugin listens where this host's dockerd alone finds
        // it; a host without dockerd has none (never the machine's
        // /run/docker/plugins).
        c.env(
            "WEAVE_PLUGIN_SOCKET",
            self.plugin_socket()
                .map_or_else(|| "off".into(), PathBuf::into_os_string),
        );
        c
    }

    /// Runs `weave args...` on this host.
    pub fn weave(&self, args: &[&str]) -> Output {
        self.weave_env(args, &[])
    }

    /// Runs `weave args...` on this host with extra environment variables.
    pub fn weave_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.weave_command(args);
        c.envs(env.iter().copied());
        run(&mut c, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `weave args...`; its stdout, or an error showing everything.
    pub fn try_weave(&self, args: &[&str]) -> Result<String> {
        self.weave(args).ok()
    }

    /// Runs `weave args...` and panics (showing everything) if it fails.
    #[track_caller]
    pub fn weave_ok(&self, args: &[&str]) -> String {
        self.weave(args).expect_ok()
    }

    /// Runs the docker CLI against this host's dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.dockerd().docker(args)
    }

    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.docker(args).expect_ok()
    }

    /// `docker exec CONTAINER args...`.
    pub fn exec(&self, container: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", container];
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// `docker exec CONTAINER args...`, killed after `timeout` rather than
    /// [`CMD_TIMEOUT`] (for long transfers).
    pub fn exec_within(&self, container: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.dockerd().command();
        c.arg("exec").arg(container).args(args);
        run(&mut c, timeout).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `docker exec CONTAINER args...` that must succeed; its stdout.
    #[track_caller]
    pub fn exec_ok(&self, container: &str, args: &[&str]) -> String {
        self.exec(container, args).expect_ok()
    }

    /// The IPv4 CIDRs on the container's ethwe, sorted.
    #[track_caller]
    pub fn ethwe_cidrs(&self, container: &str) -> Vec<String> {
        let out = self.exec_ok(
            container,
            &["ip", "-o", "-4", "addr", "show", "dev", "ethwe"],
        );
        let mut cidrs: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let i = words.iter().position(|w| *w == "inet")?;
                words.get(i + 1).map(ToString::to_string)
            })
            .collect();
        cidrs.sort();
        cidrs
    }

    /// The MTU of the container's ethwe.
    #[track_caller]
    pub fn ethwe_mtu(&self, container: &str) -> u32 {
        self.exec_ok(container, &["cat", "/sys/class/net/ethwe/mtu"])
            .trim()
            .parse()
            .unwrap()
    }

    /// Full ids of all containers of this host's dockerd.
    pub fn containers(&self) -> Vec<String> {
        self.dockerd()
            .containers()
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The pid of a running container's first process.
    pub fn container_pid(&self, container: &str) -> u32 {
        let out = self.docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid for container {container}: {out:?}"))
    }

    /// `/proc/<pid>/ns/net` of a running container.
    pub fn container_netns(&self, container: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.container_pid(container)))
    }

    /// A command that runs the machine's `program` in the container's network
    /// namespace (`nsenter --net=/proc/PID/ns/net`), with the machine's file
    /// system and root's capabilities (which `docker exec` does not give:
    /// containers have no `CAP_NET_ADMIN`).
    pub fn container_command(&self, container: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!(
            "--net={}",
            self.container_netns(container).display()
        ))
        .arg(program);
        c
    }

    /// Runs `program args...` in the container's network namespace.
    pub fn in_container(&self, container: &str, program: &str, args: &[&str]) -> Output {
        let mut c = self.container_command(container, program);
        c.args(args);
        run(&mut c, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The MAC container `observer` maps `addr` to on its interface `dev`
    /// (its ARP cache, `ip neigh`), if any.
    pub fn neighbour_mac(&self, observer: &str, dev: &str, addr: &str) -> Option<String> {
        let out = self.in_container(observer, "ip", &["neigh", "show", addr, "dev", dev]);
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(ToString::to_string)
    }

    /// Runs `f` on a thread inside the container's network namespace (for
    /// sockets opened from the test itself).
    pub fn run_in_container<T: Send>(&self, container: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.container_netns(container), f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a capture on the container's `ethwe` (`tcpdump FILTER...`), into
    /// a file under the host's directory.
    pub fn capture_in_container(&self, container: &str, filter: &[&str]) -> Result<Capture> {
        Capture::start(&self.container_netns(container), "ethwe", filter, &self.dir)
    }

    /// The links of this host's namespace.
    pub fn links(&self) -> Vec<Link> {
        self.netns().links().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The names of this host's links, sorted.
    pub fn link_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.links().into_iter().map(|l| l.name).collect();
        names.sort();
        names
    }

    /// One ping (`-c 1 -W 1`) from inside `container` to `addr`.
    pub fn ping(&self, container: &str, addr: &str) -> bool {
        self.exec(container, &["ping", "-c", "1", "-W", "1", addr])
            .success()
    }

    /// Pings from `container` to `addr` until one gets through, up to [`PING_TIMEOUT`].
    pub fn wait_ping(&self, container: &str, addr: &str) -> Result<()> {
        self.wait_ping_within(container, addr, PING_TIMEOUT)
    }

    /// Pings from `container` to `addr` until one gets through, up to `timeout`.
    pub fn wait_ping_within(&self, container: &str, addr: &str, timeout: Duration) -> Result<()> {
        wait_until(&format!("{container} to ping {addr}"), timeout, || {
            self.ping(container, addr).then_some(())
        })
    }

    /// Asserts that `container` reaches `addr` within [`PING_TIMEOUT`].
    #[track_caller]
    pub fn assert_ping(&self, container: &str, addr: &str) {
        if let Err(e) = self.wait_ping(container, addr) {
            let last = self.exec(container, &["ping", "-c", "1", "-W", "1", addr]);
            panic!("{e:#}\nlast attempt:\n{last}");
        }
    }

    /// Asserts that three pings in a row from `container` to `addr` fail.
    #[track_caller]
    pub fn assert_no_ping(&self, container: &str, addr: &str) {
        for attempt in 1..=3 {
            let out = self.exec(container, &["ping", "-c", "1", "-W", "1", addr]);
            assert!(
                !out.success(),
                "{container} must not reach {addr}, but attempt {attempt} got through:\n{out}"
            );
        }
    }
}

/// The simulated LAN.
impl Host {
    /// Plugs this host into `lan`: an `eth0` (MTU 1500) with address `cidr`
    /// in the host's namespace, its peer a port of the LAN's bridge named
    /// after the host's nickname.
    pub fn join_lan(&mut self, lan: &Lan, cidr: &str) -> Result<()> {
        ensure!(self.lan.is_none(), "{} is on a LAN already", self.name);
        let port = lan.attach(self.netns(), &self.nickname, cidr)?;
        self.lan = Some(port);
        Ok(())
    }

    /// This host's place on the LAN; panics when it has not joined one.
    #[track_caller]
    pub fn lan_port(&self) -> &LanPort {
        self.lan
            .as_ref()
            .unwrap_or_else(|| panic!("{} has not joined a LAN", self.name))
    }

    /// This host's address on the LAN.
    #[track_caller]
    pub fn lan_ip(&self) -> Ipv4Addr {
        self.lan_port().addr
    }
}

/// The agent process.
impl Host {
    /// Where the agent pins its classifier links: a directory per network
    /// namespace under bpffs.
    pub fn bpf_pin_dir(&self) -> PathBuf {
        crate::cleanup::bpf_pin_dir(&self.netns().path())
    }

    /// Pids of weave agents in the host's namespace: `weave launch
    /// --foreground` processes (CLI commands running at the time are not).
    pub fn agent_pids(&self) -> Vec<u32> {
        self.netns()
            .pids()
            .into_iter()
            .filter(|pid| {
                let is_weave = fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                    exe.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("weave"))
                });
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                is_weave && cmdline.split(|&b| b == 0).any(|arg| arg == b"--foreground")
            })
            .collect()
    }

    /// The one agent of this host; panics unless exactly one runs.
    #[track_caller]
    pub fn agent_pid(&self) -> u32 {
        match self.agent_pids().as_slice() {
            &[pid] => pid,
            pids => panic!("{}: expected one agent, found {pids:?}", self.name),
        }
    }

    /// Restarts this host's dockerd (SIGTERM, which stops its containers,
    /// then a new dockerd on the same files).
    #[track_caller]
    pub fn restart_dockerd(&mut self) {
        let netns = self
            .netns
            .as_ref()
            .expect("a host has its namespace until dropped");
        self.dockerd
            .as_mut()
            .expect("a host has its dockerd until dropped")
            .restart(netns)
            .unwrap_or_else(|e| panic!("{}: restarting dockerd: {e:#}", self.name));
    }

    /// SIGKILLs the agent (a crash: no cleanup of its own) and waits until it
    /// is gone; returns its pid.
    #[track_caller]
    pub fn kill_agent(&self) -> u32 {
        let pid = self.agent_pid();
        kill(&[pid], "KILL");
        wait_until("the killed agent to exit", Duration::from_secs(10), || {
            (!alive(pid)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        pid
    }

    /// Resident memory of the agent in KiB (`VmRSS`).
    #[track_caller]
    pub fn agent_rss_kib(&self) -> u64 {
        let pid = self.agent_pid();
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// The agent's log (`<state dir>/agent.log`), empty if there is none.
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.state_dir().join("agent.log")).unwrap_or_default()
    }

    /// The last `n` lines of the agent's log, if any.
    pub fn agent_log_tail(&self, n: usize) -> String {
        let log = self.agent_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `weave ps`, parsed.
    #[track_caller]
    pub fn ps(&self) -> Vec<PsEntry> {
        report::parse_ps(&self.weave_ok(&["ps"])).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `Peers:`, `Connections:` and `Targets:` of `weave status`, read from
    /// the text as the demo shows it (tests read `Host::status`).
    pub fn summary(&self) -> Result<Summary> {
        Summary::parse(&self.try_weave(&["status"])?)
    }

    /// `weave status connections`, parsed from the text (for the demo).
    pub fn connections(&self) -> Result<Vec<Connection>> {
        parse_connections(&self.try_weave(&["status", "connections"])?)
    }

    /// Nicknames of the peers this host has an established connection with,
    /// from the text (for the demo; tests use `Host::connected_to`).
    pub fn established_with(&self) -> Result<BTreeSet<String>> {
        self.connections()?
            .into_iter()
            .filter(Connection::is_established)
            .map(|c| {
                c.nickname
                    .ok_or_else(|| anyhow!("established connection without a peer: {}", c.line))
            })
            .collect()
    }

    /// Prints the agent's and dockerd's last log lines (for a failing test).
    pub fn print_diagnostics(&self) {
        eprintln!(
            "[{}] agent log (last 40 lines):\n{}",
            self.name,
            self.agent_log_tail(40)
        );
        if let Some(d) = &self.dockerd {
            eprintln!(
                "[{}] dockerd log (last 15 lines):\n{}",
                self.name,
                d.log_tail(15)
            );
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_diagnostics();
        }
        // Half built, nothing was launched (the host failed to come up).
        if let (Some(netns), true) = (&self.netns, self.built) {
            let mut c = self.weave_command(&["reset"]);
            match run(&mut c, CMD_TIMEOUT) {
                Ok(o) if !o.success() => eprintln!(
                    "[{}] weave reset at teardown failed (ignored):\n{o}",
                    netns.name()
                ),
                Err(e) => eprintln!("[{}] weave reset at teardown: {e:#}", netns.name()),
                Ok(_) => {}
            }
        }
        drop(self.dockerd.take());
        drop(self.netns.take());
        remove_tree(&self.dir);
    }
}

/// The data plane the harness launches agents with: `WEAVE_TEST_DATAPLANE`
/// (`plain`, `xdp`, `fastdp` or `auto`), default `plain`, the baseline path.
/// `cargo xtask test` runs the suites that launch agents once more with
/// `xdp`, and those that carry traffic between hosts a third time with
/// `fastdp`. A test can still launch a host on another data plane
/// (`launch_env` with `WEAVE_DATAPLANE`), as the fastdp suite does per host.
pub fn test_dataplane() -> String {
    std::env::var("WEAVE_TEST_DATAPLANE").unwrap_or_else(|_| "plain".to_owned())
}

/// Fails if any address is listed twice across the hosts' `weave ps`,
/// naming both holders.
pub fn no_address_twice(hosts: &[&Host]) -> Result<()> {
    let mut seen: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for h in hosts {
        for entry in h.ps() {
            for cidr in entry.cidrs {
                let here = format!("{}:{}", h.nickname(), entry.id);
                if let Some(there) = seen.insert(cidr.clone(), here.clone()) {
                    anyhow::bail!("address {cidr} is in use twice: {there} and {here}");
                }
            }
        }
    }
    Ok(())
}
