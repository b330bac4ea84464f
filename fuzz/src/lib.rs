//! The checks behind every fuzz target, and their seed inputs.
//!
//! One file, no fuzzing dependency, on purpose: each target in
//! `fuzz_targets/` is one line over a function here, and the stable test
//! `tests/tests/fuzz_corpus.rs` includes this very file (`#[path]`) to
//! replay `corpus/` and `regressions/` through the same checks. So a check
//! lives in one place, and an input that once crashed a target is a plain
//! `cargo test` failure until fixed.
//!
//! A check returns when the input was handled as it should be and panics
//! (an assertion with context) when an invariant breaks. The seeds come
//! from the real encoders, so they follow the wire formats when those change
//! (the test fails on stale seed files and rewrites them with
//! `WEAVE_UPDATE_SEEDS=1`).
//!
//! Where one input has to describe more than bytes on the wire (chunk sizes,
//! a forwarding table, a sequence of packets), it is read through [`Bytes`],
//! whose reads never fail: missing bytes read as zero.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weave_agent::ipam::{IpamMessage, IpamPacket, Malformed, Ring, RingError, Space};
use weave_agent::mac::Mac;
use weave_agent::mesh::Target;
use weave_agent::mesh::noise::{self, Handshake, Psk};
use weave_agent::mesh::protocol::{
    self, FrameDecoder, Hello, MAX_FRAME, MAX_HELLO_FRAME, Message, PROTOCOL, Refusal, WireError,
};
use weave_agent::mesh::topology::{
    ConnectionSummary, MAX_CONNECTIONS_PER_PEER, MAX_PEERS, PeerInfo, Topology, TopologyUpdate,
};
use weave_agent::overlay::coalesce::{self, Run, Segment};
use weave_agent::overlay::mac_table::MacTable;
use weave_agent::overlay::plain::verdict::{self, FromBridge, FromPeer, Macs};
use weave_agent::overlay::routes::Routes;
use weave_agent::overlay::seal::{self, OpenError, RecvKey, ReplayWindow, SendKey};
use weave_agent::overlay::vxlan::{self, ETHERNET_HEADER_LEN, FLAG_VNI_VALID, HEADER_LEN};
use weave_agent::overlay::{ForwardingTable, ShortId};
use weave_agent::peer_name::PeerName;

/// A fuzz target: its name (also its file in `fuzz_targets/` and its
/// directories in `corpus/` and `regressions/`), its check, its seeds.
pub struct FuzzTarget {
    pub name: &'static str,
    pub check: fn(&[u8]),
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
}

pub const TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "vxlan_parse",
        check: vxlan_parse,
        seeds: vxlan_seeds,
    },
    FuzzTarget {
        name: "mesh_frames",
        check: mesh_frames,
        seeds: frames_seeds,
    },
    FuzzTarget {
        name: "mesh_handshake",
        check: mesh_handshake,
        seeds: handshake_seeds,
    },
    FuzzTarget {
        name: "gossip_merge",
        check: gossip_merge,
        seeds: gossip_seeds,
    },
    FuzzTarget {
        name: "ipam_merge",
        check: ipam_merge,
        seeds: ipam_seeds,
    },
    FuzzTarget {
        name: "peer_target_parse",
        check: peer_target_parse,
        seeds: target_seeds,
    },
    FuzzTarget {
        name: "sealed_open",
        check: sealed_open,
        seeds: sealed_seeds,
    },
    FuzzTarget {
        name: "noise_handshake",
        check: noise_handshake,
        seeds: noise_seeds,
    },
    FuzzTarget {
        name: "overlay_verdict",
        check: overlay_verdict,
        seeds: verdict_seeds,
    },
    FuzzTarget {
        name: "tcp_coalesce",
        check: tcp_coalesce,
        seeds: coalesce_seeds,
    },
];

/// A reader over fuzz input that never fails: past the end it reads zeros.
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub const fn new(data: &'a [u8]) -> Self {
        Bytes { rest: data }
    }

    pub const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub const fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.rest.len())
    }
}

// ---------------------------------------------------------------------------
// vxlan_parse: UDP payloads on the data port.

/// Accepts exactly the payloads with a full header, the I flag and a whole
/// Ethernet header inside, borrows the rest as the frame, and says why not
/// otherwise; what it accepts re-encodes to a packet that parses the same.
pub fn vxlan_parse(data: &[u8]) {
    use vxlan::VxlanError;
    match vxlan::parse(data) {
        Ok(packet) => {
            assert!(data.len() >= HEADER_LEN + ETHERNET_HEADER_LEN);
            assert_ne!(data[0] & FLAG_VNI_VALID, 0);
            assert!(packet.vni <= vxlan::VNI_MAX);
            assert_eq!(packet.frame, &data[HEADER_LEN..]);
            let mut again = vxlan::header(packet.vni).to_vec();
            again.extend_from_slice(packet.frame);
            assert_eq!(vxlan::parse(&again), Ok(packet));
        }
        Err(VxlanError::Truncated { len }) => {
            assert_eq!(len, data.len());
            assert!(len < HEADER_LEN);
        }
        Err(VxlanError::NoVni { flags }) => {
            assert_eq!(flags, data[0]);
            assert_eq!(flags & FLAG_VNI_VALID, 0);
        }
        Err(VxlanError::FrameTooShort { len }) => {
            assert_eq!(len, data.len() - HEADER_LEN);
            assert!(len < ETHERNET_HEADER_LEN);
        }
    }
}

/// An Ethernet frame of `len` bytes (at least a header) from `src` to `dst`.
fn ethernet(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; len.max(ETHERNET_HEADER_LEN)];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    frame
}

fn vxlan_packet(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut packet = vxlan::header(vni).to_vec();
    packet.extend_from_slice(frame);
    packet
}

fn vxlan_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let arp = ethernet([0xff; 6], [2, 0, 0, 0, 0, 1], 42);
    let unicast = ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 98);
    vec![
        (
            "broadcast-arp",
            vxlan_packet(ShortId::vni(ShortId(0x101), ShortId::BROADCAST), &arp),
        ),
        (
            "unicast",
            vxlan_packet(ShortId::vni(ShortId(0x101), ShortId(0x102)), &unicast),
        ),
        (
            "max-vni-header-only-frame",
            vxlan_packet(vxlan::VNI_MAX, &arp[..14]),
        ),
        ("truncated-header", vxlan::header(5)[..7].to_vec()),
    ]
}

// ---------------------------------------------------------------------------
// tcp_coalesce: inner frames from peers, merged before they enter the bridge.

/// The frames of one input: each a big-endian u16 length (up to 4 KiB) and
/// that many bytes; at most 200 frames.
fn coalesce_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut input = Bytes::new(data);
    let mut frames = Vec::new();
    while !input.is_empty() && frames.len() < 200 {
        let len = usize::from(u16::from_be_bytes([input.byte(), input.byte()])) % 4096;
        frames.push(input.take(len));
    }
    frames
}

/// Runs cover the frames in order; a run of several holds only segments,
/// at most 64, whose super-frame header is well formed and whose IPv4
/// packet stays within 64 KiB.
pub fn tcp_coalesce(data: &[u8]) {
    let frames = coalesce_frames(data);
    let mut runs: Vec<Run> = Vec::new();
    coalesce::plan(frames.len(), |i| frames[i], &mut runs);
    let mut next = 0;
    for run in &runs {
        assert_eq!(run.first, next, "runs in order, without gaps: {runs:?}");
        assert!((1..=coalesce::MAX_SEGMENTS).contains(&run.count));
        next += run.count;
        if run.count == 1 {
            continue;
        }
        let segments: Vec<Segment> = frames[run.first..next]
            .iter()
            .map(|f| Segment::parse(f).expect("a merged frame is a segment"))
            .collect();
        let bytes: usize = segments.iter().map(|s| s.payload().len()).sum();
        assert_eq!(run.bytes, bytes, "a run's payload is its segments'");
        let mut out = [0u8; coalesce::VNET_HDR_LEN + coalesce::MAX_HEADER];
        let len = coalesce::super_header(frames[run.first], run, &mut out)
            .expect("a run's first frame makes a header");
        let header = &out[coalesce::VNET_HDR_LEN..len];
        let ip_len = usize::from(u16::from_be_bytes([header[16], header[17]]));
        assert_eq!(ip_len, header.len() - ETHERNET_HEADER_LEN + bytes);
        assert!(ip_len <= 65_535);
        assert_eq!(
            &header[..16],
            &frames[run.first][..16],
            "Ethernet and IP start kept"
        );
    }
    assert_eq!(next, frames.len(), "every frame in a run");
}

fn coalesce_seeds() -> Vec<(&'static str, Vec<u8>)> {
    /// An ACK segment of `payload` bytes at `seq`, IP id `id`, PSH if `push`.
    fn segment(seq: u32, id: u16, payload: usize, push: bool) -> Vec<u8> {
        let mut f = ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 54 + payload);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[20] = 0x40;
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 1, 1]);
        f[30..34].copy_from_slice(&[10, 0, 1, 2]);
        f[34..38].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = if push { 0x18 } else { 0x10 };
        f[48..50].copy_from_slice(&512u16.to_be_bytes());
        f
    }
    let encode = |frames: &[Vec<u8>]| {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    };
    let burst: Vec<Vec<u8>> = (0..5u16)
        .map(|n| segment(1000 + u32::from(n) * 100, n, 100, n == 4))
        .collect();
    let mut mixed = burst.clone();
    mixed.insert(2, ethernet([0xff; 6], [2, 0, 0, 0, 0, 3], 42));
    vec![
        ("burst-ending-in-push", encode(&burst)),
        ("burst-cut-by-arp", encode(&mixed)),
    ]
}

// ---------------------------------------------------------------------------
// mesh_frames: the TCP stream after (and including) the handshake.

/// The limit a stream's frames are held to, chosen by the input's first byte.
#[derive(Clone, Copy, Debug)]
enum Limits {
    /// As a connection does: the hello limit, raised after the first frame.
    Connection,
    /// The limit after the handshake from the start.
    Established,
    /// A small limit, so that oversized frames follow valid ones.
    Small,
}

impl Limits {
    const SMALL: usize = 64;

    const fn of(byte: u8) -> Self {
        match byte % 3 {
            0 => Self::Connection,
            1 => Self::Established,
            _ => Self::Small,
        }
    }

    const fn byte(self) -> u8 {
        self as u8
    }

    const fn first(self) -> usize {
        match self {
            Self::Connection => MAX_HELLO_FRAME,
            Self::Established => MAX_FRAME,
            Self::Small => Self::SMALL,
        }
    }

    const fn after_first(self) -> usize {
        match self {
            Self::Connection => MAX_FRAME,
            other => other.first(),
        }
    }
}

/// What a decoder made of a stream.
#[derive(Debug, Default, PartialEq)]
struct Decoded {
    frames: Vec<Vec<u8>>,
    error: Option<WireError>,
}

/// Feeds `stream` in chunks of the given sizes (the rest at once after the
/// last), taking every complete frame after each feed, and checks the
/// decoder's bounds as it goes.
fn decode_stream(
    stream: &[u8],
    limits: Limits,
    chunks: &mut dyn Iterator<Item = usize>,
) -> Decoded {
    let mut decoder = FrameDecoder::new(limits.first());
    let mut max = limits.first();
    let mut out = Decoded::default();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = chunks.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let held = decoder.buffered();
        decoder.feed(chunk);
        if out.error.is_some() {
            // Failed for good: holds nothing, takes nothing, says the same.
            assert_eq!(decoder.buffered(), 0, "a failed decoder kept bytes");
            assert_eq!(
                decoder.next_frame().map(|f| f.map(<[u8]>::len)),
                Err(out.error.clone().unwrap())
            );
            continue;
        }
        assert_eq!(decoder.buffered(), held + chunk.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= max,
                        "frame of {} bytes over the limit {max}",
                        frame.len()
                    );
                    out.frames.push(frame.to_vec());
                    if out.frames.len() == 1 {
                        max = limits.after_first();
                        decoder.set_max(max);
                    }
                }
                Ok(None) => {
                    // At most one partial frame: its header and < max bytes.
                    assert!(
                        decoder.buffered() < 4 + max,
                        "decoder holds {} bytes waiting for a frame (limit {max})",
                        decoder.buffered()
                    );
                    break;
                }
                Err(e) => {
                    assert!(
                        matches!(e, WireError::Oversized { max: m, .. } if m == max),
                        "{e:?}"
                    );
                    assert_eq!(decoder.buffered(), 0, "a failed decoder kept bytes");
                    out.error = Some(e);
                    break;
                }
            }
        }
    }
    out
}

/// Input: a byte choosing the limits, a byte seeding the chunk sizes, then
/// the stream. The stream fed in chunks gives the same frames (and error) as
/// fed at once; the decoder never holds more than one frame's worth; every
/// message decoded re-encodes to itself.
pub fn mesh_frames(data: &[u8]) {
    let mut input = Bytes::new(data);
    let limits = Limits::of(input.byte());
    let mut state = u32::from(input.byte()) | 0x100;
    let stream = input.rest();
    let mut sizes = std::iter::from_fn(|| {
        // xorshift32: sizes from 1 to 97, some tiny, some spanning frames.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + (state % 97) as usize)
    });
    let chunked = decode_stream(stream, limits, &mut sizes);
    let whole = decode_stream(stream, limits, &mut std::iter::empty());
    assert_eq!(chunked, whole, "chunking changed what was decoded");
    for frame in &whole.frames {
        check_message(frame);
    }
}

/// A message a peer sent decodes, or not, without panicking; when it does,
/// it prints and re-encodes to the same message.
fn check_message(frame: &[u8]) -> Option<Message> {
    let message = protocol::decode(frame).ok()?;
    let _ = message.to_string();
    let encoded = protocol::encode(&message, usize::MAX)
        .unwrap_or_else(|e| panic!("cannot re-encode {message:?}: {e}"));
    assert_eq!(
        protocol::decode(&encoded[4..]).as_ref(),
        Ok(&message),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&encoded[4..])
    );
    Some(message)
}

fn encode(message: &Message) -> Vec<u8> {
    protocol::encode(message, MAX_FRAME).expect("seed messages fit a frame")
}

fn frames_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |limits: Limits, chunks: u8, messages: &[Message]| {
        let mut data = vec![limits.byte(), chunks];
        for m in messages {
            data.extend(encode(m));
        }
        data
    };
    let session = [
        Message::Hello(hello(2, "host2")),
        Message::Heartbeat,
        Message::Gossip(small_update()),
        Message::Refuse {
            reason: "shutting down".into(),
        },
    ];
    let mut truncated = with(Limits::Connection, 7, &session[..3]);
    truncated.truncate(truncated.len() - 5);
    let mut http = vec![Limits::Connection.byte(), 0];
    http.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    vec![
        ("connection", with(Limits::Connection, 0, &session)),
        (
            "connection-other-chunks",
            with(Limits::Connection, 1, &session),
        ),
        ("established", with(Limits::Established, 42, &session[1..])),
        (
            "small-limit-oversized",
            with(Limits::Small, 9, &session[1..]),
        ),
        ("truncated", truncated),
        ("http-client", http),
    ]
}

// ---------------------------------------------------------------------------
// mesh_handshake: the first frame of a connection.

const fn name(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

/// Peer `i`'s hello.
fn hello(i: u8, nickname: &str) -> Hello {
    Hello {
        protocol: PROTOCOL.into(),
        min_version: protocol::PROTOCOL_MIN_VERSION,
        max_version: protocol::PROTOCOL_MAX_VERSION,
        name: name(i),
        nickname: nickname.into(),
        uid: u64::from(i),
        nonce: 0x5eed,
        listen_port: protocol::DEFAULT_PORT,
        data_port: 6784,
        encrypted: false,
    }
}

/// Our hello (peer 1) in the handshake target.
fn our_hello() -> Hello {
    hello(1, "host1")
}

/// Input: a frame body. A hello accepted names our protocol, a valid
/// nickname, another peer, and the highest version both speak, and the peer
/// negotiating the other way agrees; a refusal is printable as it is.
pub fn mesh_handshake(data: &[u8]) {
    let Some(Message::Hello(theirs)) = check_message(data) else {
        return;
    };
    let ours = our_hello();
    match protocol::negotiate(&ours, &theirs) {
        Ok(version) => {
            assert_eq!(theirs.protocol, PROTOCOL);
            assert!(protocol::check_nickname(&theirs.nickname).is_ok());
            assert_ne!(theirs.name, ours.name);
            assert!(theirs.min_version <= version && version <= theirs.max_version);
            assert!(ours.min_version <= version && version <= ours.max_version);
            assert_eq!(version, ours.max_version.min(theirs.max_version));
            assert_eq!(
                protocol::negotiate(&theirs, &ours),
                Ok(version),
                "asymmetric"
            );
        }
        Err(refusal) => {
            let reason = refusal.to_string();
            assert!(reason.len() <= 1024, "a refusal of {} bytes", reason.len());
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
            match refusal {
                Refusal::VersionMismatch { .. } => assert!(
                    matches!(
                        protocol::negotiate(&theirs, &ours),
                        Err(Refusal::VersionMismatch { .. })
                    ),
                    "only one side refuses the versions"
                ),
                Refusal::SelfConnection | Refusal::NameClash(_) => {
                    assert_eq!(theirs.name, ours.name)
                }
                Refusal::WrongProtocol { .. } => assert_ne!(theirs.protocol, PROTOCOL),
                Refusal::BadHello(_) => {}
                // Password mode on one side only: the other refuses too.
                Refusal::PeerHasNoPassword => assert_eq!(
                    protocol::negotiate(&theirs, &ours),
                    Err(Refusal::WeHaveNoPassword)
                ),
                Refusal::WeHaveNoPassword => assert_eq!(
                    protocol::negotiate(&theirs, &ours),
                    Err(Refusal::PeerHasNoPassword)
                ),
            }
        }
    }
}

fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body = |h: Hello| encode(&Message::Hello(h))[4..].to_vec();
    let mut wrong_protocol = hello(2, "host2");
    wrong_protocol.protocol = "weave".into();
    let mut newer = hello(2, "host2");
    newer.min_version = protocol::PROTOCOL_MAX_VERSION + 1;
    newer.max_version = protocol::PROTOCOL_MAX_VERSION + 5;
    let mut twin = our_hello();
    twin.uid = 99;
    let mut password = hello(2, "host2");
    password.encrypted = true;
    vec![
        ("peer", body(hello(2, "host2"))),
        ("ourselves", body(our_hello())),
        ("name-clash", body(twin)),
        ("wrong-protocol", body(wrong_protocol)),
        ("newer-versions", body(newer)),
        ("password-mode", body(password)),
        ("control-characters", body(hello(3, "evil\u{1b}[2J"))),
    ]
}

// ---------------------------------------------------------------------------
// gossip_merge: topology entries from peers.

fn entry(i: u8, version: u64, uid: u64, links: &[u8]) -> PeerInfo {
    let mut e = PeerInfo::new(name(i), format!("host{i}"), uid, version);
    e.connections = links
        .iter()
        .map(|&j| ConnectionSummary {
            peer: name(j),
            address: SocketAddr::from(([10, 0, 0, j], protocol::DEFAULT_PORT)),
            outbound: i < j,
            established: true,
        })
        .collect();
    e
}

fn small_update() -> TopologyUpdate {
    TopologyUpdate {
        peers: vec![entry(2, 5, 2, &[1, 3]), entry(3, 7, 3, &[2])],
    }
}

/// Peer 1's view of a small mesh: peers 1, 2, 3.
fn small_topology() -> &'static Topology {
    static SMALL: OnceLock<Topology> = OnceLock::new();
    SMALL.get_or_init(|| {
        let mut t = Topology::new(entry(1, 1000, 1, &[2]));
        t.merge(&small_update());
        t
    })
}

/// A topology one peer short of full, so that a new peer fits and the next
/// one does not.
fn nearly_full_topology() -> &'static Topology {
    static FULL: OnceLock<Topology> = OnceLock::new();
    FULL.get_or_init(|| {
        let mut t = small_topology().clone();
        let fill = (0..MAX_PEERS - 1 - t.len())
            .map(|i| {
                let name = PeerName(Mac([2, 9, 0, 0, (i >> 8) as u8, i as u8]));
                PeerInfo::new(name, String::new(), 1, 1)
            })
            .collect();
        t.merge(&TopologyUpdate { peers: fill });
        assert_eq!(t.len(), MAX_PEERS - 1);
        t
    })
}

/// Input: a frame body. A gossip message merged into a small and a nearly
/// full topology keeps the topology within its caps and valid, never lets
/// an entry win over ours, keeps per peer the greatest entry seen, and
/// merging the same message again changes nothing and reports nothing.
pub fn gossip_merge(data: &[u8]) {
    let Some(Message::Gossip(update)) = check_message(data) else {
        return;
    };
    check_merge(small_topology(), &update);
    if !update.peers.is_empty() {
        check_merge(nearly_full_topology(), &update);
    }
}

fn check_merge(start: &Topology, update: &TopologyUpdate) {
    let mut t = start.clone();
    let outcome = t.merge(update);

    assert!(t.len() <= MAX_PEERS, "{} peers", t.len());
    assert_eq!(t.me(), start.me());
    let (ours, before) = (t.ours(), start.ours());
    assert_eq!(
        (
            &ours.name,
            &ours.nickname,
            ours.uid,
            ours.short_id,
            &ours.connections
        ),
        (
            &before.name,
            &before.nickname,
            before.uid,
            before.short_id,
            &before.connections
        ),
        "another peer changed our entry"
    );
    assert!(ours.version >= before.version);
    for peer in t.peers().filter(|p| p.name != t.me()) {
        peer.validate()
            .unwrap_or_else(|e| panic!("kept an invalid entry for {}: {e}", peer.name));
        assert!(peer.connections.len() <= MAX_CONNECTIONS_PER_PEER);
    }
    for old in start.peers() {
        let new = t
            .get(&old.name)
            .unwrap_or_else(|| panic!("{} was dropped", old.name));
        assert!(new == old || new.supersedes(old), "{} went back", old.name);
    }
    for name in &outcome.changed {
        assert!(t.get(name).is_some(), "{name} changed but is not there");
    }
    for e in &update.peers {
        if e.name == t.me() {
            // An invalid entry is rejected by every peer, so nobody believes
            // it; a valid one must never win over ours.
            let rejected = outcome.rejected.iter().any(|(n, _)| *n == e.name);
            assert!(
                e.validate().is_ok() || rejected,
                "an invalid entry with our name was not rejected"
            );
            assert!(
                e.validate().is_err() || !e.supersedes(t.ours()),
                "an entry with our name (version {}, uid {}) wins over ours (version {}, uid {}): \
                 our peers will believe it",
                e.version,
                e.uid,
                t.ours().version,
                t.ours().uid
            );
            continue;
        }
        let rejected = outcome.rejected.iter().any(|(n, _)| *n == e.name);
        match t.get(&e.name) {
            // Invalid entries are rejected, whatever their version.
            _ if e.validate().is_err() => assert!(rejected, "{} invalid, not rejected", e.name),
            Some(kept) => assert!(!e.supersedes(kept), "{} kept an older entry", e.name),
            None => assert!(rejected, "{} neither merged nor rejected", e.name),
        }
    }

    let merged = t.clone();
    let again = t.merge(update);
    assert_eq!(
        t, merged,
        "merging the same update twice changed the topology"
    );
    assert!(
        !again.is_changed(),
        "merging the same update twice reported changes to {:?}",
        again.changed
    );
}

fn gossip_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body =
        |peers: Vec<PeerInfo>| encode(&Message::Gossip(TopologyUpdate { peers }))[4..].to_vec();
    let mut bad_short_id = entry(5, 1, 1, &[]);
    bad_short_id.short_id = ShortId(bad_short_id.short_id.0 ^ 1);
    vec![
        (
            "new-peers",
            body(vec![entry(4, 1, 4, &[2]), entry(5, 3, 5, &[])]),
        ),
        (
            "newer-and-older",
            body(vec![entry(2, 9, 2, &[3]), entry(3, 1, 3, &[])]),
        ),
        (
            "same-peer-three-versions",
            body(vec![
                entry(4, 2, 4, &[]),
                entry(4, 9, 1, &[1]),
                entry(4, 9, 4, &[]),
            ]),
        ),
        ("our-name-newer", body(vec![entry(1, 5000, 77, &[3])])),
        ("our-name-older", body(vec![entry(1, 10, 1, &[])])),
        (
            "invalid-entries",
            body(vec![
                bad_short_id,
                entry(6, 1, 1, &[6]),
                entry(7, 1, 1, &[2, 2]),
            ]),
        ),
        (
            "whole-topology",
            encode(&Message::Gossip(small_topology().to_update()))[4..].to_vec(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// ipam_merge: IPAM messages from peers, and rings merged into ours.

/// The ring id of the rings the checks merge into (seeds share it, so that
/// they reach the merge rather than the identity check).
const IPAM_RING_ID: u64 = 0x5eed;

const fn ipam_peer(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

/// Our rings before the merge, as peer 1: nothing yet; all of the range
/// with addresses in use; half of it (the other half given to peer 2),
/// with addresses in use on both sides of peer 3's would-be tokens.
fn ipam_states() -> &'static [(Ring, Space)] {
    static STATES: OnceLock<Vec<(Ring, Space)>> = OnceLock::new();
    STATES.get_or_init(|| {
        let range = "10.32.0.0/12".parse().expect("a valid range");
        let me = ipam_peer(1);
        let fresh = Ring::new(range).expect("a valid range");
        let mut all = Ring::init_with_id(range, me, IPAM_RING_ID).expect("a valid range");
        let mut used = Space::new();
        for _ in 0..3 {
            used.allocate(&all, me, range).expect("room");
        }
        used.claim(&all, me, "10.36.0.7/12".parse().expect("a cidr"))
            .expect("ours");
        all.report_free(me, &used);
        let mut half = all.clone();
        half.donate(me, ipam_peer(2), range, &used)
            .expect("half to give");
        vec![(fresh, Space::new()), (all, used.clone()), (half, used)]
    })
}

/// Input: the body of a frame. An IPAM packet is checked as the router
/// checks it (from neighbour peer 2); a ring is merged into each of our
/// states. A merge either fails and changes nothing, or keeps a valid ring
/// in which every address we use is still ours, and merging it again
/// changes nothing more.
pub fn ipam_merge(data: &[u8]) {
    let Some(Message::Ipam(packet)) = check_message(data) else {
        return;
    };
    let _ = packet.check(ipam_peer(2));
    let IpamMessage::Ring { ring: theirs } = &packet.body else {
        return;
    };
    let me = ipam_peer(1);
    for (start, space) in ipam_states() {
        let mut ours = start.clone();
        match ours.merge(theirs, me, space) {
            Err(e) => {
                assert_eq!(&ours, start, "a failed merge ({e}) changed our ring");
                if theirs.validate().is_ok() {
                    assert!(
                        matches!(
                            e,
                            RingError::Conflict { .. }
                                | RingError::Invalid(Malformed::TooManyEntries(_))
                        ),
                        "a valid ring refused as {e}"
                    );
                }
            }
            Ok(outcome) => {
                ours.validate()
                    .unwrap_or_else(|e| panic!("the merge made an invalid ring: {e}"));
                assert!(
                    space.not_owned(&ours, me).is_empty(),
                    "addresses we use were taken from us (refused: {:?})",
                    outcome.refused
                );
                assert_eq!(ours.range(), start.range());
                let once = ours.clone();
                let again = ours.merge(theirs, me, space).expect("merged once");
                assert!(!again.changed, "merging twice changed the ring again");
                assert_eq!(ours, once);
            }
        }
    }
}

fn ipam_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body = |packet: IpamPacket| encode(&Message::Ipam(packet))[4..].to_vec();
    let range = "10.32.0.0/12".parse().expect("a valid range");
    let (p2, p3) = (ipam_peer(2), ipam_peer(3));
    let ring = |r: Ring| IpamMessage::Ring { ring: r };
    // Peer 2's view after it was given half and gave a quarter to peer 3.
    let mut theirs = ipam_states()[2].0.clone();
    theirs.donate(p2, p3, range, &Space::new()).expect("room");
    // Peer 2 took over everything of ours (an rmpeer of a live peer).
    let mut takeover = ipam_states()[1].0.clone();
    takeover.transfer(ipam_peer(1), p2);
    vec![
        ("donated", body(IpamPacket::gossip(p2, ring(theirs)))),
        ("takeover", body(IpamPacket::gossip(p2, ring(takeover)))),
        (
            "uninitialised",
            body(IpamPacket::gossip(
                p2,
                ring(Ring::new(range).expect("valid")),
            )),
        ),
        (
            "separate-ring",
            body(IpamPacket::gossip(
                p2,
                ring(Ring::init_with_id(range, p2, 77).expect("valid")),
            )),
        ),
        (
            "space-request-routed",
            body(IpamPacket::to(
                p3,
                ipam_peer(1),
                IpamMessage::SpaceRequest {
                    subnet: "10.40.0.0/13".parse().expect("a cidr"),
                },
            )),
        ),
    ]
}

// ---------------------------------------------------------------------------
// peer_target_parse: peer addresses from users (and their files).

/// Input: text (invalid UTF-8 replaced). A target accepted has a port, a
/// lowercase host that is an IP address or a valid host name, and prints as
/// text that parses back to it; a rejection quotes a bounded prefix.
pub fn peer_target_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Target::parse(&text) {
        Ok(target) => {
            assert_ne!(target.port(), 0);
            let host = target.host();
            assert!(!host.is_empty());
            assert_eq!(host, host.to_ascii_lowercase());
            assert!(
                !host.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{host:?}"
            );
            if target.literal().is_none() {
                assert!(host.len() <= 253, "host name of {} bytes", host.len());
            }
            let shown = target.to_string();
            assert_eq!(
                Target::parse(&shown).as_ref(),
                Ok(&target),
                "printed as {shown:?}"
            );
        }
        Err(bad) => assert!(bad.target.chars().count() <= 300),
    }
}

fn target_seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("ipv4", "10.0.0.1"),
        ("ipv4-port", " 10.0.0.1:7000 "),
        ("host", "Host-2.example"),
        ("ipv6", "::1"),
        ("ipv6-brackets-port", "[fe80::1]:99"),
        ("bad-port", "host:70000"),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.as_bytes().to_vec()))
    .collect()
}

// ---------------------------------------------------------------------------
// overlay_verdict: what the plain data plane does with each frame.

/// Peer ids the input picks from: a few peers, the edges of the id space,
/// and the broadcast id, so that tables and packets name the same peers.
const IDS: [ShortId; 8] = [
    ShortId(0x101),
    ShortId(0x102),
    ShortId(0x103),
    ShortId(0x104),
    ShortId(0x105),
    ShortId(0x000),
    ShortId(0xffe),
    ShortId::BROADCAST,
];

/// MACs the input picks from: unicast ones, broadcast, multicast.
const MACS: [[u8; 6]; 8] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [2, 0, 0, 0, 0, 3],
    [2, 0, 0, 0, 0, 4],
    [2, 0, 0, 0, 0, 5],
    [0x0a, 0, 0, 0, 0, 6],
    [0xff; 6],
    [0x01, 0, 0x5e, 0, 0, 1],
];

/// Underlay addresses the input picks from; the IPv4-mapped one is a
/// neighbour's address the table may hold, never a (canonical) sender.
fn address(byte: u8) -> SocketAddr {
    const ADDRS: [&str; 8] = [
        "10.0.0.1:6784",
        "10.0.0.2:6784",
        "10.0.0.3:6784",
        "10.0.0.4:6784",
        "10.0.0.1:9999",
        "[fd00::5]:6784",
        "[::ffff:10.0.0.2]:6784",
        "192.0.2.9:6784",
    ];
    ADDRS[usize::from(byte) % ADDRS.len()].parse().unwrap()
}

fn id(byte: u8) -> ShortId {
    IDS[usize::from(byte) % IDS.len()]
}

/// The senders the receive path can see: canonical addresses or none.
fn sender(byte: u8) -> Option<SocketAddr> {
    match byte % 8 {
        6 => None,
        _ => Some(address(byte)),
    }
}

/// A frame built from the input: destination and source from [`MACS`], and
/// a length (at least an Ethernet header).
fn built_frame(input: &mut Bytes<'_>) -> Vec<u8> {
    let dst = MACS[usize::from(input.byte()) % MACS.len()];
    let src = MACS[usize::from(input.byte()) % MACS.len()];
    ethernet(dst, src, usize::from(input.byte()) * 8)
}

/// The operations of the verdict target, one byte each, then operands.
#[derive(Clone, Copy)]
enum Op {
    /// len, then len bytes: a frame from the bridge as it came.
    RawFromBridge,
    /// A frame from the bridge built from [`MACS`] (see [`built_frame`]).
    FromBridge,
    /// sender, len, then len bytes: a UDP payload as it came.
    RawFromPeer,
    /// sender, origin, destination, then a built frame, in VXLAN.
    FromPeer,
    /// n: n * 4 seconds pass (MAC entries live 300 s).
    Wait,
    /// The tables forget what expired.
    Expire,
}

impl Op {
    const ALL: [Self; 6] = [
        Self::RawFromBridge,
        Self::FromBridge,
        Self::RawFromPeer,
        Self::FromPeer,
        Self::Wait,
        Self::Expire,
    ];
}

/// Input: a forwarding table, table sizes and an MTU, then frames from the
/// bridge and packets from peers (see [`Op`] and [`VerdictScript`]). Every
/// verdict is checked against the table and the MAC tables: only
/// well-formed frames within the MTU go anywhere, unicast follows the
/// table's next hop, relays never go back to the sender, nothing is learnt
/// from a dropped or relayed packet, a MAC is never both local and behind a
/// peer, and the MAC tables stay within their capacity.
pub fn overlay_verdict(data: &[u8]) {
    let mut input = Bytes::new(data);
    let mut table = ForwardingTable {
        me: id(input.byte()),
        ..ForwardingTable::default()
    };
    let max_frame = ETHERNET_HEADER_LEN + usize::from(input.byte()) * 8;
    let capacity = 1 + usize::from(input.byte() % 8);
    for _ in 0..input.byte() % 6 {
        table
            .neighbours
            .insert(id(input.byte()), address(input.byte()));
    }
    for _ in 0..input.byte() % 8 {
        table.next_hop.insert(id(input.byte()), id(input.byte()));
    }
    for _ in 0..input.byte() % 4 {
        let origin = id(input.byte());
        let children = (0..input.byte() % 4).map(|_| id(input.byte())).collect();
        table.broadcast.insert(origin, children);
    }
    let routes = Routes::compile(Arc::new(table));
    let mut macs = Macs {
        local: MacTable::new(capacity, Duration::from_mins(5)),
        remote: MacTable::new(capacity, Duration::from_mins(5)),
        // As the xdp data plane keeps it: the journal of remote changes,
        // never drained here, so its bound is exercised too.
        journal: Some(Default::default()),
    };
    let mut now = Instant::now();
    while !input.is_empty() {
        match Op::ALL[usize::from(input.byte()) % Op::ALL.len()] {
            Op::RawFromBridge => {
                let len = usize::from(input.byte());
                let frame = input.take(len).to_vec();
                check_from_bridge(&frame, max_frame, &routes, &mut macs, now);
            }
            Op::FromBridge => {
                let frame = built_frame(&mut input);
                check_from_bridge(&frame, max_frame, &routes, &mut macs, now);
            }
            Op::RawFromPeer => {
                let from = sender(input.byte());
                let len = usize::from(input.byte());
                let payload = input.take(len).to_vec();
                check_from_peer(from, &payload, max_frame, &routes, &mut macs, now);
            }
            Op::FromPeer => {
                let from = sender(input.byte());
                let vni = ShortId::vni(id(input.byte()), id(input.byte()));
                let payload = vxlan_packet(vni, &built_frame(&mut input));
                check_from_peer(from, &payload, max_frame, &routes, &mut macs, now);
            }
            Op::Wait => now += Duration::from_secs(u64::from(input.byte()) * 4),
            Op::Expire => macs.expire(now),
        }
        assert!(macs.local.len() <= capacity && macs.remote.len() <= capacity);
    }
}

fn mac_at(frame: &[u8], offset: usize) -> Mac {
    Mac(frame[offset..offset + 6].try_into().unwrap())
}

const fn is_group(mac: Mac) -> bool {
    mac.0[0] & 1 != 0
}

fn check_from_bridge(
    frame: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) {
    let sizes = (macs.local.len(), macs.remote.len());
    let verdict = verdict::from_bridge(frame, max_frame, routes, macs, now);
    let well_formed = frame.len() >= ETHERNET_HEADER_LEN && !is_group(mac_at(frame, 6));
    if !well_formed || frame.len() > max_frame {
        assert!(
            matches!(verdict, FromBridge::Drop(_)),
            "{verdict:?} for a bad frame"
        );
        assert_eq!(
            (macs.local.len(), macs.remote.len()),
            sizes,
            "learnt from a bad frame"
        );
        return;
    }
    let (dst, src) = (mac_at(frame, 0), mac_at(frame, 6));
    assert_eq!(
        macs.local.lookup(&src, now),
        Some(()),
        "source not learnt as local"
    );
    assert_eq!(
        macs.remote.lookup(&src, now),
        None,
        "a local MAC is also behind a peer"
    );
    match verdict {
        FromBridge::Flood => assert!(
            is_group(dst)
                || (macs.local.lookup(&dst, now).is_none()
                    && macs.remote.lookup(&dst, now).is_none()),
            "flooded a frame for a known {dst}"
        ),
        FromBridge::Unicast { peer, via } => {
            assert!(!is_group(dst));
            assert_eq!(macs.remote.lookup(&dst, now), Some(peer));
            assert_eq!(routes.next_hop(peer).map(|(_, a)| a), Some(via));
        }
        FromBridge::Local => assert_eq!(macs.local.lookup(&dst, now), Some(())),
        FromBridge::Drop(reason) => {
            let peer = macs.remote.lookup(&dst, now);
            assert!(
                peer.is_some_and(|p| routes.next_hop(p).is_none()),
                "a good frame to {dst} dropped ({reason:?})"
            );
        }
    }
}

fn check_from_peer(
    from: Option<SocketAddr>,
    payload: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) {
    let sizes = (macs.local.len(), macs.remote.len());
    let verdict = verdict::from_peer(from, payload, max_frame, routes, macs, now);
    let neighbour = from.and_then(|a| routes.neighbour_at(&a));
    let packet = vxlan::parse(payload);
    match verdict {
        FromPeer::Deliver {
            origin,
            sender,
            broadcast,
        } => {
            assert_eq!(Some(sender), neighbour, "delivered from a stranger");
            let packet = packet.expect("delivered a malformed packet");
            assert!(packet.frame.len() <= max_frame);
            let (o, dest) = ShortId::from_vni(packet.vni);
            assert_eq!(origin, o);
            assert_ne!(
                origin,
                routes.me(),
                "delivered a packet claiming to be ours"
            );
            assert!(
                routes.reaches(origin),
                "delivered from an unreachable origin"
            );
            assert_eq!(broadcast, dest == ShortId::BROADCAST);
            assert!(
                broadcast || dest == routes.me(),
                "delivered a packet for {dest}"
            );
            let src = mac_at(packet.frame, 6);
            assert!(!is_group(src));
            assert_eq!(
                macs.local.lookup(&src, now),
                None,
                "a peer claimed a local MAC"
            );
            assert_eq!(macs.remote.lookup(&src, now), Some(origin));
        }
        FromPeer::Relay { via } => {
            let sender = neighbour.expect("relayed for a stranger");
            let packet = packet.expect("relayed a malformed packet");
            assert!(packet.frame.len() <= max_frame);
            let (origin, dest) = ShortId::from_vni(packet.vni);
            assert_ne!(origin, routes.me());
            assert!(dest != routes.me() && dest != ShortId::BROADCAST);
            let (hop, addr) = routes.next_hop(dest).expect("relayed without a route");
            assert_eq!(addr, via);
            assert_ne!(hop, sender, "relayed back to the sender");
            assert_eq!(
                (macs.local.len(), macs.remote.len()),
                sizes,
                "a relay learnt"
            );
        }
        FromPeer::Drop(_) => {
            assert_eq!(
                (macs.local.len(), macs.remote.len()),
                sizes,
                "learnt from a drop"
            );
        }
    }
}

/// Writes inputs for [`overlay_verdict`]: the seeds, and any test that wants
/// a readable script rather than bytes.
pub struct VerdictScript(Vec<u8>);

impl VerdictScript {
    fn pick<T: PartialEq>(pool: &[T], item: &T) -> u8 {
        pool.iter().position(|x| x == item).expect("in the pool") as u8
    }

    /// `neighbours` by index into the address pool.
    pub fn new(
        me: ShortId,
        mtu_units: u8,
        capacity: u8,
        neighbours: &[(ShortId, u8)],
        next_hop: &[(ShortId, ShortId)],
        broadcast: &[(ShortId, &[ShortId])],
    ) -> Self {
        let mut b = vec![Self::pick(&IDS, &me), mtu_units, capacity - 1];
        b.push(neighbours.len() as u8);
        for (id, addr) in neighbours {
            b.extend([Self::pick(&IDS, id), *addr]);
        }
        b.push(next_hop.len() as u8);
        for (dest, via) in next_hop {
            b.extend([Self::pick(&IDS, dest), Self::pick(&IDS, via)]);
        }
        b.push(broadcast.len() as u8);
        for (origin, children) in broadcast {
            b.extend([Self::pick(&IDS, origin), children.len() as u8]);
            b.extend(children.iter().map(|c| Self::pick(&IDS, c)));
        }
        Self(b)
    }

    fn op(mut self, op: Op, operands: &[u8]) -> Self {
        self.0.push(op as u8);
        self.0.extend_from_slice(operands);
        self
    }

    const fn frame(dst: usize, src: usize, len: usize) -> [u8; 3] {
        [dst as u8, src as u8, (len / 8) as u8]
    }

    pub fn bridge_frame(self, dst: usize, src: usize, len: usize) -> Self {
        self.op(Op::FromBridge, &Self::frame(dst, src, len))
    }

    pub fn peer_packet(
        self,
        sender: u8,
        origin: ShortId,
        dest: ShortId,
        dst: usize,
        src: usize,
    ) -> Self {
        let mut operands = vec![sender, Self::pick(&IDS, &origin), Self::pick(&IDS, &dest)];
        operands.extend(Self::frame(dst, src, 60));
        self.op(Op::FromPeer, &operands)
    }

    pub fn raw_peer_payload(self, sender: u8, payload: &[u8]) -> Self {
        let mut operands = vec![sender, payload.len() as u8];
        operands.extend_from_slice(payload);
        self.op(Op::RawFromPeer, &operands)
    }

    pub fn raw_bridge_frame(self, frame: &[u8]) -> Self {
        let mut operands = vec![frame.len() as u8];
        operands.extend_from_slice(frame);
        self.op(Op::RawFromBridge, &operands)
    }

    pub fn wait(self, seconds: u64) -> Self {
        self.op(Op::Wait, &[(seconds / 4) as u8])
    }

    pub fn expire(self) -> Self {
        self.op(Op::Expire, &[])
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn verdict_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let [a, b, c, ..] = IDS;
    // Peers in a line A - B - C, seen from B; addresses 0 and 2 are A's and C's.
    let line = || {
        VerdictScript::new(
            b,
            181, // 14 + 1448 bytes
            8,
            &[(a, 0), (c, 2)],
            &[(a, a), (c, c)],
            &[(a, &[c]), (b, &[a, c]), (c, &[a])],
        )
    };
    let (local, at_a, at_c, bcast) = (1, 0, 2, 6);
    let garbage = b"\x00garbage on the data port".to_vec();
    let mut truncated = vxlan_packet(ShortId::vni(a, b), &ethernet(MACS[local], MACS[at_a], 60));
    truncated.truncate(20);
    vec![
        (
            "learn-then-unicast",
            line()
                .bridge_frame(bcast, local, 60)
                .peer_packet(0, a, b, local, at_a)
                .bridge_frame(at_a, local, 98)
                .into_bytes(),
        ),
        (
            "broadcast-and-relay",
            line()
                .peer_packet(0, a, ShortId::BROADCAST, bcast, at_a)
                .peer_packet(0, a, c, at_c, at_a)
                .peer_packet(2, a, c, at_c, at_a)
                .into_bytes(),
        ),
        (
            "spoofing",
            line()
                .bridge_frame(bcast, local, 60)
                .peer_packet(0, a, ShortId::BROADCAST, bcast, local)
                .peer_packet(0, b, ShortId::BROADCAST, bcast, at_a)
                .into_bytes(),
        ),
        (
            "expiry-then-local",
            line()
                .peer_packet(0, a, b, local, at_a)
                .wait(304)
                .expire()
                .bridge_frame(bcast, at_a, 60)
                .peer_packet(2, c, b, local, at_a)
                .into_bytes(),
        ),
        (
            "malformed",
            line()
                .raw_peer_payload(0, &garbage)
                .raw_peer_payload(0, &truncated)
                .raw_peer_payload(7, &vxlan_packet(0, &ethernet(MACS[local], MACS[at_a], 60)))
                .raw_bridge_frame(&[0xff; 13])
                .bridge_frame(local, bcast, 60)
                .bridge_frame(at_a, local, 2000)
                .into_bytes(),
        ),
        (
            "small-tables",
            VerdictScript::new(b, 181, 2, &[(a, 0)], &[(a, a), (c, a)], &[])
                .bridge_frame(bcast, 1, 60)
                .bridge_frame(bcast, 2, 60)
                .bridge_frame(bcast, 3, 60)
                .peer_packet(0, a, b, 1, 4)
                .peer_packet(0, c, b, 1, 0)
                .into_bytes(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// sealed_open: password mode's data frames, as a receiver opens them.

/// The key every `sealed_open` input is opened with (its seeds are sealed with it).
fn fuzz_data_key() -> seal::KeyBytes {
    seal::KeyBytes::new([0x42; 32])
}

/// Input: a first byte choosing what the rest is. Even: one sealed packet,
/// opened twice with a fresh key state: nothing opens unless it was sealed
/// under the key, and what opens once is a replay the second time; a
/// failure changes neither the window nor the packet. Odd: a sequence of
/// counters (a 16-bit step back or forward each) through a replay window,
/// against a model: each counter taken once, none too old.
pub fn sealed_open(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let mode = bytes.byte();
    if mode.is_multiple_of(2) {
        let input = bytes.rest();
        let rx = RecvKey::new(&fuzz_data_key());
        let mut packet = input.to_vec();
        match rx.open_as_vxlan(&mut packet) {
            Ok(range) => {
                assert_eq!(range.start, seal::COUNTER_LEN);
                assert_eq!(range.end, input.len() - seal::TAG_LEN);
                assert_eq!(
                    &packet[range.start..range.start + HEADER_LEN],
                    &input[..HEADER_LEN]
                );
                assert!(range.len() >= HEADER_LEN + ETHERNET_HEADER_LEN);
                let again = rx.open(&mut input.to_vec());
                assert!(matches!(again, Err(OpenError::Replayed(_))), "{again:?}");
            }
            Err(OpenError::Truncated { len }) => {
                assert_eq!(len, input.len());
                assert!(len < seal::FRAME_OFFSET + ETHERNET_HEADER_LEN + seal::TAG_LEN);
            }
            Err(e) => {
                assert_eq!(packet, input, "a packet that failed ({e}) was changed");
            }
        }
    } else {
        let mut window = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut base: u64 = u64::from(bytes.byte()) << 56;
        while !bytes.is_empty() {
            let step = u64::from(u16::from_le_bytes([bytes.byte(), bytes.byte()]));
            let back = bytes.byte() & 1 == 1;
            let n = if back {
                base.saturating_sub(step)
            } else {
                base.saturating_add(step)
            };
            base = base.max(n);
            let expected = n < seal::REJECT_AFTER
                && !seen.contains(&n)
                && top.is_none_or(|t| n > t || t - n < seal::WINDOW - 64);
            let accepted = window.check(n);
            assert_eq!(accepted, expected, "counter {n}, top {top:?}");
            if accepted {
                window.mark(n);
                if seen.len() < 100_000 {
                    seen.insert(n);
                }
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
    }
}

fn sealed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tx = SendKey::new(&fuzz_data_key());
    let sealed = |tx: &SendKey, frame: &[u8]| {
        let mut p = vec![0u8; seal::FRAME_OFFSET + frame.len() + seal::TAG_LEN];
        p[..HEADER_LEN].copy_from_slice(&vxlan::header(0x101_fff));
        p[seal::FRAME_OFFSET..seal::FRAME_OFFSET + frame.len()].copy_from_slice(frame);
        tx.seal(&mut p, frame.len()).expect("room");
        p
    };
    let frame = ethernet([0xff; 6], [2, 0, 0, 0, 0, 1], 60);
    let first = sealed(&tx, &frame);
    let second = sealed(&tx, &frame);
    let mut flipped = first.clone();
    flipped[20] ^= 1;
    let with_mode = |mode: u8, p: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(p);
        v
    };
    vec![
        ("sealed", with_mode(0, &first)),
        ("sealed-second", with_mode(0, &second)),
        ("flipped", with_mode(0, &flipped)),
        ("truncated", with_mode(0, &first[..30])),
        (
            "plain-vxlan",
            with_mode(0, &vxlan_packet(0x101_fff, &frame)),
        ),
        (
            "window-steps",
            vec![
                1, 0, 10, 0, 0, 5, 0, 1, 0xff, 0x07, 0, 1, 0, 0, 0, 0xff, 0xff, 1,
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------
// noise_handshake: password mode's control connection.

/// Input: a first byte choosing the role, then a message. 0: the
/// initiator's first handshake message, read by a responder; 1: the
/// responder's reply, read by an initiator that sent a genuine first; 2:
/// transport records after a genuine handshake. Forged messages fail and
/// deliver nothing; the genuine peer's records still open to what was sent.
pub fn noise_handshake(data: &[u8]) {
    let psk = Psk::from_bytes([7; 32]);
    let prologue = noise::prologue(b"initiator hello", b"responder hello");
    let mut bytes = Bytes::new(data);
    let mode = bytes.byte() % 3;
    let input = bytes.rest();
    let handshake =
        |initiator| Handshake::new(&psk, &prologue, initiator).expect("valid parameters");
    match mode {
        0 => {
            let mut responder = handshake(false);
            if responder.read(input).is_ok() {
                assert_eq!(input.len(), noise::MAX_HANDSHAKE_MESSAGE);
            }
        }
        1 => {
            let mut initiator = handshake(true);
            initiator.write().expect("first message");
            if initiator.read(input).is_ok() {
                assert_eq!(input.len(), noise::MAX_HANDSHAKE_MESSAGE);
            }
        }
        _ => {
            let mut initiator = handshake(true);
            let mut responder = handshake(false);
            responder
                .read(&initiator.write().expect("first message"))
                .expect("genuine first message");
            initiator
                .read(&responder.write().expect("reply"))
                .expect("genuine reply");
            let (ci, _) = initiator.finish().expect("finished");
            let (cr, _) = responder.finish().expect("finished");
            let (mut si, mut oi) = ci.split();
            let (_, mut or) = cr.split();
            let mut out = Vec::new();
            let _ = oi.open(input, &mut out);
            assert!(
                out.is_empty(),
                "forged records delivered {} bytes",
                out.len()
            );
            let mut wire = Vec::new();
            si.seal(input, &mut wire).expect("seal");
            let mut got = Vec::new();
            or.open(&wire, &mut got).expect("genuine records open");
            assert_eq!(got, input);
        }
    }
}

fn noise_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with_mode = |mode: u8, p: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(p);
        v
    };
    vec![
        ("first-zeros", with_mode(0, &[0; 48])),
        ("first-short", with_mode(0, &[9; 31])),
        ("reply-ones", with_mode(1, &[1; 48])),
        ("reply-long", with_mode(1, &[1; 200])),
        (
            "record",
            with_mode(
                2,
                &[
                    0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                ],
            ),
        ),
        ("record-short", with_mode(2, &[0, 3, 1, 2, 3])),
        ("record-partial", with_mode(2, &[0xff, 0xff, 0])),
    ]
}
