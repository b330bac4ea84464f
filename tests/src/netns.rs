//! Network namespaces (`ip netns`), their links, and running code or
//! programs inside them.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use crate::CMD_TIMEOUT;
use crate::cleanup::{kill_and_reap, netns_path, netns_pids, remove_bpf_pins};
use crate::command::{Output, check, cmd, run};

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
                let i = words.iter().position(|w| *w == key)?;
                words.get(i + 1)
            };
            Some(Link {
                index,
                name,
                master: after("master").map(ToString::to_string),
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

/// Packet and byte counters of one interface, from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// The counters of `dev` in `/proc/net/dev` text.
pub fn parse_link_stats(text: &str, dev: &str) -> Option<LinkStats> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(dev)?.strip_prefix(':'))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    Some(LinkStats {
        rx_bytes: *fields.first()?,
        rx_packets: *fields.get(1)?,
        tx_bytes: *fields.get(8)?,
        tx_packets: *fields.get(9)?,
    })
}

/// A network namespace created with `ip netns add`, deleted on drop together
/// with any process still inside it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (which must not exist) with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        ensure!(
            !netns_path(name).exists(),
            "network namespace {name} exists already"
        );
        check(&mut cmd("ip", ["netns", "add", name]))?;
        let ns = Self {
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

    /// Counters of interface `dev` of this namespace. Read from
    /// `/proc/self/net/dev` of a process inside it: `/sys/class/net` would
    /// show the sysfs mounted where the command runs, the machine's.
    pub fn link_stats(&self, dev: &str) -> Result<LinkStats> {
        let mut c = self.command("cat");
        c.arg("/proc/self/net/dev");
        let text = check(&mut c)?;
        parse_link_stats(&text, dev)
            .with_context(|| format!("no counters of {dev} in {}:\n{text}", self.name))
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

impl Netns {
    /// Runs `ip -n <name> args...`; its stdout, or an error showing everything.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        check(&mut c)
    }

    /// Runs `f` on a thread of its own that has entered this namespace, so
    /// that the sockets `f` opens live here. A panic in `f` goes on here.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(&self.path(), f)
    }
}

/// Runs `f` on a new thread inside the network namespace at `path`
/// (`/var/run/netns/<name>`, or `/proc/<pid>/ns/net` for a container). Only
/// that thread changes namespace; the caller's stays where it was.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || -> Result<T> {
            // SAFETY: `ns` is an open namespace file for the whole call; setns
            // moves only the calling thread, which is this fresh one.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into {}", path.display()));
            }
            Ok(f())
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_and_reap(&self.pids());
        remove_bpf_pins(&self.path());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TEST_PREFIX, require_root};

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
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
                    eth0: 1000      10    0    0    0     0          0         0   200000      20    0    0    0     0       0          0\n";
        assert_eq!(
            parse_link_stats(text, "eth0"),
            Some(LinkStats {
                rx_bytes: 1000,
                rx_packets: 10,
                tx_bytes: 200_000,
                tx_packets: 20
            })
        );
        assert_eq!(parse_link_stats(text, "eth1"), None);
        assert_eq!(parse_link_stats(text, "eth"), None);
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
}
