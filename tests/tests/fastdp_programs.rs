//! fastdp's eBPF programs (in-kernel VXLAN, `weave-ebpf/src/fastdp`), verdict
//! by verdict, through `BPF_PROG_TEST_RUN`: bytes in; return value, bytes out
//! and the one counter that moved, checked. No interface is involved: the
//! maps are written through the handles the [`Classifier`] gives the agent.
//!
//! What a test run can and cannot show:
//! - A TC test run's skb belongs to the loopback device of the thread's
//!   namespace, whose MAC is all zeros: an outer destination of
//!   `00:00:00:00:00:00` makes the skb `PACKET_HOST`, any other unicast MAC
//!   `PACKET_OTHERHOST`.
//! - The redirect helpers only record where the frame would go and return
//!   `TC_ACT_REDIRECT` (7); no device is needed, none is used.
//! - A test context can set `gso_size` and `gso_segs` but not `gso_type`,
//!   which stays 0, and the kernel's `bpf_skb_adjust_room` refuses GSO
//!   skbs that are not TCP (`-ENOTSUPP`): super-frames can reach every
//!   verdict that comes before the helper, and its failure path, but not
//!   the success path, which is left to the end-to-end tests.
//! - The VLAN fields of the skb cannot be set, so the "VLAN tagged" rule of
//!   the decapsulation program is not covered here.
//!
//! Every test runs on its own thread in a network namespace of its own, as
//! in `classifier.rs`. Needs root (`CAP_BPF`, `CAP_NET_ADMIN`,
//! `CAP_SYS_ADMIN`): without it the tests fail loudly rather than pass.

use weave_agent::ebpf::{Classifier, DatapathMaps, FastdpMaps};
use weave_agent::overlay::{seal, vxlan};
use weave_agent::report::causes;
use weave_common::Counter;
use weave_common::datapath::mac_key;
use weave_common::fastdp::{
    FLAG_DECAP_L4_UDP, FLAG_ENABLED, FastdpConfig, FastdpPeer, LOCAL_BRIDGE, LOCAL_CONTAINER,
    Learnt, PeerTraffic, Sender, SenderKey,
};
use weave_common::names::{FASTDP_DECAP_PROG, FASTDP_ENCAP_PROG, FASTDP_PROBE_PROG};
use weave_tests::program_tests;

/// `TC_ACT_REDIRECT`: what `bpf_redirect` and `bpf_redirect_neigh` return.
const TC_ACT_REDIRECT: u32 = 7;
/// `TCX_NEXT` (`TC_ACT_UNSPEC`, -1): not taken, the frame goes on unchanged.
const TCX_NEXT: u32 = -1i32 as u32;
/// `-EINVAL` as a program's return value.
const EINVAL: u32 = -22i32 as u32;

// ---- the mesh around the host under test ---------------------------------

/// This peer's short id, and the direct fastdp neighbour's. Distinct nibbles
/// make the VNI (origin << 12 | destination) easy to read: 0x123456.
const ME: u16 = 0x123;
const PEER: u16 = 0x456;
/// Another direct fastdp neighbour (only some tests know it).
const SECOND: u16 = 0x4ab;
/// A peer that is not a direct fastdp neighbour (reached through a relay,
/// or without fastdp).
const OTHER: u16 = 0x789;
/// The flood destination of the agent's VNIs.
const FLOOD: u16 = 0xfff;

/// Underlay addresses and data ports: ours, and the neighbour's.
const LOCAL_IP: [u8; 4] = [192, 0, 2, 1];
const REMOTE_IP: [u8; 4] = [192, 0, 2, 2];
const SECOND_IP: [u8; 4] = [192, 0, 2, 3];
const STRANGER_IP: [u8; 4] = [192, 0, 2, 9];
const DATA_PORT: u16 = 6784;
const REMOTE_PORT: u16 = 6790;
/// The kernel vxlan device's port: VXLAN, but not ours.
const IANA_VXLAN_PORT: u16 = 4789;
/// Interface indexes the maps name; a test run never uses them.
const UNDERLAY_IFINDEX: u32 = 3;
const BRIDGE_PORT_IFINDEX: u32 = 4;

/// Overlay MTU 1450 (a 1500 underlay less VXLAN's 50): frames up to 1464.
const MAX_FRAME: usize = 1450 + 14;

/// A container on this host, the bridge itself, a container behind the
/// neighbour, one behind `OTHER`, and one nobody has learnt.
const MAC_LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const MAC_BRIDGE: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xbb];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
const MAC_RELAYED: [u8; 6] = [0x02, 0, 0, 0, 0x03, 0x03];
const MAC_UNKNOWN: [u8; 6] = [0x02, 0, 0, 0, 0x04, 0x04];
const MAC_BROADCAST: [u8; 6] = [0xff; 6];
const MAC_MULTICAST: [u8; 6] = [0x01, 0, 0x5e, 0, 0, 1];
/// The loopback device's address: outer frames to it are `PACKET_HOST`.
const MAC_LO: [u8; 6] = [0; 6];
/// The neighbour's (or its gateway's) underlay MAC.
const MAC_UNDERLAY: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0xee];

/// Container addresses.
const IP_LOCAL: [u8; 4] = [10, 32, 0, 1];
const IP_REMOTE: [u8; 4] = [10, 32, 0, 2];

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// IPv4 flags and fragment offset: don't fragment; more fragments.
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;
/// The ECN field (low two bits of the TOS byte): ECT(0) and CE.
const ECN_ECT0: u8 = 0x02;
const ECN_CE: u8 = 0x03;
/// A DSCP (AF41) that must not leak into the outer header.
const DSCP_AF41: u8 = 0x88;

// ---- harness -------------------------------------------------------------

/// Runs `test` with a freshly loaded [`Classifier`] in a private namespace,
/// fastdp's programs loaded and its maps written by [`Fastdp::new`].
fn in_private_netns(test: impl FnOnce(&mut Classifier, &mut Fastdp) + Send + 'static) {
    program_tests::in_private_netns("fastdp_programs", |classifier| {
        let mut fastdp = Fastdp::new(classifier);
        test(classifier, &mut fastdp);
    });
}

/// fastdp's maps, as the agent holds them, written for this mesh:
/// - `FASTDP_CONFIG`: on, this peer is `ME`, data port `DATA_PORT`;
/// - `FASTDP_PEERS`: `PEER` at `REMOTE_IP:REMOTE_PORT`, from `LOCAL_IP`;
/// - `FASTDP_SENDERS`: `REMOTE_IP:REMOTE_PORT` is `PEER`, sending to `LOCAL_IP`;
/// - `PEER_MACS`: `MAC_REMOTE` behind `PEER`, `MAC_RELAYED` behind `OTHER`;
/// - `LOCAL_MACS`: `MAC_LOCAL` a container, `MAC_BRIDGE` the bridge.
struct Fastdp {
    maps: FastdpMaps,
    datapath: DatapathMaps,
}

impl Fastdp {
    fn new(c: &mut Classifier) -> Self {
        c.load_fastdp()
            .unwrap_or_else(|e| panic!("loading fastdp's programs: {}", causes(&e)));
        let maps = c
            .take_fastdp_maps()
            .unwrap_or_else(|e| panic!("fastdp's maps: {}", causes(&e)));
        let datapath = c
            .take_datapath_maps()
            .unwrap_or_else(|e| panic!("the datapath maps: {}", causes(&e)));
        let mut fastdp = Self { maps, datapath };
        fastdp.set_flags(FLAG_ENABLED);
        fastdp
            .maps
            .peers
            .insert(
                u32::from(PEER),
                FastdpPeer {
                    remote_ip: REMOTE_IP,
                    local_ip: LOCAL_IP,
                    ifindex: UNDERLAY_IFINDEX,
                    remote_port: REMOTE_PORT,
                    frame_limit: 0,
                },
                0,
            )
            .expect("writing FASTDP_PEERS");
        fastdp
            .maps
            .senders
            .insert(
                sender_key(REMOTE_IP, REMOTE_PORT),
                Sender {
                    peer: PEER,
                    zero: 0,
                    local_ip: LOCAL_IP,
                },
                0,
            )
            .expect("writing FASTDP_SENDERS");
        fastdp.learn(MAC_REMOTE, PEER);
        fastdp.learn(MAC_RELAYED, OTHER);
        for (mac, kind) in [(MAC_LOCAL, LOCAL_CONTAINER), (MAC_BRIDGE, LOCAL_BRIDGE)] {
            c.set_local_mac(mac, kind)
                .unwrap_or_else(|e| panic!("writing LOCAL_MACS: {}", causes(&e)));
        }
        fastdp
    }

    fn set_flags(&mut self, flags: u32) {
        let config = FastdpConfig {
            flags,
            me: ME,
            data_port: DATA_PORT,
            max_frame: MAX_FRAME as u32,
            bridge_port: BRIDGE_PORT_IFINDEX,
        };
        self.maps
            .config
            .set(0, config, 0)
            .expect("writing FASTDP_CONFIG");
    }

    /// `PEER_MACS[mac] = peer`, as the `AF_XDP` engine writes it.
    fn learn(&mut self, mac: [u8; 6], peer: u16) {
        self.datapath
            .peer_macs
            .insert(mac_key(mac), u32::from(peer), 0)
            .expect("writing PEER_MACS");
    }

    /// `FASTDP_TRAFFIC[peer]`, summed over CPUs.
    fn traffic(&self, peer: u16) -> PeerTraffic {
        let per_cpu = self
            .maps
            .traffic
            .get(&u32::from(peer), 0)
            .expect("reading FASTDP_TRAFFIC");
        per_cpu
            .iter()
            .fold(PeerTraffic::default(), |a, t| a.plus(*t))
    }

    /// The next event in `FASTDP_LEARNT`, if any.
    fn learnt(&mut self) -> Option<Learnt> {
        let item = self.maps.learnt.next()?;
        assert_eq!(item.len(), size_of::<Learnt>(), "a Learnt event");
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&item[..6]);
        Some(Learnt {
            mac,
            peer: u16::from_ne_bytes([item[6], item[7]]),
        })
    }
}

const fn sender_key(ip: [u8; 4], port: u16) -> SenderKey {
    SenderKey { ip, port, zero: 0 }
}

/// What one test run did: the return value, the bytes it left, and the
/// counters that moved (with how much), in `Counter::ALL` order.
struct Run {
    verdict: u32,
    out: Vec<u8>,
    moved: Vec<(Counter, u64)>,
}

/// Runs `prog` on `frame`, as a GSO super-frame of `gso` = (`gso_size`,
/// `gso_segs`) when given.
fn run(c: &Classifier, prog: &str, frame: &[u8], gso: Option<(u32, u32)>, what: &str) -> Run {
    let before = counters(c);
    let result = match gso {
        None => c.test_run_data(prog, frame),
        Some((size, segs)) => c.test_run_gso(prog, frame, size, segs),
    };
    let (verdict, out) =
        result.unwrap_or_else(|e| panic!("{what}: test run of {prog} failed: {}", causes(&e)));
    let moved = counters(c)
        .into_iter()
        .zip(before)
        .filter(|((_, after), (_, before))| after != before)
        .map(|((counter, after), (_, before))| (counter, after - before))
        .collect();
    Run {
        verdict,
        out,
        moved,
    }
}

fn counters(c: &Classifier) -> Vec<(Counter, u64)> {
    c.counters()
        .unwrap_or_else(|e| panic!("reading the counters failed: {}", causes(&e)))
}

/// Asserts that `prog` left `frame` alone: `TCX_NEXT`, the bytes as they
/// were, and exactly `counted` (or, with `None`, no counter at all) moved by one.
#[track_caller]
fn assert_passed(
    c: &Classifier,
    prog: &str,
    frame: &[u8],
    gso: Option<(u32, u32)>,
    counted: Option<Counter>,
    what: &str,
) {
    let run = run(c, prog, frame, gso, what);
    assert_eq!(
        run.verdict, TCX_NEXT,
        "{what}: {prog} returned {}, expected TCX_NEXT (-1)",
        run.verdict as i32
    );
    assert!(run.out == frame, "{what}: the frame was changed");
    let expected: Vec<(Counter, u64)> = counted.into_iter().map(|c| (c, 1)).collect();
    assert_eq!(run.moved, expected, "{what}: the counters that moved");
}

// ---- frames --------------------------------------------------------------

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet: header (with `options`, and a valid checksum) and payload.
struct Ipv4 {
    tos: u8,
    frag: u16,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    options: Vec<u8>,
}

impl Ipv4 {
    const fn new(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Self {
        Self {
            tos: 0,
            frag: IP_DF,
            proto,
            src,
            dst,
            options: Vec::new(),
        }
    }

    fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4),
            "options come in 32-bit words"
        );
        let header_len = 20 + self.options.len();
        let total = u16::try_from(header_len + payload.len()).expect("an IPv4 packet");
        let mut ip = vec![0x40 | (header_len / 4) as u8, self.tos];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // id
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(payload);
        ip
    }
}

/// The Internet checksum of an IPv4 header: 0 over a header that carries
/// a valid one.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP segment: a 20-byte header (no options) and `len` payload bytes.
/// Its checksum is not computed: nothing on these paths verifies it.
fn tcp_segment(len: usize) -> Vec<u8> {
    let mut tcp = vec![
        0xc0, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ];
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend((0..len).map(|i| (i % 251) as u8));
    tcp
}

/// A UDP datagram with `len` payload bytes (checksum 0).
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).expect("a UDP datagram");
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    udp
}

/// A frame between containers: TCP over IPv4 with `tos`, `len` payload bytes.
fn tcp_frame(dst: [u8; 6], src: [u8; 6], tos: u8, len: usize) -> Vec<u8> {
    let mut ip = Ipv4::new(IPPROTO_TCP, IP_LOCAL, IP_REMOTE);
    ip.tos = tos;
    ethernet(dst, src, ETH_P_IPV4, &ip.packet(&tcp_segment(len)))
}

/// The frame a local container sends to the one behind the neighbour.
fn to_remote(len: usize) -> Vec<u8> {
    tcp_frame(MAC_REMOTE, MAC_LOCAL, 0, len)
}

/// The frame the neighbour's container sends to the local one.
fn from_remote(len: usize) -> Vec<u8> {
    tcp_frame(MAC_LOCAL, MAC_REMOTE, 0, len)
}

/// An ARP reply, unicast (so that only its type keeps fastdp off it).
fn arp_reply(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 2];
    arp.extend_from_slice(&src);
    arp.extend_from_slice(&IP_LOCAL);
    arp.extend_from_slice(&dst);
    arp.extend_from_slice(&IP_REMOTE);
    arp.resize(46, 0);
    ethernet(dst, src, ETH_P_ARP, &arp)
}

/// The VNI of a frame from `origin` to `dest` (12-bit short ids).
const fn vni(origin: u16, dest: u16) -> u32 {
    ((origin as u32) << 12) | dest as u32
}

/// The 8-byte VXLAN header: I flag (unless `flags` says otherwise), VNI.
const fn vxlan_header(flags: u8, vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// A VXLAN packet on the underlay, as the decapsulation program receives
/// it; by default what the neighbour sends us for a frame from `PEER` to `ME`.
struct Underlay {
    dst_mac: [u8; 6],
    ip: Ipv4,
    sport: u16,
    dport: u16,
    vxlan_flags: u8,
    vni: u32,
}

impl Underlay {
    const fn from_peer() -> Self {
        Self {
            dst_mac: MAC_LO,
            ip: Ipv4::new(IPPROTO_UDP, REMOTE_IP, LOCAL_IP),
            sport: REMOTE_PORT,
            dport: DATA_PORT,
            vxlan_flags: vxlan::FLAG_VNI_VALID,
            vni: vni(PEER, ME),
        }
    }

    /// `inner` behind this packet's VXLAN header.
    fn carrying(&self, inner: &[u8]) -> Vec<u8> {
        let mut payload = vxlan_header(self.vxlan_flags, self.vni).to_vec();
        payload.extend_from_slice(inner);
        self.datagram(&payload)
    }

    /// This packet's outer headers around the UDP payload `payload`.
    fn datagram(&self, payload: &[u8]) -> Vec<u8> {
        let udp = udp_datagram(self.sport, self.dport, payload);
        ethernet(
            self.dst_mac,
            MAC_UNDERLAY,
            ETH_P_IPV4,
            &self.ip.packet(&udp),
        )
    }
}

/// `inner` as encapsulation must send it to the neighbour: a placeholder
/// Ethernet header (`bpf_redirect_neigh` writes the real one), IPv4 from
/// `LOCAL_IP` to `REMOTE_IP` (DF, TTL 64, id 0, `ecn` in TOS), UDP from
/// `DATA_PORT` to `REMOTE_PORT` without checksum, VXLAN `ME` to `PEER`.
fn vxlan_to_peer(inner: &[u8], ecn: u8) -> Vec<u8> {
    let mut ip = Ipv4::new(IPPROTO_UDP, LOCAL_IP, REMOTE_IP);
    ip.tos = ecn;
    let mut payload = vxlan_header(vxlan::FLAG_VNI_VALID, vni(ME, PEER)).to_vec();
    payload.extend_from_slice(inner);
    let udp = udp_datagram(DATA_PORT, REMOTE_PORT, &payload);
    ethernet([0; 6], [0; 6], ETH_P_IPV4, &ip.packet(&udp))
}

// ---- encapsulation: taken ------------------------------------------------

/// A unicast IPv4 frame for a MAC learnt behind a direct fastdp neighbour
/// leaves as exactly today's wire format, the original frame byte for byte
/// inside, redirected (`bpf_redirect_neigh`) towards the neighbour.
#[test]
fn encap_wraps_a_frame_for_a_fastdp_neighbour_in_vxlan() {
    in_private_netns(|c, fastdp| {
        // ECN ECT(0) with a DSCP: only the ECN bits reach the outer header.
        let inner = tcp_frame(MAC_REMOTE, MAC_LOCAL, DSCP_AF41 | ECN_ECT0, 1000);
        let run = run(c, FASTDP_ENCAP_PROG, &inner, None, "to the neighbour");
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "redirected to the underlay");
        assert_eq!(run.moved, [(Counter::FastdpEncap, 1)]);
        assert_eq!(
            fastdp.traffic(PEER),
            PeerTraffic {
                sent_frames: 1,
                sent_bytes: inner.len() as u64,
                ..PeerTraffic::default()
            },
            "counted as sent to the neighbour: the inner frame"
        );
        let out = &run.out;

        // Field by field, for readable failures.
        assert_eq!(out.len(), 14 + 20 + 8 + 8 + inner.len(), "50 bytes added");
        assert_eq!(
            &out[..14],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00],
            "placeholder outer Ethernet header: IPv4, addresses left to bpf_redirect_neigh"
        );
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45, "IPv4 without options");
        assert_eq!(ip[1], ECN_ECT0, "TOS: the inner ECN bits, no DSCP");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            out.len() - 14,
            "tot_len"
        );
        assert_eq!(&ip[6..8], &IP_DF.to_be_bytes(), "DF, not a fragment");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(ip[9], IPPROTO_UDP, "protocol");
        assert_eq!(ipv4_checksum(ip), 0, "a valid header checksum");
        assert_eq!(&ip[12..16], &LOCAL_IP, "saddr: our end of the connection");
        assert_eq!(&ip[16..20], &REMOTE_IP, "daddr: the neighbour");
        let udp = &out[34..42];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), DATA_PORT, "sport");
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), REMOTE_PORT, "dport");
        assert_eq!(
            usize::from(u16::from_be_bytes([udp[4], udp[5]])),
            out.len() - 34,
            "UDP length"
        );
        assert_eq!(&udp[6..8], &[0, 0], "no UDP checksum (RFC 7348 over IPv4)");
        let packet = vxlan::parse(&out[42..])
            .unwrap_or_else(|e| panic!("the agent's parser refuses the UDP payload: {e}"));
        assert_eq!(packet.vni, 0x123_456, "VNI: ME << 12 | PEER");
        assert!(packet.frame == inner, "the inner frame, byte for byte");

        // And all of it at once.
        assert!(
            *out == vxlan_to_peer(&inner, ECN_ECT0),
            "the whole packet:\n got {out:02x?}"
        );
    });
}

/// The size limit is the overlay MTU: a frame of exactly `max_frame` bytes
/// is taken, one byte more is not (see `encap_passes_what_it_does_not_take`).
#[test]
fn encap_takes_a_frame_of_exactly_the_overlay_mtu() {
    in_private_netns(|c, _| {
        let inner = to_remote(MAX_FRAME - 14 - 20 - 20);
        assert_eq!(inner.len(), MAX_FRAME);
        let run = run(c, FASTDP_ENCAP_PROG, &inner, None, "max_frame");
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        assert_eq!(run.moved, [(Counter::FastdpEncap, 1)]);
        assert!(run.out == vxlan_to_peer(&inner, 0), "the VXLAN packet");
    });
}

/// A peer whose path takes smaller frames (its discovered path MTU) gets
/// frames up to that size only: a larger one goes to the agent's path,
/// which fragments it or tells its sender.
#[test]
fn encap_keeps_to_a_peers_path_mtu() {
    in_private_netns(|c, fastdp| {
        let limit = 600;
        let mut peer = *fastdp
            .maps
            .peers
            .get(&u32::from(PEER), 0)
            .as_ref()
            .expect("PEER is in FASTDP_PEERS");
        peer.frame_limit = limit;
        fastdp
            .maps
            .peers
            .insert(u32::from(PEER), peer, 0)
            .expect("writing FASTDP_PEERS");
        let fits = to_remote(usize::from(limit) - 14 - 20 - 20);
        assert_eq!(fits.len(), usize::from(limit));
        let run_fits = run(c, FASTDP_ENCAP_PROG, &fits, None, "at the path MTU");
        assert_eq!(run_fits.verdict, TC_ACT_REDIRECT);
        let over = to_remote(usize::from(limit) - 14 - 20 - 20 + 1);
        let counter = Some(Counter::FastdpPassOversize);
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &over,
            None,
            counter,
            "over the path MTU",
        );
    });
}

// ---- encapsulation: passed to the agent's path ---------------------------

/// Everything encapsulation does not take continues unchanged to the
/// agent's path, counted by reason.
#[test]
fn encap_passes_what_it_does_not_take() {
    in_private_netns(|c, fastdp| {
        let mut wrong_length = to_remote(100);
        let claimed = u16::from_be_bytes([wrong_length[16], wrong_length[17]]) - 4;
        wrong_length[16..18].copy_from_slice(&claimed.to_be_bytes());
        let cases: [(&str, Vec<u8>, Counter); 8] = [
            (
                "broadcast destination",
                tcp_frame(MAC_BROADCAST, MAC_LOCAL, 0, 100),
                Counter::FastdpPassFlood,
            ),
            (
                "multicast source",
                tcp_frame(MAC_REMOTE, MAC_MULTICAST, 0, 100),
                Counter::FastdpPassFlood,
            ),
            (
                "destination not learnt (flooded by the agent)",
                tcp_frame(MAC_UNKNOWN, MAC_LOCAL, 0, 100),
                Counter::FastdpPassFlood,
            ),
            (
                "ARP",
                arp_reply(MAC_REMOTE, MAC_LOCAL),
                Counter::FastdpPassNotIpv4,
            ),
            (
                "IPv4 whose tot_len is not the frame's",
                wrong_length,
                Counter::FastdpPassNotIpv4,
            ),
            (
                "behind a peer that is not a direct fastdp neighbour",
                tcp_frame(MAC_RELAYED, MAC_LOCAL, 0, 100),
                Counter::FastdpPassNoPeer,
            ),
            (
                "one byte over the overlay MTU",
                to_remote(MAX_FRAME + 1 - 14 - 20 - 20),
                Counter::FastdpPassOversize,
            ),
            (
                "far over the overlay MTU",
                to_remote(3000),
                Counter::FastdpPassOversize,
            ),
        ];
        for (what, frame, counter) in cases {
            assert_passed(c, FASTDP_ENCAP_PROG, &frame, None, Some(counter), what);
        }
        for peer in [PEER, OTHER] {
            assert_eq!(
                fastdp.traffic(peer),
                PeerTraffic::default(),
                "nothing passed on counts as fastdp's traffic"
            );
        }
    });
}

/// Off (password mode, or not started yet), encapsulation takes nothing.
#[test]
fn encap_passes_everything_while_disabled() {
    in_private_netns(|c, fastdp| {
        fastdp.set_flags(0);
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &to_remote(100),
            None,
            Some(Counter::FastdpPassDisabled),
            "off",
        );
        fastdp.set_flags(FLAG_ENABLED);
        let run = run(c, FASTDP_ENCAP_PROG, &to_remote(100), None, "on again");
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "on again");
    });
}

/// Super-frames (a context with `gso_size`): every segment, headers
/// included, must fit the overlay MTU, or the frame goes to the agent's
/// path, which segments it in software first. One that fits reaches
/// `bpf_skb_adjust_room`, which on a test run refuses it (its `gso_type`
/// is 0, not TCP: `-ENOTSUPP`) before changing anything: the frame passes
/// unchanged, counted as `fastdp_pass_encap_failed`.
#[test]
fn encap_passes_super_frames_that_do_not_fit_or_that_the_kernel_refuses() {
    in_private_netns(|c, _| {
        // 2 x 1410 bytes of TCP payload: each segment is 14 + 20 + 20 + 1410
        // = 1464 bytes, exactly `MAX_FRAME`.
        let frame = to_remote(2 * 1410);
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &frame,
            Some((1410, 2)),
            Some(Counter::FastdpPassEncapFailed),
            "TCP super-frame, segments fit",
        );
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &frame,
            Some((1411, 2)),
            Some(Counter::FastdpPassOversize),
            "TCP super-frame, segments one byte too large",
        );

        // UDP (`UDP_SEGMENT`): an 8-byte L4 header.
        let udp = Ipv4::new(IPPROTO_UDP, IP_LOCAL, IP_REMOTE).packet(&udp_datagram(
            5000,
            5001,
            &[0x5a; 2 * 1422],
        ));
        let udp = ethernet(MAC_REMOTE, MAC_LOCAL, ETH_P_IPV4, &udp);
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &udp,
            Some((1422, 2)),
            Some(Counter::FastdpPassEncapFailed),
            "UDP super-frame, segments fit",
        );
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &udp,
            Some((1423, 2)),
            Some(Counter::FastdpPassOversize),
            "UDP super-frame, segments one byte too large",
        );

        // Neither TCP nor UDP: the program cannot size a segment's headers.
        let icmp = Ipv4::new(IPPROTO_ICMP, IP_LOCAL, IP_REMOTE).packet(&[0; 2000]);
        let icmp = ethernet(MAC_REMOTE, MAC_LOCAL, ETH_P_IPV4, &icmp);
        assert_passed(
            c,
            FASTDP_ENCAP_PROG,
            &icmp,
            Some((1000, 2)),
            Some(Counter::FastdpPassOversize),
            "ICMP super-frame",
        );
    });
}

// ---- decapsulation: taken ------------------------------------------------

/// VXLAN from the neighbour, to us, carrying one unicast IPv4 frame: the
/// outer headers go, the inner frame is redirected into the bridge
/// (`bpf_redirect` with `BPF_F_INGRESS`) byte for byte, and its source MAC
/// is reported to the agent once.
#[test]
fn decap_hands_the_inner_frame_to_the_bridge_and_reports_its_source_once() {
    in_private_netns(|c, fastdp| {
        let inner = from_remote(1000);
        let packet = Underlay::from_peer().carrying(&inner);
        let run1 = run(c, FASTDP_DECAP_PROG, &packet, None, "from the neighbour");
        assert_eq!(run1.verdict, TC_ACT_REDIRECT, "redirected into the bridge");
        assert!(run1.out == inner, "the inner frame, byte for byte");
        assert_eq!(run1.moved, [(Counter::FastdpDecap, 1)]);
        assert_eq!(
            fastdp.learnt(),
            Some(Learnt {
                mac: MAC_REMOTE,
                peer: PEER
            }),
            "the inner source, reported behind the neighbour"
        );
        assert_eq!(fastdp.learnt(), None, "one report");

        // The same again: delivered, not reported again (`FASTDP_SEEN`).
        let run2 = run(c, FASTDP_DECAP_PROG, &packet, None, "again");
        assert_eq!(run2.verdict, TC_ACT_REDIRECT);
        assert!(run2.out == inner, "again: the inner frame");
        assert_eq!(run2.moved, [(Counter::FastdpDecap, 1)]);
        assert_eq!(fastdp.learnt(), None, "nothing new to report");
        assert_eq!(
            fastdp.traffic(PEER),
            PeerTraffic {
                received_frames: 2,
                received_bytes: 2 * inner.len() as u64,
                ..PeerTraffic::default()
            },
            "counted as received from the neighbour: the inner frames"
        );

        // The MAC moves behind another neighbour: reported again, at once.
        fastdp
            .maps
            .senders
            .insert(
                sender_key(SECOND_IP, DATA_PORT),
                Sender {
                    peer: SECOND,
                    zero: 0,
                    local_ip: LOCAL_IP,
                },
                0,
            )
            .expect("writing FASTDP_SENDERS");
        let mut moved = Underlay::from_peer();
        moved.ip.src = SECOND_IP;
        moved.sport = DATA_PORT;
        moved.vni = vni(SECOND, ME);
        let run3 = run(c, FASTDP_DECAP_PROG, &moved.carrying(&inner), None, "moved");
        assert_eq!(run3.verdict, TC_ACT_REDIRECT, "moved");
        assert!(run3.out == inner, "moved: the inner frame");
        assert_eq!(run3.moved, [(Counter::FastdpDecap, 1)]);
        assert_eq!(
            fastdp.learnt(),
            Some(Learnt {
                mac: MAC_REMOTE,
                peer: SECOND
            }),
            "the source, reported behind its new neighbour"
        );
        assert_eq!(fastdp.learnt(), None, "one report");
    });
}

/// Congestion experienced on the outer packet is carried to the inner one
/// (RFC 6040) when it is ECN-capable, with its header checksum updated.
#[test]
fn decap_carries_congestion_experienced_to_the_inner_packet() {
    in_private_netns(|c, _| {
        let mut underlay = Underlay::from_peer();
        underlay.ip.tos = ECN_CE;
        let inner = tcp_frame(MAC_LOCAL, MAC_REMOTE, ECN_ECT0, 200);
        let run = run(
            c,
            FASTDP_DECAP_PROG,
            &underlay.carrying(&inner),
            None,
            "CE outside",
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        assert_eq!(run.moved, [(Counter::FastdpDecap, 1)]);
        let marked = tcp_frame(MAC_LOCAL, MAC_REMOTE, ECN_CE, 200);
        assert!(
            run.out == marked,
            "the inner packet marked CE, checksum valid:\n got {:02x?}",
            &run.out[..34]
        );
    });
}

// ---- decapsulation: passed to the agent ----------------------------------

/// What is not VXLAN to our data port is none of fastdp's business: passed
/// on unchanged and not counted at all.
#[test]
fn decap_ignores_what_is_not_udp_to_the_data_port() {
    in_private_netns(|c, _| {
        let inner = from_remote(100);
        let mut tcp = Underlay::from_peer();
        tcp.ip.proto = IPPROTO_TCP;
        let mut other_port = Underlay::from_peer();
        other_port.dport = IANA_VXLAN_PORT;
        let cases = [
            ("not UDP", tcp.carrying(&inner)),
            ("UDP to another port", other_port.carrying(&inner)),
            ("ARP on the underlay", arp_reply(MAC_LO, MAC_UNDERLAY)),
        ];
        for (what, frame) in cases {
            assert_passed(c, FASTDP_DECAP_PROG, &frame, None, None, what);
        }
    });
}

/// Off, nothing is decapsulated. In password mode (where the agent turns
/// fastdp off) sealed frames arrive as VXLAN to the data port like any
/// other, and only the agent can open them.
#[test]
fn decap_passes_everything_while_disabled_sealed_frames_included() {
    in_private_netns(|c, fastdp| {
        fastdp.set_flags(0);
        let inner = from_remote(100);
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &Underlay::from_peer().carrying(&inner),
            None,
            Some(Counter::FastdpToAgentDisabled),
            "plain VXLAN while off",
        );

        // Sealed the way the agent seals: VXLAN header, counter, the frame
        // encrypted, tag.
        let key = seal::SendKey::new(
            &zeroize::Zeroizing::new([7u8; 32]),
            weave_agent::overlay::DataCipher::Aes256Gcm,
        );
        let mut sealed = vec![0u8; seal::FRAME_OFFSET + inner.len() + seal::TAG_LEN];
        sealed[..8].copy_from_slice(&vxlan::header(vni(PEER, ME)));
        sealed[seal::FRAME_OFFSET..seal::FRAME_OFFSET + inner.len()].copy_from_slice(&inner);
        let len = key.seal(&mut sealed, inner.len()).expect("sealing");
        assert_eq!(len, sealed.len());
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &Underlay::from_peer().datagram(&sealed),
            None,
            Some(Counter::FastdpToAgentDisabled),
            "sealed, password mode",
        );
    });
}

/// Only direct fastdp neighbours, recognised by the (address, port) their
/// VXLAN comes from and the address they send it to, are decapsulated.
#[test]
fn decap_passes_frames_from_unknown_senders() {
    in_private_netns(|c, _| {
        let inner = from_remote(100);
        let mut stranger = Underlay::from_peer();
        stranger.ip.src = STRANGER_IP;
        let mut other_port = Underlay::from_peer();
        other_port.sport = REMOTE_PORT + 1;
        let mut other_daddr = Underlay::from_peer();
        other_daddr.ip.dst = STRANGER_IP;
        let cases = [
            ("an unknown address", stranger),
            ("the neighbour's address, another port", other_port),
            (
                "the neighbour, to an address not its connection's",
                other_daddr,
            ),
        ];
        for (what, underlay) in cases {
            assert_passed(
                c,
                FASTDP_DECAP_PROG,
                &underlay.carrying(&inner),
                None,
                Some(Counter::FastdpToAgentUnknownSender),
                what,
            );
        }
    });
}

/// Only the neighbour's own frames for this peer: frames to relay, flooded
/// frames and frames the neighbour relays to us need the agent.
#[test]
fn decap_passes_frames_not_from_the_neighbour_to_us() {
    in_private_netns(|c, _| {
        let inner = from_remote(100);
        let with_vni = |vni: u32| Underlay {
            vni,
            ..Underlay::from_peer()
        };
        let no_i_flag = Underlay {
            vxlan_flags: 0,
            ..Underlay::from_peer()
        };
        let cases = [
            ("for another peer (to relay)", with_vni(vni(PEER, OTHER))),
            ("flooded", with_vni(vni(PEER, FLOOD))),
            ("from another peer, relayed to us", with_vni(vni(OTHER, ME))),
            ("claiming to come from us", with_vni(vni(ME, ME))),
            ("VXLAN without the I flag", no_i_flag),
        ];
        for (what, underlay) in cases {
            assert_passed(
                c,
                FASTDP_DECAP_PROG,
                &underlay.carrying(&inner),
                None,
                Some(Counter::FastdpToAgentNotForUs),
                what,
            );
        }
    });
}

/// The neighbour's frame for us, but not one whole unicast IPv4 packet in
/// one whole datagram addressed to this host: the agent's path decides.
#[test]
fn decap_passes_what_it_cannot_deliver_whole() {
    in_private_netns(|c, _| {
        let peer = Underlay::from_peer;
        let inner = from_remote(100);

        // Two VXLAN packets in one datagram, as a UDP GRO aggregate or a
        // `UDP_SEGMENT` batch looks: the outer lengths agree with the
        // datagram, the first inner packet's does not.
        let mut two = vxlan_header(vxlan::FLAG_VNI_VALID, vni(PEER, ME)).to_vec();
        two.extend_from_slice(&inner);
        two.extend_from_slice(&vxlan_header(vxlan::FLAG_VNI_VALID, vni(PEER, ME)));
        two.extend_from_slice(&inner);
        let mut first_fragment = peer();
        first_fragment.ip.frag = IP_MF;
        let mut later_fragment = peer();
        later_fragment.ip.frag = 185; // offset 1480, the last one
        let mut options = peer();
        options.ip.options = vec![0x01, 0x01, 0x01, 0x00]; // NOP NOP NOP EOL
        let other_host = Underlay {
            dst_mac: MAC_UNDERLAY,
            ..peer()
        };
        let cases = [
            (
                "inner source is a container of this host",
                peer().carrying(&tcp_frame(MAC_REMOTE, MAC_LOCAL, 0, 100)),
                Counter::FastdpToAgentSpoofed,
            ),
            (
                "inner source is this host's bridge",
                peer().carrying(&tcp_frame(MAC_REMOTE, MAC_BRIDGE, 0, 100)),
                Counter::FastdpToAgentSpoofed,
            ),
            (
                "inner broadcast",
                peer().carrying(&tcp_frame(MAC_BROADCAST, MAC_REMOTE, 0, 100)),
                Counter::FastdpToAgentInner,
            ),
            (
                "inner multicast source",
                peer().carrying(&tcp_frame(MAC_LOCAL, MAC_MULTICAST, 0, 100)),
                Counter::FastdpToAgentInner,
            ),
            (
                "inner ARP",
                peer().carrying(&arp_reply(MAC_LOCAL, MAC_REMOTE)),
                Counter::FastdpToAgentInner,
            ),
            (
                "two VXLAN packets in one datagram",
                peer().datagram(&two),
                Counter::FastdpToAgentInner,
            ),
            (
                "first fragment",
                first_fragment.carrying(&inner),
                Counter::FastdpToAgentInner,
            ),
            (
                "fragment at an offset",
                later_fragment.carrying(&inner),
                Counter::FastdpToAgentInner,
            ),
            (
                "outer IPv4 with options",
                options.carrying(&inner),
                Counter::FastdpToAgentInner,
            ),
            (
                "addressed to another host (PACKET_OTHERHOST)",
                other_host.carrying(&inner),
                Counter::FastdpToAgentInner,
            ),
        ];
        for (what, frame, counter) in cases {
            assert_passed(c, FASTDP_DECAP_PROG, &frame, None, Some(counter), what);
        }
    });
}

/// Super-frames on this kernel (6.18, no `BPF_F_ADJ_ROOM_DECAP_L4_UDP`):
/// decapsulation leaves tunnel GSO state on the skb, harmless only if
/// nothing segments it again, so only super-frames for a local container
/// or the host's own stack (the bridge, an exposed host) are taken. For a
/// test run, even those are refused by the kernel.
#[test]
fn decap_takes_super_frames_only_for_local_containers_and_the_host() {
    in_private_netns(|c, fastdp| {
        let gso = Some((1400, 2));
        let to =
            |dst: [u8; 6]| Underlay::from_peer().carrying(&tcp_frame(dst, MAC_REMOTE, 0, 2800));
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &to(MAC_UNKNOWN),
            gso,
            Some(Counter::FastdpToAgentGsoRestricted),
            "super-frame for a MAC not on this host",
        );
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &to(MAC_BRIDGE),
            gso,
            Some(Counter::FastdpDecapFailed),
            "super-frame for the bridge (an exposed host's own stack)",
        );
        // For a container the program asks `bpf_skb_adjust_room` to remove
        // the outer headers. 6.18's `bpf_skb_net_shrink` takes a GSO skb
        // only if it is TCP (or `UDP_L4` with `FIXED_GSO`); a test run's
        // `gso_type` is 0, so it returns -ENOTSUPP before touching the skb,
        // and the program passes the packet on as it was. A real super-frame
        // from the neighbour's encapsulation (`TCPV4 | UDP_TUNNEL`) passes
        // that check: end-to-end tests count it in `fastdp_decap_gso`.
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &to(MAC_LOCAL),
            gso,
            Some(Counter::FastdpDecapFailed),
            "super-frame for a local container",
        );
        // The same bytes as one plain packet are decapsulated: it was the
        // GSO state the kernel refused, nothing in the frame.
        let plain = run(c, FASTDP_DECAP_PROG, &to(MAC_LOCAL), None, "not GSO");
        assert_eq!(plain.verdict, TC_ACT_REDIRECT, "not GSO");
        assert_eq!(plain.moved, [(Counter::FastdpDecap, 1)], "not GSO");
        assert_eq!(
            fastdp.learnt().map(|l| l.mac),
            Some(MAC_REMOTE),
            "not GSO: learnt"
        );

        // Where the kernel has `DECAP_L4_UDP` (the agent probed it), the
        // restriction lifts: the program asks the kernel to decapsulate a
        // super-frame for any MAC. This kernel refuses the flag (-EINVAL).
        fastdp.set_flags(FLAG_ENABLED | FLAG_DECAP_L4_UDP);
        assert_passed(
            c,
            FASTDP_DECAP_PROG,
            &to(MAC_UNKNOWN),
            gso,
            Some(Counter::FastdpDecapFailed),
            "super-frame for any MAC with DECAP_L4_UDP",
        );
        assert_eq!(
            fastdp.learnt(),
            None,
            "super-frames: nothing taken, nothing learnt"
        );
    });
}

// ---- probe ---------------------------------------------------------------

/// This kernel (6.18) does not know `BPF_F_ADJ_ROOM_DECAP_L4_UDP`: the probe
/// program gets -EINVAL from the helper and returns it, and the agent's
/// probe reads that as "no".
#[test]
fn probe_finds_no_decap_l4_udp_on_this_kernel() {
    in_private_netns(|c, _| {
        let packet = Underlay::from_peer().carrying(&from_remote(0));
        let run = run(c, FASTDP_PROBE_PROG, &packet, None, "probe");
        assert_eq!(
            run.verdict, EINVAL,
            "the probe returned {} (0 would mean the kernel clears tunnel GSO state on \
             decapsulation: update this test and `docs/fastdp.md`)",
            run.verdict as i32
        );
        assert!(run.out == packet, "refused: the packet is unchanged");
        assert!(!c.probe_decap_l4_udp(), "the agent's probe agrees");
    });
}
