//! The mesh's snapshot for `weave status`: taken from the router's state
//! ([`snapshot`]), and rendered in Weave's shapes (`weave status peers`,
//! `connections`, `targets`, and the two counts of the summary).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mesh::connection_maker::{AttemptState, ConnectionMaker};
use crate::mesh::fastdp::{self, FastdpOff};
use crate::mesh::protocol::{Hello, PROTOCOL, PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION};
use crate::mesh::topology::Topology;
use crate::overlay::{DataCipher, ShortId};
use crate::peer_name::PeerName;

/// Inbound connections refused are shown for this long: the dialling side
/// sees its own attempts fail, this is the other side's view.
const REFUSED_SHOWN_FOR: Duration = Duration::from_mins(2);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    pub name: PeerName,
    pub nickname: String,
    pub short_id: ShortId,
    pub uid: u64,
    pub protocol: String,
    pub protocol_min_version: u32,
    pub protocol_max_version: u32,
    /// The address the control plane listens on.
    pub listen: SocketAddr,
    pub data_port: u16,
    pub discovery: bool,
    /// The userspace data plane's name (`xdp`, `plain`): what established
    /// connections without fastdp use (each says which in its `dataplane`).
    pub dataplane: String,
    pub mtu: u32,
    /// Every known peer, ourselves first, then by name.
    pub peers: Vec<PeerStatus>,
    /// Our connections, then the destinations being dialled or waited for.
    pub connections: Vec<ConnectionStatus>,
    /// As the user gave them.
    pub targets: Vec<String>,
    /// Unicast next hop of every reachable peer.
    pub routes: Vec<RouteStatus>,
    pub counters: MeshCounters,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: PeerName,
    pub nickname: String,
    pub short_id: ShortId,
    pub uid: u64,
    pub version: u64,
    pub connections: Vec<PeerConnectionStatus>,
}

/// A connection in a peer's gossiped entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConnectionStatus {
    pub name: PeerName,
    /// Empty when the peer at the other end is not known.
    pub nickname: String,
    pub address: SocketAddr,
    pub outbound: bool,
    pub established: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    /// Handshake done and confirmed.
    Established,
    /// An inbound connection in its handshake.
    Pending,
    /// Dialling, no failure yet.
    Connecting,
    /// Dialling again after a failure.
    Retrying,
    /// Waiting to retry (or never retrying).
    Failed,
}

impl ConnectionState {
    /// Weave's order for the counts.
    pub const ALL: [Self; 5] = [
        Self::Established,
        Self::Pending,
        Self::Retrying,
        Self::Failed,
        Self::Connecting,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Pending => "pending",
            Self::Connecting => "connecting",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// The peer's TCP address (established, pending) or the destination
    /// dialled (connecting, retrying, failed).
    pub address: String,
    pub outbound: bool,
    pub state: ConnectionState,
    pub peer: Option<PeerName>,
    pub nickname: Option<String>,
    /// Negotiated protocol version (established).
    pub version: Option<u32>,
    pub last_error: Option<String>,
    /// Failed: milliseconds until the next attempt; `None` means never.
    pub retry_in_ms: Option<u64>,
    /// Established in password mode: the connection and the frames to and
    /// from this peer are encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// Established in password mode: the cipher sealing the frames to and
    /// from this peer (`aes-256-gcm` where both ends offer it, else
    /// `chacha20-poly1305`; see `overlay::wire::cipher`). `None` otherwise,
    /// and from agents that predate the choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<DataCipher>,
    /// Established: the data plane carrying the frames to this peer,
    /// `fastdp` when the connection uses it, else the agent's own (`xdp`,
    /// `plain`). Empty otherwise, and from agents that predate it (the
    /// rendering then shows `MeshStatus::dataplane`).
    #[serde(default)]
    pub dataplane: String,
    /// Established, when this agent runs fastdp but this connection does
    /// not use it: why (`peer has no fastdp`, `password mode`...).
    #[serde(default)]
    pub fastdp_off: Option<String>,
    /// Established with a peer that sends data-path heartbeats: whether
    /// its UDP data reaches us. `None` otherwise (a peer that predates
    /// heartbeats: its data path is taken to be up).
    #[serde(default)]
    pub data_path: Option<DataPathStatus>,
    /// Established: since when (Unix time in milliseconds, by this
    /// agent's clock). A mesh is whole from the moment its last connection
    /// was established: `cargo xtask scale` reads it here.
    #[serde(default)]
    pub established_unix_ms: Option<u64>,
}

/// One connection's data path, from its heartbeats (`mesh::liveness`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPathStatus {
    pub state: DataPathState,
    /// Since the peer's last heartbeat (since the connection was
    /// established, if none came yet).
    pub seconds_since_heartbeat: u64,
    /// Down: the peer our frames to this one go through instead (its
    /// nickname), `None` when no peer relays.
    pub relay: Option<String>,
    /// Where the peer's heartbeats come from: its data address (behind a
    /// NAT, not the address of the TCP connection). `None` before the first.
    pub address: Option<SocketAddr>,
    /// The path MTU discovered by probes (`mesh::path_mtu`), when the path
    /// takes less than the overlay MTU: the largest packet of a container
    /// that reaches this peer in one piece. `None`: the overlay MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPathState {
    /// Heartbeats arrive (or the connection is new): frames go direct.
    Up,
    /// No heartbeat for a while: the connection carries control traffic
    /// only, frames go round it.
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub destination: PeerName,
    pub via: PeerName,
}

/// What the mesh dropped or refused, since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshCounters {
    /// Connections dropped for a frame over the size limit.
    pub oversized_frames: u64,
    /// Connections dropped for an undecodable or out-of-order message.
    pub garbled_messages: u64,
    /// Handshakes we refused (wrong protocol, version mismatch, ourselves...).
    pub handshakes_refused: u64,
    /// Handshakes the peer refused.
    pub refused_by_peer: u64,
    pub handshake_timeouts: u64,
    /// Established connections whose peer went silent.
    pub heartbeat_timeouts: u64,
    /// Connections dropped because the peer did not keep up.
    pub slow_peers_dropped: u64,
    /// Second connections to a peer closed by the tie-break.
    pub duplicate_connections: u64,
    /// Connections refused because of the connection limits.
    pub connections_over_limit: u64,
    /// Gossiped entries rejected (invalid, ours, or the topology full).
    pub gossip_entries_rejected: u64,
    /// Peers currently left out of routing: their short id is taken.
    pub short_id_collisions: u64,
    /// Times we chose another short id because a smaller name had ours.
    #[serde(default)]
    pub short_ids_rechosen: u64,
    /// IPAM messages refused (forged, looping, malformed).
    #[serde(default)]
    pub ipam_rejected: u64,
    /// IPAM messages dropped: the agent's queue was full, or no route.
    #[serde(default)]
    pub ipam_dropped: u64,
    /// Established connections that ended, for any reason (Weave's
    /// `weave_connection_terminations_total`).
    #[serde(default)]
    pub connections_terminated: u64,
    /// weaveDNS gossip dropped: the agent's queue or a peer's was full.
    #[serde(default)]
    pub dns_dropped: u64,
    /// Data-path heartbeats sent to peers (one a second per connection).
    #[serde(default)]
    pub heartbeats_sent: u64,
    /// Heartbeats accepted from peers.
    #[serde(default)]
    pub heartbeats_received: u64,
    /// Heartbeats refused: malformed, from no connected peer, a wrong tag
    /// (forged, or from a previous connection), or replayed.
    #[serde(default)]
    pub heartbeats_rejected: u64,
    /// Heartbeats lost here: the data plane's queue for them was full, or
    /// the kernel would not send ours.
    #[serde(default)]
    pub heartbeats_dropped: u64,
    /// Topology digests not answered: a peer sends one when the connection
    /// opens, and more are ignored.
    #[serde(default)]
    pub digests_ignored: u64,
}

impl MeshCounters {
    /// Every counter by name, in a fixed order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("oversized_frames", self.oversized_frames),
            ("garbled_messages", self.garbled_messages),
            ("handshakes_refused", self.handshakes_refused),
            ("refused_by_peer", self.refused_by_peer),
            ("handshake_timeouts", self.handshake_timeouts),
            ("heartbeat_timeouts", self.heartbeat_timeouts),
            ("slow_peers_dropped", self.slow_peers_dropped),
            ("duplicate_connections", self.duplicate_connections),
            ("connections_over_limit", self.connections_over_limit),
            ("gossip_entries_rejected", self.gossip_entries_rejected),
            ("short_id_collisions", self.short_id_collisions),
            ("short_ids_rechosen", self.short_ids_rechosen),
            ("ipam_rejected", self.ipam_rejected),
            ("ipam_dropped", self.ipam_dropped),
            ("connections_terminated", self.connections_terminated),
            ("dns_dropped", self.dns_dropped),
            ("heartbeats_sent", self.heartbeats_sent),
            ("heartbeats_received", self.heartbeats_received),
            ("heartbeats_rejected", self.heartbeats_rejected),
            ("heartbeats_dropped", self.heartbeats_dropped),
            ("digests_ignored", self.digests_ignored),
        ]
    }
}

impl ConnectionStatus {
    /// An inbound connection refused in its handshake, from `from`.
    pub(super) fn refused_inbound(from: SocketAddr, reason: &str) -> Self {
        Self {
            address: from.to_string(),
            outbound: false,
            state: ConnectionState::Failed,
            peer: None,
            nickname: None,
            version: None,
            last_error: Some(reason.to_string()),
            retry_in_ms: None,
            encrypted: false,
            cipher: None,
            dataplane: String::new(),
            fastdp_off: None,
            data_path: None,
            established_unix_ms: None,
        }
    }
}

/// What the router knows, borrowed for one [`snapshot`].
pub(super) struct Sources<'a> {
    pub me: PeerName,
    pub nickname: &'a str,
    pub uid: u64,
    /// The address the control plane listens on (the port actually bound).
    pub listen: SocketAddr,
    pub data_port: u16,
    /// The userspace data plane's name, for connections without fastdp.
    pub dataplane: &'a str,
    pub mtu: u32,
    pub topology: &'a Topology,
    /// The router's connections: established, or inbound in their handshake.
    pub live: Vec<LiveConnection<'a>>,
    /// Inbound connections refused, oldest first, with when.
    pub refused: &'a VecDeque<(Instant, ConnectionStatus)>,
    /// Targets and the destinations being dialled.
    pub maker: &'a ConnectionMaker,
    /// Unicast next hop by destination.
    pub next_hop: &'a BTreeMap<PeerName, PeerName>,
    pub counters: &'a MeshCounters,
}

/// One of the router's connections, as far as status needs it.
pub(super) struct LiveConnection<'a> {
    pub outbound: bool,
    /// The peer's TCP address: from the handshake, or (inbound) from accept.
    pub address: Option<SocketAddr>,
    /// Once established: the peer's hello and the version agreed on.
    pub established: Option<(&'a Hello, u32)>,
    /// Established: whether the connection uses fastdp (our address on it),
    /// or why not.
    pub fastdp: Result<Ipv4Addr, FastdpOff>,
    /// Established with heartbeats: its data path.
    pub data_path: Option<DataPathStatus>,
    /// Established: since when (Unix time in milliseconds).
    pub established_unix_ms: Option<u64>,
    /// Established in password mode: the cipher of its data frames.
    pub cipher: Option<DataCipher>,
}

/// The mesh's snapshot at `now`.
pub(super) fn snapshot(src: Sources<'_>, now: Instant) -> MeshStatus {
    let topology = src.topology;
    let nickname_of = |n: &PeerName| topology.get(n).map(|p| p.nickname.clone());
    let mut peers: Vec<PeerStatus> = topology
        .peers()
        .map(|p| PeerStatus {
            name: p.name,
            nickname: p.nickname.clone(),
            short_id: p.short_id,
            uid: p.uid,
            version: p.version,
            connections: p
                .connections
                .iter()
                .map(|c| PeerConnectionStatus {
                    name: c.peer,
                    nickname: nickname_of(&c.peer).unwrap_or_default(),
                    address: c.address,
                    outbound: c.outbound,
                    established: c.established,
                })
                .collect(),
        })
        .collect();
    peers.sort_by_key(|p| (p.name != src.me, p.name));

    let mut connections: Vec<ConnectionStatus> = src
        .live
        .iter()
        .filter_map(|c| match (c.established, c.address) {
            // Losers of a tie-break are gone from the router already.
            (Some((hello, version)), Some(addr)) => Some(ConnectionStatus {
                address: addr.to_string(),
                outbound: c.outbound,
                state: ConnectionState::Established,
                peer: Some(hello.name),
                nickname: Some(hello.nickname.clone()),
                version: Some(version),
                last_error: None,
                retry_in_ms: None,
                encrypted: hello.encrypted,
                cipher: c.cipher,
                dataplane: match c.fastdp {
                    Ok(_) => fastdp::NAME.to_string(),
                    Err(_) => src.dataplane.to_string(),
                },
                fastdp_off: c.fastdp.err().and_then(FastdpOff::reason).map(String::from),
                data_path: c.data_path.clone(),
                established_unix_ms: c.established_unix_ms,
            }),
            (None, Some(addr)) if !c.outbound => Some(ConnectionStatus {
                address: addr.to_string(),
                outbound: false,
                state: ConnectionState::Pending,
                peer: None,
                nickname: None,
                version: None,
                last_error: None,
                retry_in_ms: None,
                encrypted: false,
                cipher: None,
                dataplane: String::new(),
                fastdp_off: None,
                data_path: None,
                established_unix_ms: None,
            }),
            _ => None,
        })
        .collect();
    connections.extend(
        src.refused
            .iter()
            .filter(|(at, _)| now.duration_since(*at) < REFUSED_SHOWN_FOR)
            .map(|(_, c)| c.clone()),
    );
    connections.extend(src.maker.attempts(now).into_iter().map(|a| {
        let state = match a.state {
            AttemptState::Connecting => ConnectionState::Connecting,
            AttemptState::Retrying => ConnectionState::Retrying,
            AttemptState::Failed => ConnectionState::Failed,
        };
        ConnectionStatus {
            address: a.key.to_string(),
            outbound: true,
            state,
            peer: None,
            nickname: None,
            version: None,
            last_error: a.last_error,
            retry_in_ms: a
                .retry_in
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            encrypted: false,
            cipher: None,
            dataplane: String::new(),
            fastdp_off: None,
            data_path: None,
            established_unix_ms: None,
        }
    }));

    MeshStatus {
        name: src.me,
        nickname: src.nickname.to_string(),
        short_id: src.topology.ours().short_id,
        uid: src.uid,
        protocol: PROTOCOL.into(),
        protocol_min_version: PROTOCOL_MIN_VERSION,
        protocol_max_version: PROTOCOL_MAX_VERSION,
        listen: src.listen,
        data_port: src.data_port,
        discovery: src.maker.discovery(),
        dataplane: src.dataplane.to_string(),
        mtu: src.mtu,
        peers,
        connections,
        targets: src.maker.targets(),
        routes: src
            .next_hop
            .iter()
            .map(|(d, v)| RouteStatus {
                destination: *d,
                via: *v,
            })
            .collect(),
        counters: src.counters.clone(),
    }
}

const fn arrow(outbound: bool) -> &'static str {
    if outbound { "->" } else { "<-" }
}

impl MeshStatus {
    /// `weave status peers`: each peer, then its connections.
    pub fn render_peers(&self) -> String {
        let mut s = String::new();
        for p in &self.peers {
            let _ = writeln!(s, "{}({})", p.name, p.nickname);
            for c in &p.connections {
                let who = format!("{}({})", c.name, c.nickname);
                let state = if c.established {
                    "established"
                } else {
                    "pending"
                };
                let _ = writeln!(
                    s,
                    "   {} {:<21} {:<37} {}",
                    arrow(c.outbound),
                    c.address,
                    who,
                    state
                );
            }
        }
        s
    }

    /// `weave status connections`: one line per connection or destination.
    pub fn render_connections(&self) -> String {
        let mut s = String::new();
        for c in &self.connections {
            let who = match (&c.peer, &c.nickname) {
                (Some(p), Some(n)) => format!("{p}({n})"),
                (Some(p), None) => p.to_string(),
                _ => String::new(),
            };
            let info = match c.state {
                ConnectionState::Established => {
                    let mut dataplane = if c.dataplane.is_empty() {
                        self.dataplane.clone()
                    } else {
                        c.dataplane.clone()
                    };
                    if c.encrypted {
                        dataplane.insert_str(0, "encrypted ");
                    }
                    if let Some(why) = &c.fastdp_off {
                        let _ = write!(dataplane, " (fastdp off: {why})");
                    }
                    let mut mtu = match c.data_path.as_ref().and_then(|d| d.mtu) {
                        Some(path) => format!("{path} (path MTU; overlay {})", self.mtu),
                        None => self.mtu.to_string(),
                    };
                    if let Some(cipher) = c.cipher {
                        let _ = write!(mtu, " cipher={cipher}");
                    }
                    let data_path = c.data_path.as_ref().map_or_else(String::new, |d| {
                        if d.state == DataPathState::Up {
                            return String::new();
                        }
                        let relay = d.relay.as_ref().map_or_else(
                            || "no peer relays".to_string(),
                            |r| format!("relaying through {r}"),
                        );
                        format!(
                            ", data path: no heartbeat for {} s, {relay}",
                            d.seconds_since_heartbeat
                        )
                    });
                    format!("{dataplane:<6} {who} mtu={mtu}{data_path}")
                }
                // An inbound connection refused: no retry from this side.
                ConnectionState::Failed if !c.outbound => c.last_error.clone().unwrap_or_default(),
                ConnectionState::Pending => who,
                ConnectionState::Connecting => String::new(),
                ConnectionState::Retrying => c.last_error.clone().unwrap_or_default(),
                ConnectionState::Failed => {
                    let retry = match c.retry_in_ms {
                        Some(ms) => format!("in {:.1}s", ms as f64 / 1000.0),
                        None => "never".into(),
                    };
                    format!(
                        "{}, retry: {retry}",
                        c.last_error.as_deref().unwrap_or("failed")
                    )
                }
            };
            let line = format!(
                "{} {:<21} {:<11} {}",
                arrow(c.outbound),
                c.address,
                c.state,
                info
            );
            let _ = writeln!(s, "{}", line.trim_end());
        }
        s
    }

    /// `weave status targets`: one per line.
    pub fn render_targets(&self) -> String {
        self.targets.iter().fold(String::new(), |mut s, t| {
            s.push_str(t);
            s.push('\n');
            s
        })
    }

    /// After `Connections: ` in `weave status`, e.g. `3 (2 established, 1 failed)`.
    pub fn connection_counts(&self) -> String {
        let parts: Vec<String> = ConnectionState::ALL
            .iter()
            .filter_map(|state| {
                let n = self
                    .connections
                    .iter()
                    .filter(|c| c.state == *state)
                    .count();
                (n > 0).then(|| format!("{n} {state}"))
            })
            .collect();
        with_counts(self.connections.len(), &parts)
    }

    /// After `Peers: ` in `weave status`, e.g. `3 (with 6 established connections)`.
    pub fn peer_counts(&self) -> String {
        let all = self.peers.iter().flat_map(|p| &p.connections);
        let established = all.clone().filter(|c| c.established).count();
        let pending = all.filter(|c| !c.established).count();
        let mut parts = Vec::new();
        if established > 0 {
            parts.push(format!("{established} established"));
        }
        if pending > 0 {
            parts.push(format!("{pending} pending"));
        }
        if parts.is_empty() {
            self.peers.len().to_string()
        } else {
            format!(
                "{} (with {} connections)",
                self.peers.len(),
                parts.join(", ")
            )
        }
    }

    /// Established connections.
    pub fn established(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.state == ConnectionState::Established)
            .count()
    }
}

fn with_counts(total: usize, parts: &[String]) -> String {
    if parts.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", parts.join(", "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn name(i: u8) -> PeerName {
        PeerName(crate::mac::Mac([0xa6, 0x66, 0x4f, 0xa5, 0x8b, i]))
    }

    pub(crate) fn sample() -> MeshStatus {
        let link = |to: u8, addr: &str, outbound: bool, established: bool| PeerConnectionStatus {
            name: name(to),
            nickname: format!("host{to}"),
            address: addr.parse().unwrap(),
            outbound,
            established,
        };
        let peer = |i: u8, connections| PeerStatus {
            name: name(i),
            nickname: format!("host{i}"),
            short_id: ShortId::of(&name(i)),
            uid: 1,
            version: 1,
            connections,
        };
        MeshStatus {
            name: name(1),
            nickname: "host1".into(),
            short_id: ShortId::of(&name(1)),
            uid: 1,
            protocol: "weave-rs".into(),
            protocol_min_version: 1,
            protocol_max_version: 1,
            listen: "0.0.0.0:6783".parse().unwrap(),
            data_port: 6784,
            discovery: true,
            dataplane: "xdp".into(),
            mtu: 1376,
            peers: vec![
                peer(1, vec![link(2, "192.168.48.14:6783", true, true)]),
                peer(
                    2,
                    vec![
                        link(1, "192.168.48.13:6783", false, true),
                        link(3, "192.168.48.15:6783", true, false),
                    ],
                ),
            ],
            connections: vec![
                ConnectionStatus {
                    address: "192.168.48.14:6783".into(),
                    outbound: true,
                    state: ConnectionState::Established,
                    peer: Some(name(0x11)),
                    nickname: Some("host2".into()),
                    version: Some(1),
                    last_error: None,
                    encrypted: false,
                    cipher: None,
                    retry_in_ms: None,
                    dataplane: "fastdp".into(),
                    fastdp_off: None,
                    data_path: None,
                    established_unix_ms: None,
                },
                ConnectionStatus {
                    address: "192.168.48.17:41234".into(),
                    outbound: false,
                    state: ConnectionState::Established,
                    peer: Some(name(0x12)),
                    nickname: Some("host4".into()),
                    version: Some(1),
                    last_error: None,
                    encrypted: false,
                    cipher: None,
                    retry_in_ms: None,
                    dataplane: "xdp".into(),
                    fastdp_off: Some("peer has no fastdp".into()),
                    data_path: None,
                    established_unix_ms: None,
                },
                ConnectionStatus {
                    address: "192.168.48.15:6783".into(),
                    outbound: true,
                    state: ConnectionState::Failed,
                    peer: None,
                    nickname: None,
                    version: None,
                    last_error: Some("dial tcp 192.168.48.15:6783: connection refused".into()),
                    encrypted: false,
                    cipher: None,
                    retry_in_ms: Some(4200),
                    dataplane: String::new(),
                    fastdp_off: None,
                    data_path: None,
                    established_unix_ms: None,
                },
                ConnectionStatus {
                    address: "192.168.48.16:6783".into(),
                    outbound: true,
                    state: ConnectionState::Connecting,
                    peer: None,
                    nickname: None,
                    version: None,
                    last_error: None,
                    encrypted: false,
                    cipher: None,
                    retry_in_ms: None,
                    dataplane: String::new(),
                    fastdp_off: None,
                    data_path: None,
                    established_unix_ms: None,
                },
            ],
            targets: vec!["192.168.48.14".into(), "host3".into()],
            routes: vec![],
            counters: MeshCounters::default(),
        }
    }

    #[test]
    fn connections_render_like_weave() {
        assert_eq!(
            sample().render_connections(),
            "-> 192.168.48.14:6783    established fastdp a6:66:4f:a5:8b:11(host2) mtu=1376\n\
             <- 192.168.48.17:41234   established xdp (fastdp off: peer has no fastdp) a6:66:4f:a5:8b:12(host4) mtu=1376\n\
             -> 192.168.48.15:6783    failed      dial tcp 192.168.48.15:6783: connection refused, retry: in 4.2s\n\
             -> 192.168.48.16:6783    connecting\n"
        );
    }

    /// Password mode keeps its prefix and says why fastdp is off; a
    /// connection from an agent that predates the per-connection label
    /// shows the mesh's data plane, as before.
    #[test]
    fn encrypted_and_unlabelled_connections_render() {
        let mut st = sample();
        st.connections.truncate(2);
        st.connections[0].dataplane = "xdp".into();
        st.connections[0].encrypted = true;
        st.connections[0].fastdp_off = Some("password mode".into());
        let legacy = serde_json::json!({
            "address": "192.168.48.17:41234", "outbound": false, "state": "established",
            "peer": name(0x12), "nickname": "host4", "version": 1,
            "last_error": null, "retry_in_ms": null,
        });
        st.connections[1] = serde_json::from_value(legacy).unwrap();
        assert_eq!(st.connections[1].dataplane, "");
        assert_eq!(st.connections[1].fastdp_off, None);
        st.dataplane = "plain".into();
        assert_eq!(
            st.render_connections(),
            "-> 192.168.48.14:6783    established encrypted xdp (fastdp off: password mode) a6:66:4f:a5:8b:11(host2) mtu=1376\n\
             <- 192.168.48.17:41234   established plain  a6:66:4f:a5:8b:12(host4) mtu=1376\n"
        );
    }

    /// Each established connection is labelled with the data plane it
    /// uses; the reason fastdp is off is shown only when this agent runs it.
    #[test]
    fn the_snapshot_labels_each_connection_with_its_data_plane() {
        use crate::mesh::connection_maker::Backoff;
        use crate::mesh::protocol::PROTOCOL;
        use crate::mesh::topology::PeerInfo;

        let hello = |i: u8| Hello {
            protocol: PROTOCOL.into(),
            min_version: 1,
            max_version: 1,
            name: name(i),
            nickname: format!("host{i}"),
            uid: 1,
            nonce: 1,
            listen_port: 6783,
            data_port: 6784,
            encrypted: false,
            aes_gcm: false,
            fastdp: i == 2,
            heartbeats: false,
            heartbeat_key: None,
            path_mtu: false,
        };
        let (h2, h3, h4) = (hello(2), hello(3), hello(4));
        let live = |i: u8, h, fastdp| LiveConnection {
            outbound: true,
            address: Some(format!("10.0.0.{i}:6783").parse().unwrap()),
            established: Some((h, 1)),
            fastdp,
            data_path: None,
            established_unix_ms: None,
            cipher: None,
        };
        let topology = Topology::new(PeerInfo::new(name(1), "host1".into(), 1, 1));
        let maker = ConnectionMaker::new(true, Backoff::default(), 1);
        let st = snapshot(
            Sources {
                me: name(1),
                nickname: "host1",
                uid: 1,
                listen: "0.0.0.0:6783".parse().unwrap(),
                data_port: 6784,
                dataplane: "xdp",
                mtu: 1376,
                topology: &topology,
                live: vec![
                    live(2, &h2, Ok("10.0.0.1".parse().unwrap())),
                    live(3, &h3, Err(FastdpOff::PeerHasNone)),
                    live(4, &h4, Err(FastdpOff::NotHere)),
                ],
                refused: &VecDeque::new(),
                maker: &maker,
                next_hop: &BTreeMap::new(),
                counters: &MeshCounters::default(),
            },
            Instant::now(),
        );
        let labels: Vec<(&str, Option<&str>)> = st
            .connections
            .iter()
            .map(|c| (c.dataplane.as_str(), c.fastdp_off.as_deref()))
            .collect();
        assert_eq!(
            labels,
            [
                ("fastdp", None),
                ("xdp", Some("peer has no fastdp")),
                ("xdp", None)
            ]
        );
    }

    /// An encrypted connection names its cipher, in the line and the JSON.
    #[test]
    fn an_encrypted_connection_shows_its_cipher() {
        let mut st = sample();
        st.connections.truncate(1);
        st.connections[0].encrypted = true;
        st.connections[0].dataplane = "xdp".into();
        st.connections[0].cipher = Some(DataCipher::Aes256Gcm);
        assert_eq!(
            st.render_connections(),
            "-> 192.168.48.14:6783    established encrypted xdp a6:66:4f:a5:8b:11(host2) mtu=1376 cipher=aes-256-gcm\n"
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["connections"][0]["cipher"], "aes-256-gcm");
    }

    /// A connection whose data path is down says so, and through whom its
    /// frames go; one that is up adds nothing; both are machine-readable.
    #[test]
    fn a_dead_data_path_shows_its_relay() {
        let mut st = sample();
        st.connections.truncate(2);
        st.connections[0].data_path = Some(DataPathStatus {
            state: DataPathState::Down,
            seconds_since_heartbeat: 7,
            relay: Some("host3".into()),
            address: None,
            mtu: None,
        });
        st.connections[1].data_path = Some(DataPathStatus {
            state: DataPathState::Up,
            seconds_since_heartbeat: 0,
            relay: None,
            address: Some("192.168.48.17:6784".parse().unwrap()),
            mtu: Some(652),
        });
        assert_eq!(
            st.render_connections(),
            "-> 192.168.48.14:6783    established fastdp a6:66:4f:a5:8b:11(host2) mtu=1376, data path: no heartbeat for 7 s, relaying through host3\n\
             <- 192.168.48.17:41234   established xdp (fastdp off: peer has no fastdp) a6:66:4f:a5:8b:12(host4) mtu=652 (path MTU; overlay 1376)\n"
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(
            json["connections"][0]["data_path"],
            serde_json::json!({
                "state": "down", "seconds_since_heartbeat": 7,
                "relay": "host3", "address": null, "mtu": null,
            })
        );
        st.connections[0].data_path.as_mut().unwrap().relay = None;
        assert!(
            st.render_connections()
                .contains("no heartbeat for 7 s, no peer relays\n")
        );
    }

    #[test]
    fn peers_render_as_a_tree() {
        assert_eq!(
            sample().render_peers(),
            "a6:66:4f:a5:8b:01(host1)\n\
             \x20  -> 192.168.48.14:6783    a6:66:4f:a5:8b:02(host2)              established\n\
             a6:66:4f:a5:8b:02(host2)\n\
             \x20  <- 192.168.48.13:6783    a6:66:4f:a5:8b:01(host1)              established\n\
             \x20  -> 192.168.48.15:6783    a6:66:4f:a5:8b:03(host3)              pending\n"
        );
    }

    #[test]
    fn targets_and_counts() {
        let st = sample();
        assert_eq!(st.render_targets(), "192.168.48.14\nhost3\n");
        assert_eq!(
            st.connection_counts(),
            "4 (2 established, 1 failed, 1 connecting)"
        );
        assert_eq!(
            st.peer_counts(),
            "2 (with 2 established, 1 pending connections)"
        );
        assert_eq!(st.established(), 2);
        let mut alone = st;
        alone.connections.clear();
        alone.peers.truncate(1);
        alone.peers[0].connections.clear();
        assert_eq!(alone.connection_counts(), "0");
        assert_eq!(alone.peer_counts(), "1");
    }

    #[test]
    fn status_round_trips_as_json() {
        let st = sample();
        let json = serde_json::to_string(&st).unwrap();
        assert!(json.contains("\"state\":\"established\""));
        assert_eq!(serde_json::from_str::<MeshStatus>(&json).unwrap(), st);
    }
}
