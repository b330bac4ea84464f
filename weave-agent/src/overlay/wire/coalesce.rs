//! TCP receive coalescing in userspace (what GRO does in the kernel):
//! consecutive segments of one TCP/IPv4 stream in a batch of frames from
//! peers become one super-frame with a virtio-net header (`gso_type`
//! TCPV4, the segment size), which a packet socket hands to the bridge as
//! one GSO skb. The bridge, the container's veth and its TCP stack then pay
//! once per up to 64 segments instead of once per segment, as they do for
//! kernel VXLAN, whose GRO does the same.
//!
//! Segments merge only when nothing but what a GSO split regenerates
//! differs: the IPv4 total length, ID (incrementing by one), and checksum,
//! and the TCP sequence number, checksum and PSH flag (only on the last).
//! Everything else, options included, must be byte for byte the same, as
//! in Linux's `tcp_gro_receive`. The super-frame's TCP checksum is left
//! partial (`NEEDS_CSUM)`: the segments arrived inside UDP packets that the
//! UDP checksum covers (or sealed, in password mode), and a local receiver
//! trusts a partial checksum as it does the kernel's own veth traffic.

use std::ops::Range;

use crate::overlay::wire::checksum::{fold, sum};
use crate::overlay::wire::headers::{
    ETHERTYPE_IPV4, IP, IPPROTO_TCP, MAX_IP_LEN, TCP_ACK, TCP_PSH,
};
use crate::overlay::wire::vxlan::ETHERNET_HEADER_LEN;

/// `struct virtio_net_hdr` (legacy, 10 bytes), in front of every frame sent
/// on a packet socket with `PACKET_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;
/// The longest header a super-frame repeats: Ethernet, IPv4 without
/// options, TCP with 40 bytes of options.
pub const MAX_HEADER: usize = ETHERNET_HEADER_LEN + 20 + 60;
/// Segments in one super-frame (Linux's GRO merges at most 64 too).
pub const MAX_SEGMENTS: usize = 64;

const TCP: usize = IP + 20;
/// Flags a mergeable segment may carry: ACK, and PSH (ends a super-frame).
const TCP_MERGEABLE: u8 = TCP_ACK | TCP_PSH;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;

/// A TCP/IPv4 segment that could merge, as parsed from its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Ethernet + IPv4 + TCP header length.
    header: usize,
    /// Where the IPv4 packet ends in the frame (padding excluded).
    end: usize,
    seq: u32,
    id: u16,
    psh: bool,
}

impl Segment {
    /// The frame's segment, if it is TCP over IPv4 without IP options or
    /// fragmentation, with DF set, only ACK (and PSH) flags, and payload.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < TCP + 20 || frame[12..14] != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = &frame[IP..];
        // Version 4, no options; DF only, offset 0; TCP.
        if ip[0] != 0x45 || ip[6] != 0x40 || ip[7] != 0 || ip[9] != IPPROTO_TCP {
            return None;
        }
        let end = IP + usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let tcp = &frame[TCP..];
        let header = TCP + usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        if end > frame.len()
            || header < TCP + 20
            || header >= end
            || flags & !TCP_MERGEABLE != 0
            || flags & TCP_ACK == 0
            || tcp[12] & 0x0f != 0
        {
            return None;
        }
        Some(Self {
            header,
            end,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            id: u16::from_be_bytes([ip[4], ip[5]]),
            psh: flags & TCP_PSH != 0,
        })
    }

    pub const fn payload(&self) -> Range<usize> {
        self.header..self.end
    }

    const fn payload_len(&self) -> usize {
        self.end - self.header
    }
}

/// Whether the segment `next` (of frame `next_frame`) continues a
/// super-frame whose first frame is `first_frame` and whose last segment
/// so far is `last`, each of `size` bytes of payload, `bytes` in all.
fn continues(
    first_frame: &[u8],
    first: &Segment,
    last: &Segment,
    bytes: usize,
    next_frame: &[u8],
    next: &Segment,
) -> bool {
    let size = first.payload_len();
    let same = |r: Range<usize>| first_frame.get(r.clone()) == next_frame.get(r);
    !last.psh
        && last.payload_len() == size
        && next.payload_len() <= size
        && next.header == first.header
        && next.seq == last.seq.wrapping_add(size as u32)
        && next.id == last.id.wrapping_add(1)
        && first.header + bytes + next.payload_len() <= IP + MAX_IP_LEN
        // Ethernet header; IPv4 version, TOS; flags, TTL, protocol; addresses.
        && same(0..IP + 2)
        && same(IP + 6..IP + 10)
        && same(IP + 12..TCP)
        // Ports; acknowledgement, data offset, flags but PSH, window;
        // urgent pointer and options.
        && same(TCP..TCP + 4)
        && same(TCP + 8..TCP + 13)
        && (first_frame[TCP + 13] | TCP_PSH) == (next_frame[TCP + 13] | TCP_PSH)
        && same(TCP + 14..TCP + 16)
        && same(TCP + 18..first.header)
}

/// A run of frames of a batch delivered as one: a lone frame (`count` 1,
/// sent as it is) or a super-frame of `count` segments, with `bytes` of
/// payload in all, whose last segment has PSH set if `push`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: usize,
    pub count: usize,
    pub bytes: usize,
    pub push: bool,
}

/// Splits frames `0..n` (`frame(i)`) into runs, in order: consecutive
/// segments of one stream merge, everything else stays alone.
pub fn plan<'f>(n: usize, frame: impl Fn(usize) -> &'f [u8], runs: &mut Vec<Run>) {
    runs.clear();
    let mut i = 0;
    while i < n {
        let first_frame = frame(i);
        let mut run = Run {
            first: i,
            count: 1,
            bytes: 0,
            push: false,
        };
        if let Some(first) = Segment::parse(first_frame) {
            let mut last = first;
            let mut bytes = first.payload_len();
            while i + run.count < n && run.count < MAX_SEGMENTS {
                let next_frame = frame(i + run.count);
                match Segment::parse(next_frame) {
                    Some(next)
                        if continues(first_frame, &first, &last, bytes, next_frame, &next) =>
                    {
                        bytes += next.payload_len();
                        last = next;
                        run.count += 1;
                    }
                    _ => break,
                }
            }
            run.bytes = bytes;
            run.push = last.psh;
        }
        runs.push(run);
        i += run.count;
    }
}

/// Writes the virtio-net header and the super-frame's own copy of the
/// first segment's headers into `out`, for `run` whose first frame is
/// `first`; returns how many bytes of `out` it used, `None` if `first` is
/// not a segment or `out` too short.
pub fn super_header(first: &[u8], run: &Run, out: &mut [u8]) -> Option<usize> {
    let seg = Segment::parse(first)?;
    let header = seg.header;
    let len = VNET_HDR_LEN + header;
    let out = out.get_mut(..len)?;
    let (vnet, frame) = out.split_at_mut(VNET_HDR_LEN);
    vnet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vnet[1] = VIRTIO_NET_HDR_GSO_TCPV4;
    vnet[2..4].copy_from_slice(&(header as u16).to_le_bytes());
    vnet[4..6].copy_from_slice(&(seg.payload_len() as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&(TCP as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&16u16.to_le_bytes());

    frame.copy_from_slice(&first[..header]);
    let ip_len = header - IP + run.bytes;
    frame[IP + 2..IP + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    frame[IP + 10..IP + 12].fill(0);
    let ip_sum = !fold(sum(&frame[IP..TCP]));
    frame[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
    if run.push {
        frame[TCP + 13] |= TCP_PSH;
    }
    // Partial checksum: the pseudo-header's, folded, not complemented.
    let tcp_len = (ip_len - 20) as u32;
    let pseudo = sum(&frame[IP + 12..TCP]) + u32::from(IPPROTO_TCP) + tcp_len;
    frame[TCP + 16..TCP + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(len)
}

/// A frame sent alone on the same socket needs a virtio-net header too:
/// no GSO, no checksum to finish.
pub const PLAIN_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_FIN: u8 = 0x01;

    /// A TCP/IPv4 segment in an Ethernet frame.
    fn segment(seq: u32, id: u16, payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; TCP + 32 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        let ip_len = (20 + 32 + payload) as u16;
        f[IP] = 0x45;
        f[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        f[IP + 4..IP + 6].copy_from_slice(&id.to_be_bytes());
        f[IP + 6] = 0x40;
        f[IP + 8] = 64;
        f[IP + 9] = IPPROTO_TCP;
        f[IP + 12..IP + 16].copy_from_slice(&[10, 0, 1, 1]);
        f[IP + 16..IP + 20].copy_from_slice(&[10, 0, 1, 2]);
        f[TCP..TCP + 4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        f[TCP + 4..TCP + 8].copy_from_slice(&seq.to_be_bytes());
        f[TCP + 8..TCP + 12].copy_from_slice(&7u32.to_be_bytes());
        f[TCP + 12] = 8 << 4; // 32 bytes: timestamps
        f[TCP + 13] = flags;
        f[TCP + 14..TCP + 16].copy_from_slice(&512u16.to_be_bytes());
        f[TCP + 20..TCP + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9]);
        for (n, b) in f[TCP + 32..].iter_mut().enumerate() {
            *b = (seq as usize + n) as u8;
        }
        f
    }

    fn runs(frames: &[Vec<u8>]) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        plan(frames.len(), |i| &frames[i], &mut runs);
        runs.iter().map(|r| (r.first, r.count)).collect()
    }

    const ACK: u8 = TCP_ACK;
    const PSH_ACK: u8 = TCP_ACK | TCP_PSH;

    #[test]
    fn a_burst_of_one_stream_merges_up_to_its_push() {
        let frames = vec![
            segment(1000, 1, 100, ACK),
            segment(1100, 2, 100, ACK),
            segment(1200, 3, 40, PSH_ACK),
            segment(1240, 4, 100, ACK),
        ];
        assert_eq!(runs(&frames), vec![(0, 3), (3, 1)]);
    }

    #[test]
    fn gaps_other_streams_and_changed_headers_end_a_run() {
        let base = || segment(1000, 1, 100, ACK);
        let mut other_port = segment(1100, 2, 100, ACK);
        other_port[TCP + 1] ^= 1;
        let mut other_ack = segment(1100, 2, 100, ACK);
        other_ack[TCP + 11] ^= 1;
        let mut other_window = segment(1100, 2, 100, ACK);
        other_window[TCP + 15] ^= 1;
        let mut other_ts = segment(1100, 2, 100, ACK);
        other_ts[TCP + 27] ^= 1;
        let mut other_ttl = segment(1100, 2, 100, ACK);
        other_ttl[IP + 8] = 63;
        let mut other_mac = segment(1100, 2, 100, ACK);
        other_mac[0] = 4;
        for (what, next) in [
            ("a gap", segment(1101, 2, 100, ACK)),
            ("a fixed IP id", segment(1100, 1, 100, ACK)),
            ("a larger segment", segment(1100, 2, 101, ACK)),
            ("a FIN", segment(1100, 2, 100, ACK | TCP_FIN)),
            ("another port", other_port),
            ("another ack", other_ack),
            ("another window", other_window),
            ("another timestamp", other_ts),
            ("another TTL", other_ttl),
            ("another MAC", other_mac),
        ] {
            assert_eq!(runs(&[base(), next]), vec![(0, 1), (1, 1)], "{what}");
        }
        // After a short segment nothing follows.
        let frames = [segment(1000, 1, 50, ACK), segment(1050, 2, 50, ACK)];
        assert_eq!(runs(&frames), vec![(0, 2)]);
        let frames = [
            segment(1000, 1, 50, ACK),
            segment(1050, 2, 40, ACK),
            segment(1090, 3, 40, ACK),
        ];
        assert_eq!(runs(&frames), vec![(0, 2), (2, 1)]);
    }

    #[test]
    fn only_plain_tcp_over_ipv4_is_a_segment() {
        assert!(Segment::parse(&segment(1, 1, 10, ACK)).is_some());
        assert!(
            Segment::parse(&segment(1, 1, 0, ACK)).is_none(),
            "no payload"
        );
        assert!(
            Segment::parse(&segment(1, 1, 10, TCP_PSH)).is_none(),
            "no ACK"
        );
        assert!(
            Segment::parse(&segment(1, 1, 10, ACK | 0x02)).is_none(),
            "SYN"
        );
        let mut f = segment(1, 1, 10, ACK);
        f[IP + 6] = 0x20;
        assert!(Segment::parse(&f).is_none(), "MF");
        let mut f = segment(1, 1, 10, ACK);
        f[IP] = 0x46;
        assert!(Segment::parse(&f).is_none(), "IP options");
        let mut f = segment(1, 1, 10, ACK);
        f[IP + 9] = 17;
        assert!(Segment::parse(&f).is_none(), "UDP");
        let mut f = segment(1, 1, 10, ACK);
        f[IP + 2..IP + 4].copy_from_slice(&2000u16.to_be_bytes());
        assert!(Segment::parse(&f).is_none(), "longer than the frame");
        let f = segment(1, 1, 10, ACK);
        assert!(Segment::parse(&f[..TCP + 20]).is_none(), "cut short");
        // Ethernet padding after the packet is not payload.
        let mut f = segment(1, 1, 10, ACK);
        f.extend_from_slice(&[0; 6]);
        assert_eq!(Segment::parse(&f).unwrap().payload().len(), 10);
    }

    #[test]
    fn the_super_header_describes_the_whole_and_checksums_its_ip_header() {
        let frames = [
            segment(1000, 1, 100, ACK),
            segment(1100, 2, 100, ACK),
            segment(1200, 3, 30, PSH_ACK),
        ];
        let mut runs = Vec::new();
        plan(frames.len(), |i| &frames[i], &mut runs);
        assert_eq!(
            runs,
            [Run {
                first: 0,
                count: 3,
                bytes: 230,
                push: true
            }]
        );
        let mut out = [0u8; VNET_HDR_LEN + MAX_HEADER];
        let len = super_header(&frames[0], &runs[0], &mut out).unwrap();
        assert_eq!(len, VNET_HDR_LEN + TCP + 32);
        let (vnet, h) = out[..len].split_at(VNET_HDR_LEN);
        assert_eq!(
            vnet,
            &[1, 1, (TCP + 32) as u8, 0, 100, 0, TCP as u8, 0, 16, 0]
        );
        assert_eq!(u16::from_be_bytes([h[IP + 2], h[IP + 3]]), 20 + 32 + 230);
        assert_eq!(fold(sum(&h[IP..TCP])), 0xffff, "IP checksum verifies");
        assert_eq!(h[TCP + 13], PSH_ACK);
        // Pseudo header: addresses, protocol, TCP length.
        let pseudo = fold(0x0a00 + 0x0101 + 0x0a00 + 0x0102 + 6 + 32 + 230);
        assert_eq!(u16::from_be_bytes([h[TCP + 16], h[TCP + 17]]), pseudo);
        assert_eq!(
            &h[TCP..TCP + 8],
            &frames[0][TCP..TCP + 8],
            "ports and first seq"
        );
        assert!(super_header(&frames[0], &runs[0], &mut [0u8; 20]).is_none());
    }

    #[test]
    fn runs_never_exceed_64_segments_or_an_ip_packet() {
        let frames: Vec<Vec<u8>> = (0..100u32)
            .map(|n| segment(n * 100, n as u16, 100, ACK))
            .collect();
        assert_eq!(runs(&frames), vec![(0, 64), (64, 36)]);
        let frames: Vec<Vec<u8>> = (0..60u32)
            .map(|n| segment(n * 1400, n as u16, 1400, ACK))
            .collect();
        // 46 * 1400 + 52 bytes of headers fit in 65535, 47 do not.
        assert_eq!(runs(&frames), vec![(0, 46), (46, 14)]);
    }
}
