//! What the control plane tells the data plane, and the trait every data
//! plane implements.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::overlay::engine::heartbeats::HeartbeatPort;
use crate::overlay::wire::seal::PeerKeys;
use crate::peer_name::PeerName;

/// A 12-bit peer id. Frames between peers are standard VXLAN whose 24-bit VNI
/// carries `origin << 12 | destination` (the scheme of Weave's fast
/// datapath), so a relay knows where a frame goes and a broadcast whose tree
/// it follows, without any extra header.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ShortId(pub u16);

impl ShortId {
    /// The destination of frames for every peer (broadcast, unknown unicast).
    pub const BROADCAST: Self = Self(0xfff);

    /// Derived from the peer name, so every peer computes the same id for
    /// every other without agreeing on anything. Never BROADCAST.
    pub fn of(name: &PeerName) -> Self {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u32 = 0x811c_9dc5;
        for b in name.0.0 {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Self(((h ^ (h >> 12) ^ (h >> 24)) % 0xfff) as u16)
    }

    /// The VXLAN network identifier for a frame from `origin` to `dest`.
    pub fn vni(origin: Self, dest: Self) -> u32 {
        (u32::from(origin.0) << 12) | u32::from(dest.0)
    }

    /// (origin, destination) of a VNI.
    pub const fn from_vni(vni: u32) -> (Self, Self) {
        (
            Self(((vni >> 12) & 0xfff) as u16),
            Self((vni & 0xfff) as u16),
        )
    }
}

impl std::fmt::Display for ShortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03x}", self.0)
    }
}

/// Published as a whole by the control plane on every topology change;
/// every peer computes the same routes from the same topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardingTable {
    pub me: ShortId,
    /// Underlay UDP address of each peer with an established direct connection.
    pub neighbours: HashMap<ShortId, SocketAddr>,
    /// For every reachable peer: the neighbour its unicast frames go to
    /// (itself when directly connected).
    pub next_hop: HashMap<ShortId, ShortId>,
    /// For frames broadcast by `origin` (this peer included): the neighbours
    /// this peer passes them on to, its children in origin's broadcast tree.
    pub broadcast: HashMap<ShortId, Vec<ShortId>>,
    /// Password mode: every frame to or from a neighbour is sealed with the
    /// keys of the connection to it (see `overlay::seal`); a neighbour
    /// without keys gets nothing and is heard from by nobody.
    pub encrypted: bool,
    /// Each neighbour's data keys (password mode).
    pub keys: HashMap<ShortId, NeighbourKeys>,
    /// Neighbours whose frames the in-kernel data path (fastdp) carries:
    /// both ends run it, the connection is not encrypted, and the underlay
    /// is IPv4 at both ends (see `mesh::fastdp`). The value is our address
    /// on the connection to that neighbour, the outer source of the frames
    /// encapsulated to it. Always empty in password mode.
    pub fastdp: HashMap<ShortId, Ipv4Addr>,
    /// Neighbours whose path takes smaller datagrams than the overlay MTU
    /// makes (`mesh::path_mtu`): the largest inner Ethernet frame that
    /// reaches each. Larger frames are fragmented or answered with ICMP
    /// (`wire::too_big`); fastdp leaves them to the userspace engine.
    pub frame_limit: HashMap<ShortId, usize>,
}

/// One connection's data keys, shared between the control plane and the
/// data plane. Equal only to itself: a new connection's keys make a new
/// table, which the data plane switches to as a whole.
#[derive(Clone, Debug)]
pub struct NeighbourKeys(pub Arc<PeerKeys>);

impl PartialEq for NeighbourKeys {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NeighbourKeys {}

/// Counters a data plane keeps; every drop is counted, never silent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_relayed: u64,
    /// Malformed or truncated packets on the data port.
    pub dropped_malformed: u64,
    /// Packets from addresses that are not established peers.
    pub dropped_unknown_sender: u64,
    /// Frames for peers with no route.
    pub dropped_no_route: u64,
    /// Frames from peers that entered the bridge merged with others of
    /// their TCP stream into GSO super-frames (xdp data plane).
    #[serde(default)]
    pub frames_coalesced: u64,
    /// TCP super-frames (TSO) from containers that reached the agent whole
    /// and were cut into segments there (xdp data plane).
    #[serde(default)]
    pub frames_segmented: u64,
    /// UDP GSO datagrams the kernel refused on the way to a peer (a path
    /// MTU below the segment size, `IPsec`, a socket without checksums):
    /// their frames went one datagram each, as do later ones to that peer
    /// (xdp data plane; the plain one sends single datagrams anyway).
    #[serde(default)]
    pub gso_refused: u64,
    /// Frames larger than the overlay MTU allows.
    pub dropped_oversize: u64,
    /// Frames from peers that claim to come from this peer, or from a MAC
    /// address that lives on this host's bridge.
    #[serde(default)]
    pub dropped_spoofed: u64,
    /// Frames the kernel refused to send (full queue, no route on the underlay).
    #[serde(default)]
    pub dropped_send_failed: u64,
    /// Frames the kernel dropped before the data plane saw them, because it
    /// fell behind and a receive queue was full.
    #[serde(default)]
    pub dropped_overflow: u64,
    /// Password mode: packets that did not authenticate (another key, a
    /// forgery, corruption, a neighbour without keys yet).
    #[serde(default)]
    pub dropped_unauthenticated: u64,
    /// Password mode: packets that authenticated but were seen already or
    /// are too old for the replay window.
    #[serde(default)]
    pub dropped_replayed: u64,
    /// Frames too big for the path to their next hop that could be neither
    /// fragmented nor answered (not IPv4, IP options, an ICMP error).
    #[serde(default)]
    pub dropped_path_mtu: u64,
    /// Fragments sent of IPv4 packets without DF too big for their path.
    #[serde(default)]
    pub path_mtu_fragments: u64,
    /// ICMP "fragmentation needed" sent back to senders of IPv4 packets
    /// with DF too big for their path.
    #[serde(default)]
    pub path_mtu_icmp: u64,
    /// MACs seen behind peers but not learnt: their peer made this peer
    /// learn new MACs faster than it allows (frames still delivered).
    #[serde(default)]
    pub macs_not_learnt: u64,
    /// fastdp: writes to the kernel's maps that failed (a full map, no
    /// memory); the peer's frames then take the userspace engine.
    #[serde(default)]
    pub fastdp_map_failures: u64,
    /// What was carried to and from each neighbour, by data plane (only
    /// neighbours with something to show).
    #[serde(default)]
    pub neighbours: Vec<NeighbourTraffic>,
}

/// What one data plane carried to and from one neighbour: inner Ethernet
/// frames and their bytes (a super-frame counts as its segments), sent to
/// it (ours and relayed) and received from it (for us and to relay).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourTraffic {
    pub peer: ShortId,
    /// "fastdp", "xdp" or "plain".
    pub dataplane: String,
    pub sent_frames: u64,
    pub sent_bytes: u64,
    pub received_frames: u64,
    pub received_bytes: u64,
    /// Frames from it that were dropped (malformed, spoofed, oversize...).
    pub dropped: u64,
}

/// A data plane carrying frames between this host's bridge and its peers.
pub trait Overlay: Send + Sync {
    /// "plain", "xdp" or "fastdp": shown in `weave status`.
    fn name(&self) -> &'static str;
    /// The engine in userspace that carries what no kernel path takes:
    /// "plain" or "xdp" (for fastdp, the engine it wraps). Connections that
    /// do not use fastdp show it in `weave status connections`.
    fn userspace(&self) -> &'static str {
        self.name()
    }
    /// Replaces the forwarding table; frames in flight use the old or the
    /// new one, never a mix.
    fn update(&self, table: Arc<ForwardingTable>);
    fn stats(&self) -> OverlayStats;
    /// Where data-path heartbeats to and from peers go through this data
    /// plane (its UDP socket); `None` when it has none (then the mesh
    /// counts every connection's data path as up).
    fn heartbeats(&self) -> Option<HeartbeatPort> {
        None
    }
    /// Stops forwarding and joins the data plane's threads; idempotent.
    fn stop(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_round_trips_and_short_ids_avoid_broadcast() {
        let a = ShortId(0x123);
        let b = ShortId::BROADCAST;
        assert_eq!(ShortId::from_vni(ShortId::vni(a, b)), (a, b));
        for _ in 0..1000 {
            let id = ShortId::of(&PeerName::random());
            assert!(id.0 < 0xfff);
        }
        let p: PeerName = "12:34:56:78:9a:bc".parse().unwrap();
        assert_eq!(ShortId::of(&p), ShortId::of(&p));
    }
}
