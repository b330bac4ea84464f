//! Simulated hosts for the integration tests and the demo.
//!
//! A [`Host`] is a network namespace with its own dockerd (own socket, data
//! root, exec root and pidfile under a per-host temporary directory), a local
//! busybox image, and helpers that run the `weave` binary and the docker CLI
//! against that host only. Every piece is a guard whose `Drop` removes what it
//! created, also when a test panics. Names start with a unique prefix
//! (`wvt<pid>-<test>-<host>`), and leftovers of processes that died without
//! cleaning up (SIGKILL, Ctrl-C of `cargo test`) are swept when the next host
//! is created.
//!
//! Plain std + anyhow on purpose: the tests are synchronous and talk to the
//! system through its own tools (`ip`, `nsenter`, `dockerd`, `docker`), which
//! the product itself must not shell out to.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// The image every simulated host imports from Debian's busybox-static.
pub const IMAGE: &str = "weave-test-busybox:latest";
/// Where `ip netns add` puts its namespaces; `nsenter --net=` takes these paths.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of everything the tests create; `wvt<pid>-...` is swept once `<pid>` is gone.
pub const TEST_PREFIX: &str = "wvt";

/// How long one command (a `weave` or `docker` call) may take before it is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a dockerd may take to answer after it was started.
pub const DOCKERD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a positive connectivity check may take to succeed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Interruption (Ctrl-C in `cargo xtask demo`)
// ---------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Marks the run as interrupted; polling helpers then stop with an error so that
/// guards unwind and clean up. Async-signal-safe: call it from a signal handler.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Panics with a loud, explicit message when not root: these tests need
/// network namespaces, dockerd and BPF, and must never pass by doing nothing.
pub fn require_root(what: &str) {
    if !is_root() {
        panic!(
            "\n\n*** {what} needs root (network namespaces, dockerd, BPF programs).\n\
             *** Run the tests as root with `cargo xtask test`.\n\n"
        );
    }
}

/// Finds `name` on PATH, then in the sbin directories root's PATH usually has.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| {
        anyhow!("`{name}` not found on PATH: install Debian's {package} (`cargo xtask setup` does)")
    })
}

/// The docker client: `docker` on PATH (present even on a machine without the engine).
pub fn docker_cli() -> Result<PathBuf> {
    require_program("docker", "docker.io")
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `weave` binary under test: `$WEAVE_BIN`, else `debug/weave` in
/// `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn weave_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("WEAVE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("debug/weave"),
    };
    ensure!(
        is_executable(&path),
        "weave binary not found at {}: build it with `cargo xtask build`, or set WEAVE_BIN \
         (`cargo xtask test` does both)",
        path.display()
    );
    Ok(path)
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmd: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout when the command succeeded, an error that shows everything otherwise.
    pub fn ok(self) -> Result<String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(anyhow!("command failed:\n{self}"))
        }
    }

    /// Like [`Output::ok`], panicking (test style) instead of returning an error.
    #[track_caller]
    pub fn expect_ok(self) -> String {
        match self.ok() {
            Ok(stdout) => stdout,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self
            .code
            .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
        writeln!(f, "$ {}  (exit {code})", self.cmd)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An anonymous file (created, then unlinked) to capture a child's output.
/// Files rather than pipes: a daemon forked by the child (`weave launch`) may
/// keep the descriptors open long after the child itself has exited.
fn capture_file() -> Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".wvt-out-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::remove_file(&path).ok();
    Ok(file)
}

fn read_back(mut file: File) -> String {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok();
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// Waits for `child`, killing it once `timeout` has passed.
fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            bail!("`{what}` did not finish within {timeout:?} and was killed");
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it after `timeout`.
/// An error means it could not run at all; a non-zero exit is in the [`Output`].
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = describe(cmd);
    let (out, err) = (capture_file()?, capture_file()?);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let status = wait_child(&mut child, timeout, &line)?;
    Ok(Output {
        cmd: line,
        code: status.code(),
        stdout: read_back(out),
        stderr: read_back(err),
    })
}

/// Runs `cmd` and returns its stdout; any failure is an error showing all output.
pub fn check(cmd: &mut Command) -> Result<String> {
    run(cmd, CMD_TIMEOUT)?.ok()
}

fn cmd<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: impl IntoIterator<Item = S>) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Calls `probe` every 100 ms until it returns `Some`, or fails after `timeout`.
/// The pause is a polling interval, not a synchronisation: the condition decides.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Cleanup primitives (shared by the guards and the sweep of stale leftovers)
// ---------------------------------------------------------------------------

/// Ids of the containers a dockerd with its files under `dir` knows of
/// (`<data root>/containers/<id>`; the data root is `dir/data` for a
/// [`Dockerd`], `dir/docker/data` for a [`Host`]).
fn container_ids_under(dir: &Path) -> Vec<String> {
    ["data/containers", "docker/data/containers"]
        .iter()
        .filter_map(|sub| fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// Pids of processes that belong to what lives under `dir`: those whose
/// command line mentions it (dockerd, its containerd and shims) and those in
/// the cgroup of one of its containers (left running when dockerd died).
fn processes_under(dir: &Path) -> Vec<u32> {
    let dir_s = dir.to_string_lossy().into_owned();
    let inside = format!("{dir_s}/");
    let ids = container_ids_under(dir);
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mentions = cmdline.split(|&b| b == 0).any(|arg| {
                let arg = String::from_utf8_lossy(arg);
                arg.contains(&inside) || arg.ends_with(&dir_s)
            });
            let contained = !ids.is_empty()
                && fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|cg| ids.iter().any(|id| cg.contains(id.as_str())));
            mentions || contained
        })
        .collect()
}

fn kill(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let mut c = Command::new("kill");
    c.arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string));
    run(&mut c, Duration::from_secs(10)).ok();
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; it holds nothing, so it counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILLs `pids` and waits (bounded) until they are gone.
fn kill_and_reap(pids: &[u32]) {
    kill(pids, "KILL");
    let _ = wait_until("killed processes to exit", Duration::from_secs(10), || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
}

fn unescape_mountinfo(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(oct, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    mounts
}

/// Unmounts everything at or under `dir` (lazily when busy).
fn unmount_under(dir: &Path) {
    for _round in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let plain = run(&mut cmd("umount", [&m]), Duration::from_secs(20));
            if !plain.is_ok_and(|o| o.success()) {
                run(
                    &mut cmd("umount", [OsStr::new("-l"), m.as_os_str()]),
                    Duration::from_secs(20),
                )
                .ok();
            }
        }
    }
}

/// Kills what runs from `dir`, unmounts what is mounted under it, removes it.
fn remove_tree(dir: &Path) {
    kill_and_reap(&processes_under(dir));
    unmount_under(dir);
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(dir)
    {
        eprintln!("weave-tests: cannot remove {}: {e}", dir.display());
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Pids of processes in network namespace `name` (`ip netns pids`).
fn netns_pids(name: &str) -> Vec<u32> {
    run(
        &mut cmd("ip", ["netns", "pids", name]),
        Duration::from_secs(10),
    )
    .map(|o| {
        o.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Removes everything a host called `name` may have left: its processes, mounts,
/// temporary directory and network namespace. Safe to call when nothing is left.
pub fn purge(name: &str) {
    let dir = host_dir(name);
    remove_tree(&dir);
    if netns_path(name).exists() {
        kill_and_reap(&netns_pids(name));
        let _ = run(
            &mut cmd("ip", ["netns", "del", name]),
            Duration::from_secs(20),
        );
    }
}

/// Purges `wvt<pid>-...` namespaces and directories whose process `<pid>` is gone.
pub fn sweep_stale() {
    let is_stale = |name: &str| {
        let Some(rest) = name.strip_prefix(TEST_PREFIX) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        pid.parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut names = BTreeSet::new();
    for dir in [Path::new(NETNS_DIR).to_path_buf(), std::env::temp_dir()] {
        if let Ok(entries) = fs::read_dir(&dir) {
            names.extend(
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| is_stale(n)),
            );
        }
    }
    for name in names {
        eprintln!("weave-tests: removing leftovers of a dead test run: {name}");
        purge(&name);
    }
}

/// The per-host temporary directory of host `name`.
pub fn host_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(name)
}

// ---------------------------------------------------------------------------
// Network namespace
// ---------------------------------------------------------------------------

/// One link of `ip -o link show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The bridge this link is enslaved to, if any.
    pub master: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// Parses `ip -o link show` output.
pub fn parse_links(text: &str) -> Vec<Link> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ": ");
            let index = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.split('@').next()?.to_string();
            let rest = parts.next().unwrap_or("");
            let words: Vec<&str> = rest.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
            };
            Some(Link {
                index,
                name,
                master: after("master").map(|m| m.to_string()),
                mtu: after("mtu").and_then(|m| m.parse().ok()),
                up: rest
                    .split('>')
                    .next()
                    .is_some_and(|flags| flags.contains("UP")),
            })
        })
        .collect()
}

/// A BPF link held open by a process, from `/proc/<pid>/fdinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfLink {
    /// `xdp`, `tcx`, ...
    pub link_type: String,
    /// The interface it is attached to (in the holder's network namespace).
    pub ifindex: Option<u32>,
    /// E.g. `46 (ingress)`, for TCX links.
    pub attach_type: Option<String>,
    pub prog_id: Option<u32>,
}

/// The BPF links process `pid` holds. Unlike `bpftool net show` (Debian 12's
/// bpftool 7.1 predates TCX), this sees every kind of link the kernel reports.
pub fn bpf_links_held_by(pid: u32) -> Vec<BpfLink> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let fd = fd.ok()?;
        if fs::read_link(fd.path()).ok()?.to_string_lossy() != "anon_inode:bpf_link" {
            return None;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .ok()?;
        let field = |key: &str| {
            info.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_string())
            })
        };
        Some(BpfLink {
            link_type: field("link_type")?,
            ifindex: field("ifindex").and_then(|v| v.parse().ok()),
            attach_type: field("attach_type"),
            prog_id: field("prog_id").and_then(|v| v.parse().ok()),
        })
    })
    .collect()
}

/// A network namespace created with `ip netns add`, deleted on drop together
/// with any process still inside it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (which must not exist) with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        ensure!(
            !netns_path(name).exists(),
            "network namespace {name} exists already"
        );
        check(&mut cmd("ip", ["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        check(&mut cmd("ip", ["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// A command that runs `program` inside this namespace (`nsenter --net=...`,
    /// which unlike `ip netns exec` keeps /sys and the cgroup mounts as they are).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// Runs `program args` inside this namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut c = self.command(program);
        c.args(args);
        run(&mut c, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The links of this namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        Ok(parse_links(&check(&mut cmd(
            "ip",
            ["-n", &self.name, "-o", "link", "show"],
        ))?))
    }

    /// Pids of the processes inside this namespace.
    pub fn pids(&self) -> Vec<u32> {
        netns_pids(&self.name)
    }

    /// BPF links held by processes of this namespace, with the name of the
    /// interface each is attached to (`None` when not attached to one here).
    pub fn bpf_links(&self) -> Result<Vec<(Option<String>, BpfLink)>> {
        let links = self.links()?;
        Ok(self
            .pids()
            .into_iter()
            .flat_map(bpf_links_held_by)
            .map(|l| {
                let name = l
                    .ifindex
                    .and_then(|i| links.iter().find(|k| k.index == i))
                    .map(|k| k.name.clone());
                (name, l)
            })
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_and_reap(&self.pids());
        match run(
            &mut cmd("ip", ["netns", "del", &self.name]),
            Duration::from_secs(20),
        ) {
            Ok(o) if o.success() => {}
            Ok(o) => eprintln!("weave-tests: cannot delete netns {}:\n{o}", self.name),
            Err(e) => eprintln!("weave-tests: cannot delete netns {}: {e:#}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------
// dockerd
// ---------------------------------------------------------------------------

/// A dockerd running inside a network namespace, with everything it owns
/// (socket, data root, exec root, pidfile, log) under one directory.
/// Drop removes its containers, stops it and removes its mounts and files.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: PathBuf,
    docker: PathBuf,
}

impl Dockerd {
    /// Starts dockerd in `netns` with its files under `dir` (created, must not
    /// exist), and waits until it answers.
    pub fn start(netns: &Netns, dir: &Path) -> Result<Dockerd> {
        let dockerd_bin = require_program("dockerd", "docker.io")?;
        let docker = docker_cli()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("daemon.json");
        fs::write(&config, "{}\n")?;
        let log_path = dir.join("dockerd.log");
        let log = File::create(&log_path)?;
        let mut c = netns.command(&dockerd_bin);
        c.arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
            ])
            // A containerd namespace of its own, in case a system containerd is shared.
            .arg("--containerd-namespace")
            .arg(netns.name())
            .arg("--containerd-plugins-namespace")
            .arg(format!("{}-plugins", netns.name()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C on the terminal must not stop it
            // before the guards have removed its containers.
            .process_group(0);
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", describe(&c)))?;
        let mut daemon = Dockerd {
            child: Some(child),
            dir: dir.to_path_buf(),
            docker,
        };
        let started = wait_until("dockerd to answer", DOCKERD_START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow!("dockerd exited at start ({status})")));
            }
            let version = daemon.docker(&["version", "--format", "{{.Server.Version}}"]);
            version.success().then_some(Ok(()))
        });
        match started.and_then(|r| r) {
            Ok(()) => Ok(daemon),
            Err(e) => Err(e.context(format!(
                "dockerd log {}:\n{}",
                log_path.display(),
                daemon.log_tail(30)
            ))),
        }
    }

    /// `unix://<dir>/docker.sock`, the value for DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// Runs the docker CLI against this daemon; an error if it cannot run at all.
    pub fn try_docker(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(&self.docker);
        c.arg("-H").arg(self.host()).args(args);
        run(&mut c, CMD_TIMEOUT)
    }

    /// Runs the docker CLI against this daemon (panics if it cannot run at all).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Full ids of all containers, running or not.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.try_docker(&["ps", "-aq", "--no-trunc"])?.ok()?;
        let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes its containers, stops it (SIGTERM, then SIGKILL), removes its files.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(ids) = self.containers()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.try_docker(&args);
        }
        kill(&[child.id()], "TERM");
        if wait_child(&mut child, Duration::from_secs(30), "dockerd shutdown").is_err() {
            eprintln!("weave-tests: dockerd did not stop on SIGTERM; killed it");
        }
        // Its containerd and shims, and any container left running.
        remove_tree(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Imports [`IMAGE`] into `dockerd`: Debian's static busybox with a symlink per
/// applet, packed with `tar` and loaded with `docker import`. `scratch` is a
/// directory for the root file system (removed afterwards).
pub fn import_busybox(dockerd: &Dockerd, scratch: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow!(
                "/bin/busybox not found: install Debian's busybox-static (`cargo xtask setup` does)"
            )
        })?;
    let root = scratch.join("busybox-rootfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(&busybox, root.join("bin/busybox")).context("copying busybox")?;
    let applets = check(&mut cmd(&busybox, ["--list"]))?;
    for applet in applets
        .split_whitespace()
        .filter(|a| *a != "busybox" && !a.contains('/'))
    {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let tarball = scratch.join("busybox-rootfs.tar");
    check(&mut cmd(
        "tar",
        [
            OsStr::new("-C"),
            root.as_os_str(),
            OsStr::new("-cf"),
            tarball.as_os_str(),
            OsStr::new("."),
        ],
    ))?;
    let tar_s = tarball.to_string_lossy().into_owned();
    let imported = dockerd
        .docker(&["import", "--change", "CMD [\"sh\"]", &tar_s, IMAGE])
        .ok();
    fs::remove_file(&tarball).ok();
    fs::remove_dir_all(&root).ok();
    imported.context("docker import of the busybox image")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Host
// ---------------------------------------------------------------------------

/// A simulated host: network namespace + dockerd + busybox image + the weave
/// binary pointed at this host's own socket, state directory and dockerd.
///
/// Drop runs `weave reset` (failure ignored), stops dockerd, kills what is left
/// in the namespace, deletes it and removes the host's directory.
#[derive(Debug)]
pub struct Host {
    name: String,
    dir: PathBuf,
    weave_bin: PathBuf,
    dockerd: Option<Dockerd>,
    netns: Option<Netns>,
}

impl Host {
    /// A host for test `test` (a short tag) named `wvt<pid>-<test>-<host>`.
    /// Panics loudly when a prerequisite is missing (root, dockerd, busybox, weave).
    #[track_caller]
    pub fn new(test: &str, host: &str) -> Host {
        require_root("this integration test");
        let weave_bin = weave_bin().unwrap_or_else(|e| panic!("\n\n*** {e:#}\n\n"));
        let name = format!("{TEST_PREFIX}{}-{test}-{host}", std::process::id());
        Host::create(&name, weave_bin, |step| eprintln!("[{name}] {step}"))
            .unwrap_or_else(|e| panic!("\n\n*** cannot set up simulated host {name}: {e:#}\n\n"))
    }

    /// Creates host `name` (leftovers of an earlier host of that name are
    /// removed first), reporting each step through `say`.
    pub fn create(name: &str, weave_bin: PathBuf, say: impl Fn(&str)) -> Result<Host> {
        ensure!(is_root(), "creating a simulated host needs root");
        ensure!(
            is_executable(&weave_bin),
            "weave binary not found at {}",
            weave_bin.display()
        );
        sweep_stale();
        purge(name);
        let dir = host_dir(name);
        say(&format!("create network namespace {name}"));
        let netns = Netns::create(name)?;
        let mut host = Host {
            name: name.to_string(),
            dir: dir.clone(),
            weave_bin,
            dockerd: None,
            netns: Some(netns),
        };
        say(&format!(
            "start dockerd in it (files and log under {})",
            dir.display()
        ));
        host.dockerd = Some(Dockerd::start(host.netns(), &dir.join("docker"))?);
        say(&format!("import the busybox image as {IMAGE}"));
        import_busybox(host.dockerd(), &dir)?;
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("host has a netns until dropped")
    }

    pub fn dockerd(&self) -> &Dockerd {
        self.dockerd
            .as_ref()
            .expect("host has a dockerd until dropped")
    }

    /// The host's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// WEAVE_SOCKET of this host.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("weave.sock")
    }

    /// WEAVE_STATE_DIR of this host.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// DOCKER_HOST of this host.
    pub fn docker_host(&self) -> String {
        self.dockerd().host()
    }

    /// A `weave` command running inside the namespace with this host's
    /// WEAVE_SOCKET, WEAVE_STATE_DIR and DOCKER_HOST.
    pub fn weave_command(&self, args: &[&str]) -> Command {
        let mut c = self.netns().command(&self.weave_bin);
        c.args(args)
            .env("WEAVE_SOCKET", self.socket())
            .env("WEAVE_STATE_DIR", self.state_dir())
            .env("DOCKER_HOST", self.docker_host());
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
        wait_until(&format!("{container} to ping {addr}"), PING_TIMEOUT, || {
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

impl Host {
    /// The last `n` lines of the agent's log (`<state dir>/agent.log`), if any.
    pub fn agent_log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.state_dir().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
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
        // Without a dockerd nothing was launched (the host failed to come up).
        if let (Some(netns), Some(_)) = (&self.netns, &self.dockerd) {
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

// ---------------------------------------------------------------------------
// Self-tests of the harness (root + dockerd; no weave binary needed)
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        format!("{TEST_PREFIX}{}-{tag}-h1", std::process::id())
    }

    #[test]
    fn parses_ip_link_output() {
        let text = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
                    5: vethwepl4242@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1376 qdisc noqueue master weave state UP mode DEFAULT\\    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n\
                    6: weave: <BROADCAST,MULTICAST> mtu 1376 qdisc noop state DOWN\\    link/ether 02:00:00:00:00:02\n";
        let links = parse_links(text);
        assert_eq!(links.len(), 3);
        assert_eq!(
            links[0],
            Link {
                index: 1,
                name: "lo".into(),
                master: None,
                mtu: Some(65536),
                up: true
            }
        );
        assert_eq!(
            links[1],
            Link {
                index: 5,
                name: "vethwepl4242".into(),
                master: Some("weave".into()),
                mtu: Some(1376),
                up: true
            }
        );
        assert_eq!(
            links[2],
            Link {
                index: 6,
                name: "weave".into(),
                master: None,
                mtu: Some(1376),
                up: false
            }
        );
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn netns_is_created_and_deleted() {
        require_root("the netns self-test");
        let name = unique("netns");
        let ns = Netns::create(&name).unwrap();
        assert!(netns_path(&name).exists());
        let links = ns.links().unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        assert!(links[0].name == "lo" && links[0].up, "{links:?}");
        let out = ns.exec("cat", &["/proc/self/net/dev"]);
        assert!(out.success() && !out.stdout.contains("eth0"), "{out}");
        drop(ns);
        assert!(!netns_path(&name).exists());
    }

    #[test]
    fn dockerd_in_netns_runs_a_busybox_container_without_network() {
        require_root("the dockerd self-test");
        let name = unique("dockerd");
        purge(&name);
        let dir = host_dir(&name);
        let ns = Netns::create(&name).unwrap();
        let dockerd = Dockerd::start(&ns, &dir.join("docker")).unwrap();
        let daemon_pid = fs::read_to_string(dir.join("docker/docker.pid"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap();
        assert!(
            ns.pids().contains(&daemon_pid),
            "dockerd must run inside {name}"
        );
        import_busybox(&dockerd, &dir).unwrap();

        let id = dockerd
            .docker(&["run", "-d", "--net=none", IMAGE, "sleep", "3600"])
            .expect_ok();
        let id = id.trim();
        assert_eq!(id.len(), 64, "{id:?}");
        let links = dockerd
            .docker(&["exec", id, "ip", "-o", "link", "show"])
            .expect_ok();
        let names: Vec<String> = parse_links(&links).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo"], "a --net=none container has only lo");
        let ping = dockerd.docker(&["exec", id, "ping", "-c", "1", "-W", "1", "127.0.0.1"]);
        assert!(ping.success(), "{ping}");
        let pid = dockerd
            .docker(&["inspect", "-f", "{{.State.Pid}}", id])
            .expect_ok();
        let pid: u32 = pid.trim().parse().unwrap();
        let container_ns = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let host_ns = fs::read_link(format!("/proc/{daemon_pid}/ns/net")).unwrap();
        assert_ne!(
            container_ns, host_ns,
            "the container has its own network namespace"
        );
        assert_eq!(dockerd.containers().unwrap(), [id.to_string()]);

        drop(dockerd);
        assert!(!alive(pid), "container process {pid} must be gone");
        assert!(!alive(daemon_pid), "dockerd {daemon_pid} must be gone");
        assert!(
            processes_under(&dir).is_empty(),
            "nothing may run from {}",
            dir.display()
        );
        assert!(
            mounts_under(&dir).is_empty(),
            "nothing may stay mounted under {}",
            dir.display()
        );
        drop(ns);
        remove_tree(&dir);
        assert!(!dir.exists() && !netns_path(&name).exists());
    }

    #[test]
    fn purge_removes_what_a_killed_dockerd_left_running() {
        require_root("the purge self-test");
        let name = unique("killed");
        purge(&name);
        let dir = host_dir(&name);
        let ns = Netns::create(&name).unwrap();
        let dockerd = Dockerd::start(&ns, &dir.join("docker")).unwrap();
        import_busybox(&dockerd, &dir).unwrap();
        let id = dockerd
            .docker(&["run", "-d", "--net=none", IMAGE, "sleep", "3600"])
            .expect_ok();
        let pid: u32 = dockerd
            .docker(&["inspect", "-f", "{{.State.Pid}}", id.trim()])
            .expect_ok()
            .trim()
            .parse()
            .unwrap();
        // A crash: dockerd, containerd and the shim die; the container goes on.
        let runtime: Vec<u32> = processes_under(&dir)
            .into_iter()
            .filter(|&p| p != pid)
            .collect();
        assert!(
            runtime.len() >= 3,
            "dockerd, containerd and a shim: {runtime:?}"
        );
        kill_and_reap(&runtime);
        std::mem::forget(dockerd);
        std::mem::forget(ns);
        assert!(alive(pid), "the container outlives its runtime");
        assert!(
            processes_under(&dir).contains(&pid),
            "and is found through its cgroup"
        );

        purge(&name);
        assert!(!alive(pid), "purge ends the orphaned container");
        assert!(mounts_under(&dir).is_empty() && !dir.exists() && !netns_path(&name).exists());
    }

    #[test]
    fn stale_leftovers_of_dead_runs_are_swept() {
        require_root("the sweep self-test");
        // pid 0 never names a live test process.
        let name = format!("{TEST_PREFIX}0-sweep-h1");
        purge(&name);
        let ns = Netns::create(&name).unwrap();
        std::mem::forget(ns);
        fs::create_dir_all(host_dir(&name).join("x")).unwrap();
        sweep_stale();
        assert!(!netns_path(&name).exists());
        assert!(!host_dir(&name).exists());
    }
}
