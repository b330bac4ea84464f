//! The `tcp_segment` fuzz target: a container's TSO super-frame, cut into
//! segments that fit the MTU (`wire::segment`), and merged back by the
//! receiver's coalescer (`wire::coalesce`): a round trip.

use weave_agent::overlay::coalesce::{self, Run, Segment};
use weave_agent::overlay::segment::SuperFrame;
use weave_agent::overlay::vxlan::ETHERNET_HEADER_LEN;

use super::Bytes;

const IP: usize = ETHERNET_HEADER_LEN;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;
const MIN_MTU: usize = 576;
const MAX_MTU: usize = 9000;

/// What one input describes: a super-frame and how it arrives.
struct Input {
    ipv6: bool,
    /// IPv4 DF.
    dont_fragment: bool,
    /// The IPv4 total length (IPv6 payload length) left 0, as GSO may.
    zero_length: bool,
    /// IPv4 options and TCP options, each a multiple of 4 bytes, up to 40.
    ip_options: Vec<u8>,
    tcp_options: Vec<u8>,
    flags: u8,
    mtu: usize,
    seq: u32,
    id: u16,
    urgent: u16,
    /// Ports, acknowledgement number, window, TOS (traffic class), TTL
    /// (hop limit).
    misc: [u8; 12],
    /// Source and destination address (IPv4 uses the first 4 bytes of each).
    addresses: [u8; 32],
    payload: Vec<u8>,
    /// Where the frame is cut into pieces, past its headers.
    cuts: Vec<usize>,
}

/// The bytes that become the input to `tcp_segment` for `input`, so that
/// seeds say what they are (the inverse of `Input::read`, up to clamping).
struct Shape {
    ipv6: bool,
    dont_fragment: bool,
    zero_length: bool,
    ip_options: u8,
    tcp_options: u8,
    flags: u8,
    mtu: u16,
    payload_len: u16,
    seq: u32,
    id: u16,
    urgent: u16,
    cuts: Vec<u16>,
    /// Option bytes, then the payload's pattern.
    rest: Vec<u8>,
}

impl Shape {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            u8::from(self.ipv6)
                | (u8::from(self.dont_fragment) << 1)
                | (u8::from(self.zero_length) << 2),
            self.ip_options,
            self.tcp_options,
            self.flags,
        ];
        out.extend_from_slice(&(self.mtu - MIN_MTU as u16).to_be_bytes());
        out.extend_from_slice(&self.payload_len.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.urgent.to_be_bytes());
        out.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 7, 2, 0, 0, 64]);
        let mut addresses = [0u8; 32];
        addresses[..4].copy_from_slice(&[10, 0, 1, 1]);
        addresses[16..20].copy_from_slice(&[10, 0, 1, 2]);
        if self.ipv6 {
            addresses[..2].copy_from_slice(&[0xfd, 0]);
            addresses[16..18].copy_from_slice(&[0xfd, 0]);
            addresses[15] = 1;
            addresses[31] = 2;
        }
        out.extend_from_slice(&addresses);
        out.push(self.cuts.len() as u8);
        for cut in &self.cuts {
            out.extend_from_slice(&cut.to_be_bytes());
        }
        out.extend_from_slice(&self.rest);
        out
    }
}

impl Input {
    fn read(data: &[u8]) -> Self {
        let mut input = Bytes::new(data);
        let shape = input.byte();
        let ipv6 = shape & 1 != 0;
        let ip_options_len = if ipv6 {
            input.byte();
            0
        } else {
            usize::from(input.byte() % 11) * 4
        };
        let tcp_options_len = usize::from(input.byte() % 11) * 4;
        let flags = input.byte();
        let mut u16_ = || u16::from_be_bytes([input.byte(), input.byte()]);
        let mtu = MIN_MTU + usize::from(u16_()) % (MAX_MTU - MIN_MTU + 1);
        let payload_len = usize::from(u16_());
        let seq = (u32::from(u16_()) << 16) | u32::from(u16_());
        let id = u16_();
        let urgent = u16_();
        let mut misc = [0u8; 12];
        for b in &mut misc {
            *b = input.byte();
        }
        let mut addresses = [0u8; 32];
        for b in &mut addresses {
            *b = input.byte();
        }
        let cut_count = usize::from(input.byte() % 8);
        let cuts: Vec<usize> = (0..cut_count)
            .map(|_| usize::from(u16::from_be_bytes([input.byte(), input.byte()])))
            .collect();
        let mut options = |len: usize| {
            let mut o = input.take(len).to_vec();
            o.resize(len, 0);
            o
        };
        let ip_options = options(ip_options_len);
        let tcp_options = options(tcp_options_len);
        let ip_header = if ipv6 { 40 } else { 20 + ip_options_len };
        let max_payload = 65_535 - 20 - tcp_options_len - if ipv6 { 0 } else { ip_header };
        let pattern = input.rest();
        let payload = (0..payload_len.min(max_payload))
            .map(|k| match pattern.len() {
                0 => (k * 31 + k / 256) as u8,
                n => pattern[k % n] ^ (k / n) as u8,
            })
            .collect();
        Self {
            ipv6,
            dont_fragment: shape & 2 != 0,
            zero_length: shape & 4 != 0,
            ip_options,
            tcp_options,
            flags,
            mtu,
            seq,
            id,
            urgent,
            misc,
            addresses,
            payload,
            cuts,
        }
    }

    const fn ip_header_len(&self) -> usize {
        if self.ipv6 {
            40
        } else {
            20 + self.ip_options.len()
        }
    }

    const fn header_len(&self) -> usize {
        IP + self.ip_header_len() + 20 + self.tcp_options.len()
    }

    /// The super-frame, its TCP checksum partial as Linux leaves it.
    fn frame(&self) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        let ip_len = self.header_len() - IP + self.payload.len();
        let tcp_len = ip_len - self.ip_header_len();
        let [tos, ttl] = [self.misc[10], self.misc[11]];
        if self.ipv6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60 | (tos >> 4), tos << 4, 0, 0]);
            let length = if self.zero_length { 0 } else { tcp_len as u16 };
            f.extend_from_slice(&length.to_be_bytes());
            f.extend_from_slice(&[6, ttl]);
            f.extend_from_slice(&self.addresses);
        } else {
            let ihl = (self.ip_header_len() / 4) as u8;
            f.extend_from_slice(&[0x08, 0x00, 0x40 | ihl, tos]);
            let length = if self.zero_length { 0 } else { ip_len as u16 };
            f.extend_from_slice(&length.to_be_bytes());
            f.extend_from_slice(&self.id.to_be_bytes());
            let df = if self.dont_fragment { 0x40 } else { 0 };
            f.extend_from_slice(&[df, 0, ttl, 6, 0, 0]);
            f.extend_from_slice(&self.addresses[..4]);
            f.extend_from_slice(&self.addresses[16..20]);
            f.extend_from_slice(&self.ip_options);
            let check = !fold(sum(&f[IP..]));
            f[IP + 10..IP + 12].copy_from_slice(&check.to_be_bytes());
        }
        f.extend_from_slice(&self.misc[..4]);
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.misc[4..8]);
        let offset = ((20 + self.tcp_options.len()) / 4) as u8;
        f.extend_from_slice(&[offset << 4, self.flags, self.misc[8], self.misc[9]]);
        let partial = fold(pseudo(&f, tcp_len));
        f.extend_from_slice(&partial.to_be_bytes());
        f.extend_from_slice(&self.urgent.to_be_bytes());
        f.extend_from_slice(&self.tcp_options);
        f.extend_from_slice(&self.payload);
        f
    }

    /// Whether the receiver's coalescer takes a segment with TCP flags
    /// `flags` (see `coalesce::Segment::parse`).
    const fn mergeable(&self, flags: u8) -> bool {
        !self.ipv6
            && self.dont_fragment
            && self.ip_options.is_empty()
            && flags & TCP_ACK != 0
            && flags & !(TCP_ACK | TCP_PSH) == 0
            && !self.payload.is_empty()
    }
}

/// Ones' complement sum of big-endian 16-bit words (an odd last byte
/// padded), and its fold: the oracle, independent of the agent's.
fn sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| (u32::from(w[0]) << 8) | u32::from(*w.get(1).unwrap_or(&0)))
        .sum()
}

const fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header's sum of the frame `f` for `tcp_len` bytes of TCP.
fn pseudo(f: &[u8], tcp_len: usize) -> u32 {
    let addresses = if f[12..14] == [0x86, 0xdd] {
        &f[IP + 8..IP + 40]
    } else {
        &f[IP + 12..IP + 20]
    };
    sum(addresses) + 6 + tcp_len as u32
}

fn u16_at(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// Segments fit the MTU, verify, and carry the payload in order with the
/// headers the kernel's GSO would give them; segments the coalescer takes
/// merge back into super-frames as large as it makes them, with the
/// original's headers.
pub fn tcp_segment(data: &[u8]) {
    let input = Input::read(data);
    let frame = input.frame();
    let header = input.header_len();
    let tcp = IP + input.ip_header_len();
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| header + c % (frame.len() - header + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([frame.len()]) {
        pieces.push(&frame[at..cut]);
        at = cut;
    }

    let sf = SuperFrame::parse(pieces[0], frame.len(), input.mtu)
        .unwrap_or_else(|e| panic!("a TCP super-frame is refused: {e:?}"));
    let mss = sf.mss();
    assert_eq!(
        mss,
        input.mtu - (header - IP),
        "the MTU less the IP and TCP headers"
    );
    assert_eq!(sf.count(), input.payload.len().div_ceil(mss).max(1));
    assert_eq!(sf.header_len(), header);

    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut segment_flags = Vec::new();
    let mut joined = Vec::new();
    for i in 0..sf.count() {
        let mut out = vec![0u8; input.mtu + IP + 1];
        let len = sf
            .write(&pieces, i, &mut out)
            .unwrap_or_else(|| panic!("segment {i} not written"));
        assert!(len <= input.mtu + IP, "segment {i}: {len} bytes");
        out.truncate(len);
        let s = out;
        let tcp_len = len - tcp;
        let last = i + 1 == sf.count();
        if input.ipv6 {
            assert_eq!(usize::from(u16_at(&s, IP + 4)), tcp_len, "payload length");
            assert_eq!(s[..IP + 4], frame[..IP + 4], "Ethernet, flow");
            assert_eq!(s[IP + 6..tcp], frame[IP + 6..tcp], "addresses");
        } else {
            assert_eq!(usize::from(u16_at(&s, IP + 2)), len - IP, "total length");
            assert_eq!(u16_at(&s, IP + 4), input.id.wrapping_add(i as u16), "ID");
            assert_eq!(fold(sum(&s[IP..tcp])), 0xffff, "IP checksum of segment {i}");
            assert_eq!(s[..IP + 2], frame[..IP + 2], "Ethernet, version, TOS");
            assert_eq!(s[IP + 6..IP + 10], frame[IP + 6..IP + 10], "flags, TTL");
            assert_eq!(s[IP + 12..tcp], frame[IP + 12..tcp], "addresses, options");
        }
        let total = pseudo(&s, tcp_len) + sum(&s[tcp..]);
        assert_eq!(fold(total), 0xffff, "TCP checksum of segment {i}");
        let offset = i * mss;
        assert_eq!(
            u32_at(&s, tcp + 4),
            input.seq.wrapping_add(offset as u32),
            "seq"
        );
        let mut flags = input.flags;
        if i > 0 {
            flags &= !TCP_CWR;
        }
        if !last {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        let mut urgent = input.urgent;
        if flags & TCP_URG != 0 && offset > 0 {
            urgent = usize::from(input.urgent).saturating_sub(offset) as u16;
            if urgent == 0 {
                flags &= !TCP_URG;
            }
        }
        assert_eq!(s[tcp + 13], flags, "flags of segment {i}");
        segment_flags.push(flags);
        assert_eq!(
            u16_at(&s, tcp + 18),
            urgent,
            "urgent pointer of segment {i}"
        );
        assert_eq!(s[tcp..tcp + 4], frame[tcp..tcp + 4], "ports");
        assert_eq!(
            s[tcp + 8..tcp + 13],
            frame[tcp + 8..tcp + 13],
            "ack, offset"
        );
        assert_eq!(s[tcp + 14..tcp + 16], frame[tcp + 14..tcp + 16], "window");
        assert_eq!(s[tcp + 20..header], frame[tcp + 20..header], "options");
        let payload = &s[header..];
        assert!(last || payload.len() == mss, "segment {i} short");
        joined.extend_from_slice(payload);
        segments.push(s);
    }
    assert_eq!(joined, input.payload, "the segments carry the payload");

    round_trip(&input, &frame, &segments, &segment_flags, mss);
}

/// The coalescer merges the segments back as far as it merges anything
/// (64 segments, 64 KiB of IP packet), stopping only at segments it does
/// not take (those with FIN, CWR or URG, say); each super-frame's header is
/// the original's but for what GSO regenerates, and the flags and urgent
/// pointer its first segment got.
fn round_trip(input: &Input, frame: &[u8], segments: &[Vec<u8>], flags: &[u8], mss: usize) {
    let mergeable: Vec<bool> = flags.iter().map(|&f| input.mergeable(f)).collect();
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(
            Segment::parse(s).is_some(),
            mergeable[i],
            "segment {i} a segment to merge"
        );
    }
    let mut runs: Vec<Run> = Vec::new();
    coalesce::plan(segments.len(), |i| &segments[i], &mut runs);
    let header = input.header_len();
    let mut next = 0;
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(run.first, next, "runs in order, without gaps: {runs:?}");
        next += run.count;
        if !mergeable[run.first] {
            assert_eq!(run.count, 1, "a segment the coalescer does not take");
            continue;
        }
        assert!(mergeable[run.first..next].iter().all(|&m| m), "{runs:?}");
        let bytes: usize = segments[run.first..next]
            .iter()
            .map(|s| s.len() - header)
            .sum();
        assert_eq!(run.bytes, bytes);
        if let Some(more) = segments.get(next) {
            assert!(
                run.count == coalesce::MAX_SEGMENTS
                    || header + bytes + more.len() - header > IP + 65_535
                    || !mergeable[next],
                "run {r} ends early: {runs:?}"
            );
        }
        assert_eq!(run.push, flags[next - 1] & TCP_PSH != 0);

        let mut out = [0u8; coalesce::VNET_HDR_LEN + coalesce::MAX_HEADER];
        let len = coalesce::super_header(&segments[run.first], run, &mut out)
            .expect("a run's first segment makes a header");
        let (vnet, h) = out[..len].split_at(coalesce::VNET_HDR_LEN);
        assert_eq!(h.len(), header);
        let first_len = segments[run.first].len() - header;
        let gso_size = usize::from(u16::from_le_bytes([vnet[4], vnet[5]]));
        assert_eq!(gso_size, first_len, "gso_size");
        assert!(run.count == 1 || first_len == mss);
        assert_eq!(fold(sum(&h[IP..IP + 20])), 0xffff, "IP checksum");
        // The original's header, but for the IP length, ID and checksum,
        // the sequence number, TCP flags, checksum and urgent pointer.
        let tcp = IP + 20;
        let mut expected = frame[..header].to_vec();
        let ip_len = (header - IP + bytes) as u16;
        expected[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        let id = input.id.wrapping_add(run.first as u16);
        expected[IP + 4..IP + 6].copy_from_slice(&id.to_be_bytes());
        expected[IP + 10..IP + 12].copy_from_slice(&h[IP + 10..IP + 12]);
        let seq = input.seq.wrapping_add((run.first * mss) as u32);
        expected[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        expected[tcp + 13] = flags[run.first] | if run.push { TCP_PSH } else { 0 };
        expected[tcp + 16..tcp + 18].copy_from_slice(&h[tcp + 16..tcp + 18]);
        let first = &segments[run.first];
        expected[tcp + 18..tcp + 20].copy_from_slice(&first[tcp + 18..tcp + 20]);
        assert_eq!(h, &*expected, "run {r}'s header");
        if runs.len() == 1 && !input.zero_length {
            // One super-frame in, one out: the very same header.
            assert_eq!(h, &frame[..header], "the original header back");
        }
    }
    assert_eq!(next, segments.len(), "every segment in a run");
}

pub(crate) fn segment_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = || Shape {
        ipv6: false,
        dont_fragment: true,
        zero_length: false,
        ip_options: 0,
        tcp_options: 3,
        flags: TCP_ACK | TCP_PSH,
        mtu: 1500,
        payload_len: 65_483,
        seq: 0xffff_0000,
        id: 0xfff0,
        urgent: 0,
        cuts: vec![3840 - 66, 2 * 3840 - 66 + 1, 3 * 3840 - 66],
        rest: Vec::new(),
    };
    // Timestamps, as Linux sends them.
    let timestamps = vec![1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9];
    vec![
        (
            "ipv4-64k-timestamps-in-pieces",
            Shape {
                rest: timestamps.clone(),
                ..base()
            }
            .encode(),
        ),
        (
            "ipv4-length-zero-jumbo-mtu",
            Shape {
                zero_length: true,
                mtu: 9000,
                payload_len: 40_000,
                rest: timestamps.clone(),
                ..base()
            }
            .encode(),
        ),
        (
            "ipv6-fin-cwr",
            Shape {
                ipv6: true,
                flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
                mtu: 1280,
                payload_len: 20_001,
                rest: timestamps.clone(),
                ..base()
            }
            .encode(),
        ),
        (
            "ipv4-options-no-df",
            Shape {
                dont_fragment: false,
                ip_options: 10,
                tcp_options: 10,
                mtu: 576,
                payload_len: 5_000,
                cuts: vec![1, 2, 3, 1001],
                rest: (0..80).collect(),
                ..base()
            }
            .encode(),
        ),
        (
            "ipv4-small-mtu-two-runs",
            Shape {
                mtu: 576,
                payload_len: 60_000,
                cuts: vec![3840 - 66, 3840 - 65, 7000, 7001, 20_000],
                rest: [timestamps, (0..=255).collect()].concat(),
                ..base()
            }
            .encode(),
        ),
        (
            "ipv4-urgent",
            Shape {
                flags: TCP_ACK | TCP_URG,
                urgent: 3_000,
                payload_len: 6_000,
                ..base()
            }
            .encode(),
        ),
        (
            "fits-without-payload",
            Shape {
                flags: TCP_ACK,
                payload_len: 0,
                cuts: Vec::new(),
                ..base()
            }
            .encode(),
        ),
    ]
}
