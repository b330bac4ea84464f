//! What the fastdp programs (in-kernel VXLAN for unencrypted traffic between
//! directly connected peers, see `docs/fastdp.md`) and the agent agree
//! on: the maps the agent writes, the event the decapsulation program reports
//! back, and the outer headers both sides build the same way.
//!
//! Addresses are network-order byte arrays (compared with packet bytes as
//! they are); ports and short ids are host order. Every map value is
//! `repr(C)` without padding, so the kernel never copies uninitialised bytes.

/// `FastdpConfig::flags`: the programs act. Off in password mode and until
/// the agent has written its peers: everything then takes the agent's path.
pub const FLAG_ENABLED: u32 = 1;
/// `FastdpConfig::flags`: this kernel accepts [`ADJ_ROOM_DECAP_L4_UDP`], so a
/// decapsulated super-frame may go anywhere (probed by the agent at start).
pub const FLAG_DECAP_L4_UDP: u32 = 2;

/// `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (bpf-next, after 6.18): decapsulation also
/// clears the tunnel GSO state. Not in aya-ebpf's bindings yet.
pub const ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14):
/// what encapsulation adds in front of the inner IP packet. Equal to the
/// agent's `overlay::vxlan::MTU_OVERHEAD_IPV4`.
pub const ENCAP_LEN: usize = 20 + 8 + 8 + 14;
/// Outer IPv4 + UDP + VXLAN: what `bpf_skb_adjust_room` inserts after the
/// Ethernet header.
pub const TUNNEL_LEN: usize = 20 + 8 + 8;

/// The one entry of `FASTDP_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastdpConfig {
    pub flags: u32,
    /// This peer's short id.
    pub me: u16,
    /// The UDP port of this peer's data plane (the outer source port).
    pub data_port: u16,
    /// Largest inner frame (overlay MTU + Ethernet header) encapsulated whole.
    pub max_frame: u32,
    /// Interface index of the bridge's datapath port (`vethwe-bridge`):
    /// decapsulated frames enter the bridge there.
    pub bridge_port: u32,
}

/// `FASTDP_PEERS[short id]`: a directly connected peer both of whose ends
/// negotiated fastdp, reached over IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastdpPeer {
    pub remote_ip: [u8; 4],
    /// Our address on the connection to it: the outer source address.
    pub local_ip: [u8; 4],
    /// The underlay interface the route to `remote_ip` leaves by.
    pub ifindex: u32,
    pub remote_port: u16,
    /// The largest inner frame the path to the peer takes, when its path
    /// MTU is below the overlay's (0: the overlay MTU). Larger frames, and
    /// super-frames whose segments are, are left to the agent.
    pub frame_limit: u16,
}

/// `FASTDP_SENDERS` key: where a neighbour's VXLAN comes from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SenderKey {
    pub ip: [u8; 4],
    pub port: u16,
    /// Always zero: written so the value has no padding.
    pub zero: u16,
}

/// `FASTDP_SENDERS` value: the neighbour, and the address it sends to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    pub peer: u16,
    /// Always zero: written so the value has no padding.
    pub zero: u16,
    pub local_ip: [u8; 4],
}

/// `FASTDP_SEEN[mac_key]`: the decapsulation program's own memory of which
/// peer a MAC was last reported behind, so it reports changes, not frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub peer: u16,
    /// Always zero: written so the value has no padding.
    pub zero: u16,
    /// Seconds (coarse monotonic clock) of the last report.
    pub at_s: u32,
}

/// A `FASTDP_LEARNT` ring event: `mac` sends from behind `peer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    pub mac: [u8; 6],
    pub peer: u16,
}

/// A MAC reported again after this many seconds, though nothing changed: the
/// agent ages MACs it has not heard from, and fastdp frames bypass it.
pub const RELEARN_AFTER_S: u32 = 60;

/// `LOCAL_MACS` values: what a MAC on this host's bridge is.
pub const LOCAL_CONTAINER: u32 = 1;
pub const LOCAL_BRIDGE: u32 = 2;

/// Most entries of `FASTDP_PEERS` and `FASTDP_SENDERS` (one per neighbour).
pub const MAX_FASTDP_PEERS: u32 = 4096;
/// `FASTDP_TRAFFIC[short id]`, per CPU: what fastdp carried to and from
/// one neighbour. Frames and bytes are the inner Ethernet frames, a
/// super-frame counted as the segments it stands for (each with its
/// headers), so the figures match what the userspace engines count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub sent_frames: u64,
    pub sent_bytes: u64,
    pub received_frames: u64,
    pub received_bytes: u64,
}

impl PeerTraffic {
    /// The sum of two (per-CPU) slots.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            sent_frames: self.sent_frames + other.sent_frames,
            sent_bytes: self.sent_bytes + other.sent_bytes,
            received_frames: self.received_frames + other.received_frames,
            received_bytes: self.received_bytes + other.received_bytes,
        }
    }
}

/// Entries of `FASTDP_TRAFFIC`: one per possible short id (12 bits).
pub const MAX_SHORT_IDS: u32 = 4096;

/// Bytes of the inner frames a frame of `len` bytes stands for when it is a
/// super-frame of `segments` segments whose headers (Ethernet to L4) are
/// `headers` bytes long: each segment but the first repeats them.
#[inline(always)]
pub const fn segmented_bytes(len: u64, segments: u64, headers: u64) -> u64 {
    len + segments.saturating_sub(1) * headers
}

/// Most MACs the decapsulation program remembers having reported.
pub const MAX_SEEN: u32 = 8192;
/// Bytes of the `FASTDP_LEARNT` ring (a power of two, a multiple of the page).
pub const LEARNT_RING_BYTES: u32 = 64 * 1024;

/// The VXLAN network identifier of a frame from `origin` to `dest` (12-bit
/// short ids): the same rule as the agent's `ShortId::vni`.
#[inline(always)]
pub const fn vni(origin: u16, dest: u16) -> u32 {
    ((origin as u32 & 0xfff) << 12) | (dest as u32 & 0xfff)
}

/// The 36 bytes (outer IPv4, UDP, VXLAN) that encapsulation puts between the
/// outer Ethernet header and the inner frame of `inner_len` bytes (Ethernet
/// header included). The outer UDP checksum is zero (RFC 7348 allows it over
/// IPv4; the kernel's vxlan device sends the same), the IPv4 header checksum
/// is computed, DF is set like the agent's UDP socket sends, TTL 64, and
/// `tos` carries the inner packet's ECN bits (RFC 6040).
#[inline(always)]
pub const fn tunnel_header(
    peer: &FastdpPeer,
    data_port: u16,
    vni: u32,
    tos: u8,
    inner_len: u16,
) -> [u8; TUNNEL_LEN] {
    let udp_len = inner_len.wrapping_add(16);
    let ip_len = udp_len.wrapping_add(20);
    let port = data_port.to_be_bytes();
    let remote_port = peer.remote_port.to_be_bytes();
    let udp = udp_len.to_be_bytes();
    let total = ip_len.to_be_bytes();
    let s = peer.local_ip;
    let d = peer.remote_ip;
    let vni = vni.to_be_bytes();
    let mut h = [
        0x45,
        tos,
        total[0],
        total[1],
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3], // IPv4
        port[0],
        port[1],
        remote_port[0],
        remote_port[1],
        udp[0],
        udp[1],
        0,
        0, // UDP
        0x08,
        0,
        0,
        0,
        vni[1],
        vni[2],
        vni[3],
        0, // VXLAN: I flag, VNI
    ];
    let sum = ipv4_checksum(&h);
    h[10] = (sum >> 8) as u8;
    h[11] = sum as u8;
    h
}

/// The IPv4 header checksum of the 20 bytes at the start of `header` (whose
/// checksum field is zero).
#[inline(always)]
pub const fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += ((header[i] as u32) << 8) | header[i + 1] as u32;
        i += 2;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

macro_rules! no_padding {
    ($($ty:ty = $size:expr),* $(,)?) => {$(
        const _: () = assert!(size_of::<$ty>() == $size, "map values must have no padding");
        #[cfg(feature = "user")]
        // SAFETY: `repr(C)`, `Copy`, made only of integers and integer
        // arrays (every bit pattern is valid), and the assertion above proves
        // there is no padding, so no uninitialised byte reaches the kernel.
        unsafe impl aya::Pod for $ty {}
    )*};
}

no_padding!(
    FastdpConfig = 16,
    FastdpPeer = 16,
    SenderKey = 8,
    Sender = 8,
    Seen = 8,
    Learnt = 8,
    PeerTraffic = 32,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_super_frame_counts_the_headers_of_every_segment() {
        // 3 segments of 1000 payload bytes behind 66 bytes of headers.
        assert_eq!(segmented_bytes(66 + 3000, 3, 66), 3 * (66 + 1000));
        assert_eq!(segmented_bytes(100, 1, 66), 100);
        assert_eq!(segmented_bytes(100, 0, 66), 100);
    }

    #[test]
    fn the_tunnel_header_is_vxlan_with_a_valid_ipv4_checksum() {
        let peer = FastdpPeer {
            remote_ip: [10, 0, 0, 2],
            local_ip: [10, 0, 0, 1],
            ifindex: 3,
            remote_port: 6784,
            frame_limit: 0,
        };
        let h = tunnel_header(&peer, 6784, vni(0x123, 0x456), 2, 1514);
        assert_eq!(
            ipv4_checksum(&h),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 1514 + 36);
        assert_eq!(&h[12..20], &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 1514 + 16);
        assert_eq!(&h[28..36], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(h[1], 2);
    }
}
