//! Where an agent keeps its things, and how it is launched. Every path can be
//! set by flag or environment variable, so that several agents run side by
//! side on one machine (one per simulated host), each CLI call reaching its own.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::peer_name::PeerName;

/// Name of the bridge every container port is plugged into.
pub const BRIDGE: &str = "weave";
/// The agent's own port on the bridge, and its other end, where the agent
/// reads and writes frames (the XDP program sits there).
pub const DATAPATH_BRIDGE_END: &str = "vethwe-bridge";
pub const DATAPATH_END: &str = "vethwe-datapath";
/// Host-side container ports are `vethwepl<pid>`; the container side is
/// created as `vethwepg<pid>` and renamed `ethwe` inside the container.
pub const CONTAINER_PORT_PREFIX: &str = "vethwepl";
pub const GUEST_TMP_PREFIX: &str = "vethwepg";
pub const CONTAINER_IFNAME: &str = "ethwe";
/// Bytes VXLAN adds around a container's frame: outer IPv4 (20), UDP (8),
/// VXLAN (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The underlay MTU assumed when no interface tells us better.
pub const FALLBACK_UNDERLAY_MTU: u32 = 1500;
/// Weave's ports: gossip over TCP, frames over UDP.
pub const DEFAULT_PORT: u16 = 6783;
pub const DEFAULT_DATA_PORT: u16 = 6784;
/// Weave's read-only HTTP endpoint (status, report, metrics, topology page).
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:6782";
/// Where Docker finds legacy plugins: the network and IPAM driver `weave`.
pub const DEFAULT_PLUGIN_SOCKET: &str = "/run/docker/plugins/weave.sock";
/// The managed Docker plugin Swarm needs (`cargo xtask plugin` builds it
/// as `weave-rs/net-plugin:VERSION`): `weave reset` removes any version.
pub const MANAGED_PLUGIN: &str = "weave-rs/net-plugin";

#[derive(Args, Clone, Debug)]
pub struct Paths {
    /// The agent's control socket (root only).
    #[arg(
        long,
        env = "WEAVE_SOCKET",
        default_value = "/run/weave/weave.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Where the agent keeps its state and log. Lost while containers run,
    /// the next launch rebuilds their records from the kernel and claims
    /// their addresses back (under a new peer name: `weave rmpeer` the old
    /// one on another peer, as in Weave).
    #[arg(
        long,
        env = "WEAVE_STATE_DIR",
        default_value = "/var/lib/weave",
        global = true
    )]
    pub state_dir: PathBuf,
    /// The Docker Engine API endpoint that run, attach, detach and reset use.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock",
        global = true
    )]
    pub docker_host: String,
}

impl Paths {
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    /// Held (flock) by the running agent: at most one agent per socket.
    pub fn lock_file(&self) -> PathBuf {
        let mut p = self.socket.clone().into_os_string();
        p.push(".lock");
        p.into()
    }
}

/// Options of `weave launch` that the agent runs with.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct LaunchOptions {
    /// Range that automatic addresses are allocated from, divided among
    /// all peers (give every peer the same one). Relaunching with another
    /// range discards the saved allocation ring, as Weave does; containers
    /// keep their addresses, and those outside the new range are named in
    /// the log and in `weave status ipam`. An empty value (`--ipalloc-range
    /// ""`) turns IP allocation off, as in Weave: containers get only
    /// explicit addresses, checked against this host's only.
    #[arg(long, default_value = crate::ipam::DEFAULT_RANGE, value_name = "CIDR")]
    pub ipalloc_range: IpallocRange,
    /// Subnet used when a container is given no address (default: the whole range).
    #[arg(long)]
    pub ipalloc_default_subnet: Option<Ipv4Net>,
    /// How the allocation ring starts, as in Weave. `consensus[=N]`: a
    /// majority of N peers (default 1 + the peers named at launch) must
    /// agree first, so that groups started apart never start two rings; a
    /// peer launched alone with no peers starts it on its first allocation.
    /// `seed=NAME,...`: the named peers (peer names, as `--name`) share the
    /// range from the start, no agreement needed; give every peer the same
    /// list. `observer`: this peer never starts the ring nor takes a share
    /// at the start; it gets space from the others when it needs some.
    #[arg(long, default_value = "consensus", value_name = "MODE")]
    #[serde(default)]
    pub ipalloc_init: IpallocInit,
    /// Peers to connect to (host or host:port), as with `weave connect`.
    /// Named, they are the targets; the targets saved by an earlier launch
    /// or `connect` are used only when none are named, as in Weave.
    #[arg(value_name = "PEER")]
    pub peers: Vec<String>,
    /// MTU of the bridge and of the containers' ethwe (default: the underlay
    /// MTU minus the 50 bytes of VXLAN encapsulation, and 24 more for the
    /// counter and tag of each sealed frame in password mode).
    #[arg(long, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub mtu: Option<u32>,
    /// TCP port for the control connections between peers.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// UDP port for the encapsulated frames between peers.
    #[arg(long, default_value_t = DEFAULT_DATA_PORT)]
    pub data_port: u16,
    /// Address of the read-only HTTP endpoint: `/status`, `/report` (JSON),
    /// `/metrics` (Prometheus) and a live topology page at `/`. It answers
    /// GET and HEAD only and never takes a command. Localhost by default;
    /// `0.0.0.0:6782` lets a Prometheus elsewhere scrape it (anyone who can
    /// reach the port then sees the mesh's status). `off` or an empty value
    /// turns it off.
    #[arg(long, env = "WEAVE_STATUS_ADDR", default_value = DEFAULT_STATUS_ADDR, value_name = "ADDR:PORT")]
    pub status_addr: StatusAddr,
    /// Do not connect to peers learnt from other peers (only to targets).
    #[arg(long)]
    pub no_discovery: bool,
    /// Most connections to other peers; more are refused (counted as
    /// `connections_over_limit`). A full mesh of N peers needs N - 1.
    #[arg(long, default_value_t = crate::mesh::DEFAULT_CONN_LIMIT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=crate::mesh::MAX_CONNECTIONS_PER_PEER as u64))]
    #[serde(default = "default_conn_limit")]
    pub conn_limit: usize,
    /// Data plane between hosts: `fastdp` (unencrypted frames between peers
    /// that both run it are encapsulated in VXLAN by eBPF in the kernel;
    /// everything else takes xdp), `xdp` (eBPF tags and redirects frames
    /// into an `AF_XDP` socket; batched VXLAN over UDP), `plain` (a capture
    /// socket and UDP), or `auto` (fastdp without a password, else xdp, where
    /// they start, else plain, with the reason in the log and in `weave status`).
    #[arg(long, value_enum, env = "WEAVE_DATAPLANE", default_value_t = DataplaneChoice::Auto)]
    pub dataplane: DataplaneChoice,
    /// Busy polling, for hosts with a core to spare: the `AF_XDP` data
    /// plane's forwarding (xdp, and what fastdp leaves to it) runs on one
    /// thread that never sleeps, so no packet waits for a thread to wake
    /// up. Lowers latency; costs a core while the agent runs, traffic or
    /// not. No effect on the plain data plane.
    #[arg(long, env = "WEAVE_BUSY_POLL")]
    #[serde(default)]
    pub busy_poll: bool,
    /// This peer's name (default: random, kept across restarts).
    #[arg(long)]
    pub name: Option<PeerName>,
    /// This peer's nickname (default: the hostname).
    #[arg(long, env = "WEAVE_NICKNAME")]
    pub nickname: Option<String>,
    /// Password mode: peers must share this password; they authenticate
    /// each other and encrypt both the control connections and every frame
    /// between hosts. Prefer the environment variable or --password-file:
    /// a command line is visible to every user while it runs.
    #[arg(
        long,
        env = "WEAVE_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    #[serde(skip)]
    pub password: Option<Password>,
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub password_file: Option<PathBuf>,
    /// Password mode: the cipher of the frames between hosts. `auto` offers
    /// AES-256-GCM where this CPU has AES instructions (2-3 times as fast
    /// there) and uses it with every peer that offers it too,
    /// ChaCha20-Poly1305 with the others; `chacha20-poly1305` never offers
    /// AES. `weave status connections` shows each connection's.
    #[arg(long, value_enum, env = "WEAVE_CIPHER", default_value_t = CipherChoice::Auto)]
    #[serde(default)]
    pub cipher: CipherChoice,
    /// Do not run weaveDNS (containers then keep Docker's resolver).
    #[arg(long)]
    #[serde(default)]
    pub no_dns: bool,
    /// The domain weaveDNS answers for: a container named `web` is
    /// `web.DOMAIN`; names outside it go to the upstream resolvers.
    #[arg(long, default_value = crate::dns::DEFAULT_DOMAIN, value_parser = parse_domain)]
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// Time to live of weaveDNS's answers, in seconds.
    #[arg(long, default_value_t = crate::dns::DEFAULT_TTL)]
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl: u32,
    /// Where weaveDNS listens, and the nameserver containers are given: an
    /// IPv4 address that the agent puts on the weave bridge (a /32), which
    /// every container reaches through a route of its own whatever its
    /// subnet; the port defaults to 53.
    #[arg(long, default_value = crate::dns::DEFAULT_LISTEN, value_parser = parse_dns_listen, value_name = "ADDR[:PORT]")]
    #[serde(default = "default_dns_listen")]
    pub dns_listen_address: std::net::SocketAddrV4,
    /// The resolv.conf whose nameservers answer the names outside the domain.
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "PATH")]
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
    /// The Docker network and IPAM plugin's socket (`docker network create
    /// -d weave --ipam-driver weave`); Docker names the plugin after the
    /// file. `off` or an empty value turns the plugin off.
    #[arg(long, env = "WEAVE_PLUGIN_SOCKET", default_value = DEFAULT_PLUGIN_SOCKET, value_name = "PATH")]
    pub plugin_socket: PluginSocket,
}

// Defaults for options saved before weaveDNS existed (serde), the same as
// clap's.
fn default_dns_domain() -> String {
    crate::dns::DEFAULT_DOMAIN.into()
}

const fn default_dns_ttl() -> u32 {
    crate::dns::DEFAULT_TTL
}

fn default_resolv_conf() -> PathBuf {
    "/etc/resolv.conf".into()
}

fn default_dns_listen() -> std::net::SocketAddrV4 {
    parse_dns_listen(crate::dns::DEFAULT_LISTEN).unwrap_or_else(|_| {
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(169, 254, 53, 53), 53)
    })
}

/// `ADDR` or `ADDR:PORT`; a specific unicast IPv4 address.
fn parse_dns_listen(s: &str) -> Result<std::net::SocketAddrV4, String> {
    let addr = s
        .parse::<std::net::SocketAddrV4>()
        .or_else(|_| s.parse().map(|ip| std::net::SocketAddrV4::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IPv4 address (with an optional :PORT)"))?;
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!(
            "{ip} cannot be the DNS address: containers need one they can reach on the bridge"
        ));
    }
    Ok(addr)
}

/// A domain name, stored lower case with the trailing dot.
fn parse_domain(s: &str) -> Result<String, String> {
    let lower = s.trim().to_ascii_lowercase();
    let dotted = if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    };
    if crate::dns::records::valid_name(&dotted) {
        Ok(dotted)
    } else {
        Err(format!("{s:?} is not a valid domain name"))
    }
}

/// A password, never printed (`Debug` shows nothing) and wiped when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Password {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the password is empty".into());
        }
        Ok(Self(Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// `--ipalloc-init`: how the allocation ring starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpallocInit {
    /// Agreement by a majority of this many peers (`None`: 1 + the peers
    /// named at launch).
    Consensus(Option<usize>),
    /// These peers share the range from the start.
    Seed(Vec<PeerName>),
    Observer,
}

impl Default for IpallocInit {
    fn default() -> Self {
        Self::Consensus(None)
    }
}

impl IpallocInit {
    /// The number of peers a consensus expects, given `named` peers at
    /// launch; `None` for seed and observer.
    pub const fn expected_peers(&self, named: usize) -> Option<usize> {
        match self {
            Self::Consensus(Some(n)) => Some(*n),
            Self::Consensus(None) => Some(named + 1),
            Self::Seed(_) | Self::Observer => None,
        }
    }
}

impl FromStr for IpallocInit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected consensus, consensus=N, seed=NAME,... or observer";
        let s = s.trim();
        let (mode, value) = s.split_once('=').map_or((s, None), |(m, v)| (m, Some(v)));
        match (mode, value) {
            ("consensus", None) => Ok(Self::Consensus(None)),
            ("consensus", Some(n)) => match n.parse::<usize>() {
                Ok(n) if (1..=crate::ipam::MAX_PROPOSAL_PEERS).contains(&n) => {
                    Ok(Self::Consensus(Some(n)))
                }
                _ => Err(format!(
                    "consensus={n}: the number of peers must be 1 to {}",
                    crate::ipam::MAX_PROPOSAL_PEERS
                )),
            },
            ("seed", Some(names)) => {
                let seeds = names
                    .split(',')
                    .map(|n| {
                        n.trim().parse::<PeerName>().map_err(|_| {
                            format!(
                                "seed: {n:?} is not a peer name (like 02:00:00:00:00:01, as --name)"
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if seeds.len() > crate::ipam::MAX_PROPOSAL_PEERS {
                    return Err(format!(
                        "seed: at most {} peers",
                        crate::ipam::MAX_PROPOSAL_PEERS
                    ));
                }
                Ok(Self::Seed(seeds))
            }
            ("observer", None) => Ok(Self::Observer),
            _ => Err(format!("{s:?}: {usage}")),
        }
    }
}

impl fmt::Display for IpallocInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Consensus(None) => f.write_str("consensus"),
            Self::Consensus(Some(n)) => write!(f, "consensus={n}"),
            Self::Seed(seeds) => {
                let names: Vec<String> = seeds.iter().map(ToString::to_string).collect();
                write!(f, "seed={}", names.join(","))
            }
            Self::Observer => f.write_str("observer"),
        }
    }
}

/// `--ipalloc-range`: the allocation range, or none (IP allocation off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpallocRange(pub Option<Ipv4Net>);

impl FromStr for IpallocRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(None));
        }
        s.parse().map(|r| Self(Some(r))).map_err(|_| {
            format!("{s:?} is not a CIDR like 10.32.0.0/12 (or \"\" to turn IP allocation off)")
        })
    }
}

impl fmt::Display for IpallocRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => r.fmt(f),
            None => f.write_str(""),
        }
    }
}

/// `--status-addr`: where the HTTP endpoint listens, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAddr(pub Option<SocketAddr>);

impl FromStr for StatusAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("{s:?} is not an address and port like 127.0.0.1:6782 (or `off`)"))
    }
}

impl fmt::Display for StatusAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// `--plugin-socket`: where the Docker plugin listens, or nowhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSocket(pub Option<PathBuf>);

impl FromStr for PluginSocket {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        let path = PathBuf::from(s);
        if path.is_relative() || path.file_name().is_none() {
            return Err(format!(
                "{s:?} is not an absolute path to a socket file (or `off`)"
            ));
        }
        Ok(Self(Some(path)))
    }
}

impl fmt::Display for PluginSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => p.display().fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// `weave launch --cipher`: which ciphers password mode offers peers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherChoice {
    /// AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305.
    #[default]
    Auto,
    /// ChaCha20-Poly1305 only.
    #[value(name = "chacha20-poly1305")]
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl CipherChoice {
    /// Whether this agent offers AES-256-GCM to its peers.
    pub fn offers_aes(self) -> bool {
        self == Self::Auto && crate::overlay::hardware_aes()
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataplaneChoice {
    Auto,
    Fastdp,
    Xdp,
    Plain,
}

impl LaunchOptions {
    /// The password, from --password / `WEAVE_PASSWORD` or --password-file.
    pub fn password(&self) -> Result<Option<Password>, String> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the password file {}: {e}", path.display()))?,
        );
        let first = text.lines().next().unwrap_or_default();
        first
            .parse()
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The allocation range; `None` with IP allocation off.
    pub fn range(&self) -> Option<Ipv4Net> {
        self.ipalloc_range.0.map(|r| r.trunc())
    }

    /// The default subnet; with IP allocation off, the default range's
    /// (unused: nothing is allocated).
    pub fn default_subnet(&self) -> Ipv4Net {
        self.ipalloc_default_subnet
            .or_else(|| self.range())
            .unwrap_or_else(|| crate::ipam::DEFAULT_RANGE.parse().expect("a valid CIDR"))
            .trunc()
    }

    /// Checks what clap cannot: the default subnet must lie inside the range.
    pub fn validate(&self) -> Result<(), String> {
        let Some(range) = self.range() else {
            return match self.ipalloc_default_subnet {
                Some(_) => Err(
                    "--ipalloc-default-subnet needs an allocation range (--ipalloc-range is empty)"
                        .into(),
                ),
                None => Ok(()),
            };
        };
        let subnet = self.default_subnet();
        if !range.contains(&subnet) {
            return Err(format!(
                "--ipalloc-default-subnet {subnet} is not inside --ipalloc-range {range}"
            ));
        }
        if range.prefix_len() > 30 {
            return Err(format!(
                "--ipalloc-range {range} is too small (at most /30)"
            ));
        }
        Ok(())
    }
}

const fn default_conn_limit() -> usize {
    crate::mesh::DEFAULT_CONN_LIMIT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LaunchOptions, clap::Error> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: LaunchOptions,
        }
        Cli::try_parse_from(std::iter::once("launch").chain(args.iter().copied()))
            .map(|c| c.options)
    }

    #[test]
    fn plugin_socket_is_an_absolute_path_or_off() {
        let parse = |s: &str| s.parse::<PluginSocket>();
        assert_eq!(
            parse(DEFAULT_PLUGIN_SOCKET).unwrap().0,
            Some(PathBuf::from("/run/docker/plugins/weave.sock"))
        );
        assert_eq!(parse("off").unwrap(), PluginSocket(None));
        assert_eq!(parse("").unwrap().to_string(), "off");
        assert!(parse("weave.sock").is_err());
    }

    #[test]
    fn ipalloc_init_takes_weaves_forms_and_refuses_the_rest() {
        let init = |s: &str| s.parse::<IpallocInit>();
        assert_eq!(init("consensus"), Ok(IpallocInit::Consensus(None)));
        assert_eq!(init("consensus=5"), Ok(IpallocInit::Consensus(Some(5))));
        assert_eq!(init("observer"), Ok(IpallocInit::Observer));
        let seeds = init("seed=02:00:00:00:00:01,02:00:00:00:00:02").unwrap();
        assert_eq!(
            seeds.to_string(),
            "seed=02:00:00:00:00:01,02:00:00:00:00:02"
        );
        assert_eq!(seeds.expected_peers(3), None);
        assert_eq!(IpallocInit::Consensus(None).expected_peers(2), Some(3));
        for bad in [
            "consensus=0",
            "consensus=x",
            "seed=",
            "seed=h1",
            "observer=1",
            "paxos",
            "",
        ] {
            assert!(init(bad).is_err(), "{bad} accepted");
        }
        let parsed = parse(&["--ipalloc-init", "consensus=3"]).unwrap();
        assert_eq!(parsed.ipalloc_init, IpallocInit::Consensus(Some(3)));
        assert_eq!(
            parse(&[]).unwrap().ipalloc_init,
            IpallocInit::Consensus(None)
        );
    }

    #[test]
    fn an_empty_ipalloc_range_turns_ip_allocation_off() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: LaunchOptions,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("launch").chain(args.iter().copied()))
                .map(|c| c.options)
        };
        let default = parse(&[]).unwrap();
        assert_eq!(default.range(), Some("10.32.0.0/12".parse().unwrap()));
        let off = parse(&["--ipalloc-range", ""]).unwrap();
        assert_eq!(off.range(), None);
        assert_eq!(off.validate(), Ok(()));
        // Through the JSON that `launch` hands to the agent.
        let json = serde_json::to_string(&off).unwrap();
        let back: LaunchOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back.range(), None);
        let err = parse(&[
            "--ipalloc-range",
            "",
            "--ipalloc-default-subnet",
            "10.32.1.0/24",
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.contains("needs an allocation range"), "{err}");
        assert!(parse(&["--ipalloc-range", "bogus"]).is_err());
    }

    #[test]
    fn busy_polling_is_off_unless_asked_and_reaches_the_agent() {
        assert!(!parse(&[]).unwrap().busy_poll);
        let on = parse(&["--busy-poll"]).unwrap();
        assert!(on.busy_poll);
        // Through the JSON that `launch` hands to the agent; options an
        // older `weave` wrote lack the field and mean off.
        let json = serde_json::to_value(&on).unwrap();
        let back: LaunchOptions = serde_json::from_value(json.clone()).unwrap();
        assert!(back.busy_poll);
        let mut older = json;
        older.as_object_mut().unwrap().remove("busy_poll");
        assert!(
            !serde_json::from_value::<LaunchOptions>(older)
                .unwrap()
                .busy_poll
        );
    }

    #[test]
    fn status_addr_is_an_address_or_off() {
        let parse = |s: &str| s.parse::<StatusAddr>();
        assert_eq!(
            parse(DEFAULT_STATUS_ADDR).unwrap().0,
            Some("127.0.0.1:6782".parse().unwrap())
        );
        assert_eq!(parse("").unwrap(), StatusAddr(None));
        assert_eq!(parse("off").unwrap(), StatusAddr(None));
        assert_eq!(parse("OFF").unwrap().to_string(), "off");
        assert_eq!(parse("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(
            parse("localhost:6782")
                .unwrap_err()
                .contains("not an address")
        );
        assert!(parse("127.0.0.1").is_err());
    }
}
