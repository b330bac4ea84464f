//! A simulated LAN: one network namespace holding a bridge, each member
//! (a [`crate::Host`] or a bare [`Netns`]) plugged in by a veth pair: `eth0`
//! in the member, a port of the bridge in the LAN's namespace.
//!
//! Faults are made on the LAN side, where the members cannot see them, as on
//! a real network:
//! - **cut / reconnect**: the member's bridge port goes down / up (its `eth0`
//!   loses carrier, nothing reaches it or leaves it);
//! - **block / unblock**: the bridge stops forwarding IPv4 between two
//!   members (nftables rules in the `bridge` family of the LAN's namespace,
//!   so TCP, UDP and ICMP alike are dropped silently and counted; ARP still
//!   passes, as through a firewall);
//! - **capture**: `tcpdump` on a member's bridge port, into a file that is
//!   then decoded (`-T vxlan` for the overlay's UDP).

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::CMD_TIMEOUT;
use crate::cleanup::{host_dir, kill, purge, remove_tree};
use crate::command::{Output, check, run, wait_child};
use crate::netns::Netns;
use crate::poll::{wait_for, wait_until};
use crate::prereq::require_program;

/// The bridge in the LAN's namespace.
pub const LAN_BRIDGE: &str = "lan0";
/// MTU of the LAN: every member's `eth0` and every bridge port.
pub const LAN_MTU: u32 = 1500;
/// The member's end of its veth pair.
pub const LAN_IFNAME: &str = "eth0";
/// The nftables table (family `bridge`) holding the blocks.
const NFT_TABLE: &str = "wvlan";
/// How long a reconnected port may take to carry frames again.
const CARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long tcpdump may take to start capturing.
const CAPTURE_START_TIMEOUT: Duration = Duration::from_secs(20);

/// One member's place on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPort {
    /// The bridge port in the LAN's namespace (the veth peer of the member's `eth0`).
    pub port: String,
    /// The member's network namespace.
    pub member: String,
    /// `eth0`'s address.
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl LanPort {
    /// `addr/prefix_len`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix_len)
    }
}

/// The LAN guard: its namespace (`<name>`, holding bridge [`LAN_BRIDGE`]) and
/// a directory for captures (`$TMPDIR/<name>`). Drop deletes both; the
/// members' `eth0`s go with their ports.
#[derive(Debug)]
pub struct Lan {
    netns: Option<Netns>,
    dir: PathBuf,
}

impl Lan {
    /// Creates LAN `name` (leftovers of an earlier one of that name are removed first).
    pub fn create(name: &str) -> Result<Self> {
        purge(name);
        let dir = host_dir(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lan = Self {
            netns: Some(Netns::create(name)?),
            dir,
        };
        lan.ip(&[
            "link",
            "add",
            LAN_BRIDGE,
            "mtu",
            &LAN_MTU.to_string(),
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        lan.ip(&["link", "set", LAN_BRIDGE, "up"])?;
        Ok(lan)
    }

    pub const fn netns(&self) -> &Netns {
        self.netns
            .as_ref()
            .expect("a LAN has a netns until dropped")
    }

    pub fn name(&self) -> &str {
        self.netns().name()
    }

    /// The LAN's directory (captures go there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        self.netns().ip(args)
    }

    /// Plugs `member` in: a veth pair, `eth0` (MTU [`LAN_MTU`], address
    /// `cidr`, up) in the member, `port` on the bridge (up).
    pub fn attach(&self, member: &Netns, port: &str, cidr: &str) -> Result<LanPort> {
        let (addr, prefix_len) = parse_cidr(cidr)?;
        ensure!(
            !port.is_empty() && port.len() <= 15,
            "LAN port name {port:?} must have 1 to 15 characters"
        );
        let mtu = LAN_MTU.to_string();
        self.ip(&[
            "link",
            "add",
            port,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            LAN_IFNAME,
            "netns",
            member.name(),
            "mtu",
            &mtu,
        ])
        .with_context(|| format!("plugging {} into LAN {}", member.name(), self.name()))?;
        self.ip(&["link", "set", port, "master", LAN_BRIDGE, "up"])?;
        member.ip(&["addr", "add", cidr, "dev", LAN_IFNAME])?;
        member.ip(&["link", "set", LAN_IFNAME, "up"])?;
        Ok(LanPort {
            port: port.to_string(),
            member: member.name().to_string(),
            addr,
            prefix_len,
        })
    }

    /// Cuts the member off: its bridge port goes down, its `eth0` loses carrier.
    pub fn cut(&self, member: &LanPort) -> Result<()> {
        self.ip(&["link", "set", &member.port, "down"])?;
        Ok(())
    }

    /// Undoes [`Lan::cut`], and waits until the member's `eth0` has its carrier back.
    pub fn reconnect(&self, member: &LanPort) -> Result<()> {
        self.ip(&["link", "set", &member.port, "up"])?;
        wait_for(
            &format!("carrier on {}'s {LAN_IFNAME}", member.member),
            CARRIER_TIMEOUT,
            || {
                let mut c = std::process::Command::new("ip");
                c.args(["-n", &member.member, "-o", "link", "show", LAN_IFNAME]);
                let out = check(&mut c)?;
                ensure!(
                    out.contains("LOWER_UP") && !out.contains("NO-CARRIER"),
                    "{}",
                    out.trim()
                );
                Ok(())
            },
        )
    }

    /// Whether the member's bridge port is up (not cut).
    pub fn is_connected(&self, member: &LanPort) -> Result<bool> {
        let out = self.ip(&["-o", "link", "show", &member.port])?;
        Ok(out
            .split('>')
            .next()
            .is_some_and(|flags| flags.split([',', '<']).any(|f| f == "UP")))
    }

    /// Stops the bridge from forwarding IPv4 between `a` and `b`, both ways;
    /// dropped packets are counted ([`Lan::blocked_packets`]).
    pub fn block(&self, a: &LanPort, b: &LanPort) -> Result<()> {
        ensure!(a.addr != b.addr, "cannot block {} from itself", a.addr);
        self.nft_setup()?;
        let tag = block_tag(a, b);
        ensure!(
            self.block_rules(&tag)?.is_empty(),
            "{} and {} are blocked already",
            a.member,
            b.member
        );
        for (from, to) in [(a, b), (b, a)] {
            self.nft(&[
                "add",
                "rule",
                "bridge",
                NFT_TABLE,
                "forward",
                "ip",
                "saddr",
                &from.addr.to_string(),
                "ip",
                "daddr",
                &to.addr.to_string(),
                "counter",
                "drop",
                "comment",
                &format!("\"{tag}\""),
            ])?;
        }
        Ok(())
    }

    /// Undoes [`Lan::block`].
    pub fn unblock(&self, a: &LanPort, b: &LanPort) -> Result<()> {
        let rules = self.block_rules(&block_tag(a, b))?;
        ensure!(
            !rules.is_empty(),
            "{} and {} are not blocked",
            a.member,
            b.member
        );
        for (handle, _) in rules {
            self.nft(&[
                "delete",
                "rule",
                "bridge",
                NFT_TABLE,
                "forward",
                "handle",
                &handle.to_string(),
            ])?;
        }
        Ok(())
    }

    /// How many packets the block between `a` and `b` has dropped so far.
    pub fn blocked_packets(&self, a: &LanPort, b: &LanPort) -> Result<u64> {
        Ok(self
            .block_rules(&block_tag(a, b))?
            .into_iter()
            .map(|(_, packets)| packets)
            .sum())
    }

    fn nft(&self, args: &[&str]) -> Result<String> {
        let nft = require_program("nft", "nftables")?;
        let mut c = self.netns().command(nft);
        c.args(args);
        check(&mut c)
    }

    /// The table and its forward chain (idempotent).
    fn nft_setup(&self) -> Result<()> {
        self.nft(&["add", "table", "bridge", NFT_TABLE])?;
        self.nft(&[
            "add",
            "chain",
            "bridge",
            NFT_TABLE,
            "forward",
            "{ type filter hook forward priority 0; policy accept; }",
        ])?;
        Ok(())
    }

    /// (handle, packets) of the rules tagged `tag`.
    fn block_rules(&self, tag: &str) -> Result<Vec<(u64, u64)>> {
        let listing = match self.nft(&["-a", "list", "chain", "bridge", NFT_TABLE, "forward"]) {
            Ok(listing) => listing,
            // No table yet: nothing was ever blocked.
            Err(_) if self.nft(&["list", "tables"])?.contains(NFT_TABLE) => {
                bail!("cannot list the LAN's nftables rules")
            }
            Err(_) => return Ok(Vec::new()),
        };
        let quoted = format!("\"{tag}\"");
        Ok(listing
            .lines()
            .filter(|l| l.contains(&quoted))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let after = |key: &str| -> Option<u64> {
                    let i = words.iter().position(|w| *w == key)?;
                    words.get(i + 1)?.parse().ok()
                };
                Some((after("handle")?, after("packets").unwrap_or(0)))
            })
            .collect())
    }

    /// Starts `tcpdump -i <member's port> -nn -U -w <file> FILTER...` in the
    /// LAN's namespace and waits until it captures. Each capture gets a file
    /// of its own under the LAN's directory.
    pub fn capture(&self, member: &LanPort, filter: &[&str]) -> Result<Capture> {
        Capture::start(&self.netns().path(), &member.port, filter, &self.dir)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        drop(self.netns.take());
        remove_tree(&self.dir);
    }
}

fn block_tag(a: &LanPort, b: &LanPort) -> String {
    let (lo, hi) = if a.addr < b.addr { (a, b) } else { (b, a) };
    format!("block {} {}", lo.addr, hi.addr)
}

/// `a.b.c.d/n`.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("{cidr:?} is not a.b.c.d/n"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("address in {cidr:?}"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("prefix length in {cidr:?}"))?;
    ensure!(len <= 32, "prefix length in {cidr:?} exceeds 32");
    Ok((addr, len))
}

/// A running `tcpdump` writing to a file; stopped (SIGINT, so it flushes) by
/// [`Capture::stop`] or on drop. The file stays until the LAN is dropped.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Captures on `iface` of the network namespace at `netns` (a
    /// `/var/run/netns/<name>` or `/proc/<pid>/ns/net`) into a new file under `dir`.
    pub fn start(netns: &Path, iface: &str, filter: &[&str], dir: &Path) -> Result<Self> {
        let tcpdump = require_program("tcpdump", "tcpdump")?;
        let n = fs::read_dir(dir).map_or(0, Iterator::count);
        let file = dir.join(format!("capture-{iface}-{n}.pcap"));
        let log = dir.join(format!("capture-{iface}-{n}.log"));
        let log_file = File::create(&log)?;
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net={}", netns.display())).arg(&tcpdump);
        // --immediate-mode: each packet reaches the file as it is seen, not
        // when a ring block times out (a stopped capture would miss those).
        c.args(["-i", iface, "-nn", "--immediate-mode", "-U", "-w"])
            .arg(&file)
            .args(filter)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = c.spawn().context("cannot start tcpdump")?;
        let mut capture = Self {
            child: Some(child),
            file,
            log,
        };
        let started = wait_until("tcpdump to capture", CAPTURE_START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = capture.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow!("tcpdump exited at start ({status})")));
            }
            let log = fs::read_to_string(&capture.log).unwrap_or_default();
            log.contains("listening on").then_some(Ok(()))
        });
        match started.and_then(|r| r) {
            Ok(()) => Ok(capture),
            Err(e) => Err(e.context(format!(
                "tcpdump log:\n{}",
                fs::read_to_string(&capture.log).unwrap_or_default()
            ))),
        }
    }

    /// The pcap file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stops tcpdump (SIGINT: it writes what it has and exits).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        kill(&[child.id()], "INT");
        let status = wait_child(&mut child, Duration::from_secs(20), "tcpdump to stop")?;
        // tcpdump exits 0 on SIGINT; a signal death means it did not get to flush.
        ensure!(
            status.code().is_some(),
            "tcpdump ended by a signal ({status}):\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        Ok(())
    }

    /// Decodes what the file holds so far: `tcpdump -r FILE -nn ARGS...`
    /// (e.g. `["-T", "vxlan"]` for the overlay's UDP, `-v` for more). The
    /// capture goes on; a packet being written as it is read is left out.
    pub fn decoded(&self, args: &[&str]) -> Result<String> {
        let tcpdump = require_program("tcpdump", "tcpdump")?;
        let mut c = std::process::Command::new(tcpdump);
        c.arg("-r").arg(&self.file).arg("-nn").args(args);
        let out: Output = run(&mut c, CMD_TIMEOUT)?;
        if out.success() || out.stderr.contains("truncated dump file") {
            Ok(out.stdout)
        } else {
            Err(anyhow!("cannot decode the capture:\n{out}"))
        }
    }

    /// Polls [`Capture::decoded`] until `found` accepts it, up to `timeout`.
    pub fn wait_decoded(
        &self,
        args: &[&str],
        timeout: Duration,
        mut found: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        wait_for("the capture to show it", timeout, || {
            let text = self.decoded(args)?;
            if found(&text) {
                Ok(text)
            } else {
                Err(anyhow!("decoded so far:\n{text}"))
            }
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TEST_PREFIX, require_root};

    #[test]
    fn parses_cidrs() {
        assert_eq!(
            parse_cidr("192.168.250.3/24").unwrap(),
            (Ipv4Addr::new(192, 168, 250, 3), 24)
        );
        assert!(parse_cidr("192.168.250.3").is_err());
        assert!(parse_cidr("192.168.250.300/24").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
    }

    fn ping(from: &Netns, to: Ipv4Addr) -> bool {
        from.exec("ping", &["-c", "1", "-W", "1", &to.to_string()])
            .success()
    }

    fn wait_ping(from: &Netns, to: Ipv4Addr) {
        wait_until(
            &format!("{} to ping {to}", from.name()),
            Duration::from_secs(10),
            || ping(from, to).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Three namespaces on a LAN; cut, block and capture with plain pings
    /// and a kernel VXLAN device (the wire format the overlay must produce).
    #[test]
    fn lan_connects_cuts_blocks_and_captures() {
        require_root("the LAN self-test");
        let prefix = format!("{TEST_PREFIX}{}-lan", std::process::id());
        let lan = Lan::create(&format!("{prefix}-lan")).unwrap();
        let ns: Vec<Netns> = (1..=3)
            .map(|i| Netns::create(&format!("{prefix}-h{i}")).unwrap())
            .collect();
        let ports: Vec<LanPort> = ns
            .iter()
            .enumerate()
            .map(|(i, n)| {
                lan.attach(
                    n,
                    &format!("h{}", i + 1),
                    &format!("192.168.250.{}/24", i + 1),
                )
                .unwrap()
            })
            .collect();
        let eth0 = ns[0].links().unwrap();
        let eth0 = eth0.iter().find(|l| l.name == LAN_IFNAME).unwrap();
        assert_eq!(eth0.mtu, Some(LAN_MTU));
        assert!(eth0.up);
        for (i, j) in [(0, 1), (1, 2), (0, 2), (2, 0)] {
            wait_ping(&ns[i], ports[j].addr);
        }

        // Cut h3: nobody reaches it, it reaches nobody; reconnect: back.
        lan.cut(&ports[2]).unwrap();
        assert!(!lan.is_connected(&ports[2]).unwrap());
        assert!(!ping(&ns[0], ports[2].addr));
        assert!(!ping(&ns[2], ports[1].addr));
        assert!(ping(&ns[0], ports[1].addr), "h1 and h2 are not affected");
        lan.reconnect(&ports[2]).unwrap();
        assert!(lan.is_connected(&ports[2]).unwrap());
        wait_ping(&ns[0], ports[2].addr);
        wait_ping(&ns[2], ports[1].addr);

        // Block h1 <-> h3: ICMP, TCP and UDP are dropped; h2 still reaches both.
        lan.block(&ports[0], &ports[2]).unwrap();
        assert!(lan.block(&ports[2], &ports[0]).is_err(), "blocked twice");
        assert!(!ping(&ns[0], ports[2].addr));
        assert!(!ping(&ns[2], ports[0].addr));
        assert!(ping(&ns[1], ports[0].addr) && ping(&ns[1], ports[2].addr));
        let h3 = ports[2].addr;
        let tcp = ns[0]
            .run_inside(move || {
                std::net::TcpStream::connect_timeout(&(h3, 9).into(), Duration::from_millis(500))
                    .map(drop)
            })
            .unwrap();
        assert!(tcp.is_err(), "a TCP SYN must not cross the block");
        ns[0]
            .run_inside(move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                s.send_to(b"blocked", (h3, 6784)).unwrap();
            })
            .unwrap();
        let dropped = lan.blocked_packets(&ports[0], &ports[2]).unwrap();
        assert!(
            dropped >= 4,
            "two pings, a SYN and a datagram were dropped and counted: {dropped}"
        );
        lan.unblock(&ports[2], &ports[0]).unwrap();
        assert!(
            lan.unblock(&ports[0], &ports[2]).is_err(),
            "unblocked twice"
        );
        wait_ping(&ns[0], ports[2].addr);
        wait_ping(&ns[2], ports[0].addr);

        // Capture: a kernel VXLAN between h1 and h2 on port 6784, pinged through.
        for (i, local, remote, inner) in [(0, 1, 2, "10.0.1.1/24"), (1, 2, 1, "10.0.1.2/24")] {
            let n = &ns[i];
            n.ip(&[
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                "42",
                "dstport",
                "6784",
                "local",
                &format!("192.168.250.{local}"),
                "remote",
                &format!("192.168.250.{remote}"),
                "dev",
                LAN_IFNAME,
            ])
            .unwrap();
            n.ip(&["addr", "add", inner, "dev", "vx0"]).unwrap();
            n.ip(&["link", "set", "vx0", "up"]).unwrap();
        }
        let mut capture = lan.capture(&ports[0], &["udp", "port", "6784"]).unwrap();
        wait_ping(&ns[0], Ipv4Addr::new(10, 0, 1, 2));
        let decoded = capture
            .wait_decoded(&["-T", "vxlan"], Duration::from_secs(10), |text| {
                text.contains("ICMP echo reply")
            })
            .unwrap();
        capture.stop().unwrap();
        assert!(
            decoded.contains("VXLAN") && decoded.contains("vni 42"),
            "VXLAN headers:\n{decoded}"
        );
        assert!(
            decoded.contains("10.0.1.1 > 10.0.1.2: ICMP echo request")
                && decoded.contains("10.0.1.2 > 10.0.1.1: ICMP echo reply"),
            "the inner ICMP:\n{decoded}"
        );
        let dir = lan.dir().to_path_buf();
        drop(capture);
        drop(ns);
        drop(lan);
        assert!(!dir.exists());
        for name in ["lan", "h1", "h2", "h3"] {
            assert!(!crate::cleanup::netns_path(&format!("{prefix}-{name}")).exists());
        }
    }
}
