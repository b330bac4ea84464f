//! TCP segmentation in userspace (what GSO does in the kernel, as
//! `tcp_gso_segment` and `inet_gso_segment` do): a TSO super-frame from a
//! container (Ethernet, IPv4 or IPv6, TCP, up to 64 KiB of payload) is cut
//! into segments that fit the IP MTU, each a complete TCP/IP packet of its
//! own with its checksums computed, because `AF_XDP` hands the super-frame
//! over as it is and nothing downstream would cut it.
//!
//! Each segment repeats the super-frame's headers, fixed up as the kernel
//! fixes them: the IPv4 total length, ID (the super-frame's plus the
//! segment's index) and header checksum, or the IPv6 payload length; the
//! TCP sequence number; FIN and PSH only on the last segment, CWR only on
//! the first. The TCP checksum is computed whole, over the pseudo-header,
//! the header and the payload (summed as it is copied): the super-frame's
//! field holds only the partial checksum of `CHECKSUM_PARTIAL`, and is not
//! read. The urgent pointer, which the kernel never meets in a TSO frame
//! (Linux's TCP stops building them in urgent mode), is made relative to
//! each segment, and dropped from the segments past the urgent data.
//!
//! IPv4 options are allowed and repeated in every segment, as the kernel's
//! GSO repeats them: the sender chose them, and refusing the frame would
//! drop data its TCP believes sent. (The receiver's `coalesce` does not
//! merge such segments back; they arrive one by one.) IPv6 extension
//! headers are refused: finding the TCP header behind them, and deciding
//! which of them each segment repeats, is not worth it for frames that a
//! container's TCP does not send.
//!
//! The super-frame arrives scattered over several buffers (`AF_XDP`
//! multi-buffer descriptors), the first holding all its headers; a
//! segment's payload is gathered from them and may span two or more.
//! Pure, allocation-free and never panics on any input.

use crate::overlay::wire::checksum::{fold, sum};
use crate::overlay::wire::headers::{
    Family, IP, IPPROTO_TCP, IPV6_HEADER_LEN, IpHeader, MAX_IP_LEN, NotIp, TCP_CHECK, TCP_CWR,
    TCP_FIN, TCP_FLAGS, TCP_HEADER_LEN, TCP_PSH, TCP_SEQ, TCP_URG, TCP_URGENT,
};

/// Why a frame over the MTU cannot be cut here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsegmentable {
    /// Not TCP right behind an IPv4 or IPv6 header: another Ethernet type
    /// (a VLAN tag included), another protocol, or an IPv6 extension
    /// header.
    NotTcp,
    /// An IPv4 fragment: a TSO frame never is one, and a fragment's bytes
    /// past its first do not start with a TCP header.
    Fragment,
    /// Headers cut short or beyond the first piece, or lengths that
    /// contradict each other.
    Malformed,
    /// The MTU leaves no room for payload behind the headers.
    MtuTooSmall,
}

/// A TCP super-frame over IPv4 (options allowed) or IPv6 (no extension
/// headers), parsed from its first piece: where its headers are and what
/// each segment's differ by. It borrows nothing; `write` reads the headers
/// again from the same frame's pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuperFrame {
    /// Which length field a segment fixes.
    family: Family,
    /// Where the TCP header starts (Ethernet and IP headers before it).
    tcp: usize,
    /// Where the payload starts (all headers before it).
    header: usize,
    /// The whole frame's length, over all pieces.
    len: usize,
    mss: usize,
    count: usize,
    seq: u32,
    /// The IPv4 ID (0 for IPv6, which has none outside fragments).
    id: u16,
    flags: u8,
    urgent: u16,
    /// The pseudo-header's sum but its length: addresses and protocol.
    pseudo: u32,
}

impl SuperFrame {
    /// Parses the super-frame whose first piece `first` holds the
    /// Ethernet, IP and TCP headers and which is `total_len` bytes long
    /// over all its pieces, to be cut into IP packets of at most `mtu`
    /// bytes. `total_len` is authoritative: the IPv4 total length and IPv6
    /// payload length of a GSO frame may be 0 or the real length, and are
    /// not read. An `mtu` over 65535 counts as 65535 (the length fields
    /// are 16 bits).
    pub fn parse(first: &[u8], total_len: usize, mtu: usize) -> Result<Self, Unsegmentable> {
        use Unsegmentable::{Fragment, Malformed, MtuTooSmall, NotTcp};
        let ip = IpHeader::parse(first).map_err(|e| match e {
            NotIp::OtherEthertype => NotTcp,
            NotIp::Malformed => Malformed,
        })?;
        if ip.protocol != IPPROTO_TCP {
            return Err(NotTcp);
        }
        if ip.fragment {
            return Err(Fragment);
        }
        let (family, ip_header_len) = (ip.family, ip.header_len);
        let tcp = IP + ip_header_len;
        let th = first.get(tcp..tcp + TCP_HEADER_LEN).ok_or(Malformed)?;
        let tcp_header_len = usize::from(th[12] >> 4) * 4;
        let header = tcp + tcp_header_len;
        if tcp_header_len < TCP_HEADER_LEN || header > first.len() || header > total_len {
            return Err(Malformed);
        }
        let mss = mtu
            .min(MAX_IP_LEN)
            .checked_sub(ip_header_len + tcp_header_len)
            .filter(|&mss| mss > 0)
            .ok_or(MtuTooSmall)?;
        Ok(Self {
            family,
            tcp,
            header,
            len: total_len,
            mss,
            count: (total_len - header).div_ceil(mss).max(1),
            seq: u32::from_be_bytes([th[4], th[5], th[6], th[7]]),
            id: ip.id,
            flags: th[TCP_FLAGS],
            urgent: u16::from_be_bytes([th[18], th[19]]),
            pseudo: ip.addresses + u32::from(IPPROTO_TCP),
        })
    }

    /// How many segments the super-frame makes (1 for one without payload
    /// or that fits the MTU already; `write` still completes its checksum).
    pub const fn count(&self) -> usize {
        self.count
    }

    /// The payload of every segment but the last, which may carry less.
    pub const fn mss(&self) -> usize {
        self.mss
    }

    /// The length of the headers each segment repeats (Ethernet, IP, TCP).
    pub const fn header_len(&self) -> usize {
        self.header
    }

    /// Writes segment `i` into `out` (its headers from the first piece,
    /// fixed up; its payload gathered from `pieces`, the whole frame as
    /// consecutive slices, the same the super-frame was parsed from) and
    /// returns the segment's frame length: at most `mtu` plus the Ethernet
    /// header. `None` if `i` is past the last segment, `out` is too short,
    /// or `pieces` are shorter than the frame or their first too short for
    /// the headers.
    pub fn write(&self, pieces: &[&[u8]], i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count || pieces.iter().map(|p| p.len()).sum::<usize>() < self.len {
            return None;
        }
        let start = self.header + i * self.mss;
        let payload_len = self.mss.min(self.len - start);
        let frame_len = self.header + payload_len;
        let (headers, payload) = out.get_mut(..frame_len)?.split_at_mut(self.header);
        headers.copy_from_slice(pieces.first()?.get(..self.header)?);

        let (ip, th) = headers[IP..].split_at_mut(self.tcp - IP);
        let ip_len = frame_len - IP;
        match self.family {
            Family::V4 => {
                let id = self.id.wrapping_add(i as u16);
                ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&id.to_be_bytes());
                ip[10..12].fill(0);
                let ip_sum = !fold(sum(ip));
                ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            }
            Family::V6 => {
                let payload_len = (ip_len - IPV6_HEADER_LEN) as u16;
                ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
            }
        }

        // The offset wraps as sequence numbers do.
        let offset = i * self.mss;
        let seq = self.seq.wrapping_add(offset as u32);
        th[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        let mut flags = self.flags;
        if i > 0 {
            flags &= !TCP_CWR;
        }
        if i + 1 < self.count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if flags & TCP_URG != 0 && offset > 0 {
            // The urgent pointer counts from each segment's own sequence
            // number; past the urgent data there is none. (The first
            // segment keeps the super-frame's, whatever it says.)
            let urgent = usize::from(self.urgent).saturating_sub(offset);
            if urgent == 0 {
                flags &= !TCP_URG;
            }
            th[TCP_URGENT..TCP_URGENT + 2].copy_from_slice(&(urgent as u16).to_be_bytes());
        }
        th[TCP_FLAGS] = flags;
        th[TCP_CHECK..TCP_CHECK + 2].fill(0);
        let tcp_len = (frame_len - self.tcp) as u32;
        let total = self.pseudo + tcp_len + sum(th) + gather(pieces, start, payload)?;
        th[TCP_CHECK..TCP_CHECK + 2].copy_from_slice(&(!fold(total)).to_be_bytes());
        Some(frame_len)
    }
}

/// Copies the bytes at `from..from + dst.len()` of the frame cut into
/// `pieces` into `dst` and returns their ones' complement sum as `sum`
/// would give it for `dst` (folded to 16 bits, in a `u32` to add on);
/// `None` if the pieces end first.
///
/// A piece boundary may fall at an odd offset of `dst`: the part after it
/// is summed as if it began a word, and its sum byte-swapped (RFC 1071's
/// byte order independence: moving every byte one place over swaps the
/// sum's two bytes).
fn gather(pieces: &[&[u8]], from: usize, dst: &mut [u8]) -> Option<u32> {
    let mut skip = from;
    let mut at = 0;
    let mut total = 0u32;
    for piece in pieces {
        if at == dst.len() {
            break;
        }
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        let piece = &piece[skip..];
        skip = 0;
        let n = piece.len().min(dst.len() - at);
        let part = fold(copy_sum(&mut dst[at..at + n], &piece[..n]));
        total += u32::from(if at % 2 == 0 { part } else { part.swap_bytes() });
        at += n;
    }
    (at == dst.len()).then(|| u32::from(fold(total)))
}

/// Copies `src` into `dst` (of the same length) and returns `sum(src)`:
/// a `memcpy`, then the sum over the copy while it is in the cache (two
/// passes that the compiler vectorises beat one fused scalar loop).
fn copy_sum(dst: &mut [u8], src: &[u8]) -> u32 {
    dst.copy_from_slice(src);
    sum(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire::headers::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};

    const ACK: u8 = 0x10;
    const MAC: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    /// Timestamps, as Linux sends them: NOP, NOP, kind 8, length 10.
    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9];

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|n| (n * 7 + n / 251) as u8).collect()
    }

    /// A TCP header with timestamps, the partial checksum left as zero
    /// (the segments must not depend on it).
    fn tcp_header(seq: u32, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&TIMESTAMPS);
        t
    }

    /// A TCP/IPv4 super-frame (total length 0, as GSO may leave it).
    fn ipv4_frame(seq: u32, id: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&ETHERTYPE_IPV4);
        f.extend_from_slice(&[0x45, 0, 0, 0]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, IPPROTO_TCP, 0, 0, 10, 0, 1, 1, 10, 0, 1, 2]);
        f.extend_from_slice(&tcp_header(seq, flags));
        f.extend_from_slice(data);
        f
    }

    fn ipv6_frame(seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&ETHERTYPE_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, IPPROTO_TCP, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&tcp_header(seq, flags));
        f.extend_from_slice(data);
        f
    }

    /// The frame in pieces cut at `cuts`.
    fn pieces<'a>(frame: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&frame.len()]) {
            out.push(&frame[at..cut]);
            at = cut;
        }
        out
    }

    /// The TCP segment of an IPv4 or IPv6 frame verifies with its
    /// pseudo-header; an IPv4 header verifies too.
    fn verify(frame: &[u8]) {
        let v6 = frame[12..14] == ETHERTYPE_IPV6;
        let (tcp, pseudo) = if v6 {
            (IP + 40, sum(&frame[IP + 8..IP + 40]))
        } else {
            let hl = usize::from(frame[IP] & 0x0f) * 4;
            assert_eq!(fold(sum(&frame[IP..IP + hl])), 0xffff, "IP checksum");
            (IP + hl, sum(&frame[IP + 12..IP + 20]))
        };
        let tcp_len = (frame.len() - tcp) as u32;
        let total = pseudo + 6 + tcp_len + sum(&frame[tcp..]);
        assert_eq!(fold(total), 0xffff, "TCP checksum");
    }

    /// Every segment of `frame` in `pieces`, checked for length and
    /// checksums.
    fn segments(sf: &SuperFrame, pieces: &[&[u8]], mtu: usize) -> Vec<Vec<u8>> {
        (0..sf.count())
            .map(|i| {
                let mut out = vec![0u8; mtu + 14 + 100];
                let len = sf.write(pieces, i, &mut out).unwrap();
                assert!(len <= mtu + 14, "segment {i}: {len} bytes");
                out.truncate(len);
                verify(&out);
                out
            })
            .collect()
    }

    #[test]
    fn an_ipv4_super_frame_in_three_pieces_becomes_verified_segments() {
        let data = payload(5000);
        let frame = ipv4_frame(0xffff_f000, 0xfffe, 0x80 | ACK | TCP_PSH | TCP_FIN, &data);
        // Cuts inside the payload at odd and even offsets.
        let cuts = [3840, 3840 + 1001];
        let pieces = pieces(&frame, &cuts);
        let mtu = 1500;
        let sf = SuperFrame::parse(pieces[0], frame.len(), mtu).unwrap();
        assert_eq!(sf.mss(), 1500 - 20 - 32);
        assert_eq!(sf.count(), 4);
        assert_eq!(sf.header_len(), 14 + 20 + 32);
        let segs = segments(&sf, &pieces, mtu);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let n = i as u32;
            assert_eq!(s[..IP + 2], frame[..IP + 2], "Ethernet, version, TOS");
            assert_eq!(s[IP + 6..IP + 10], frame[IP + 6..IP + 10], "DF, TTL");
            assert_eq!(s[IP + 12..IP + 20], frame[IP + 12..IP + 20], "addresses");
            let ip_len = usize::from(u16::from_be_bytes([s[IP + 2], s[IP + 3]]));
            assert_eq!(ip_len, s.len() - 14);
            let id = u16::from_be_bytes([s[IP + 4], s[IP + 5]]);
            assert_eq!(id, 0xfffeu16.wrapping_add(n as u16));
            let tcp = IP + 20;
            let seq = u32::from_be_bytes([s[tcp + 4], s[tcp + 5], s[tcp + 6], s[tcp + 7]]);
            assert_eq!(seq, 0xffff_f000u32.wrapping_add(n * 1448));
            let flags = s[tcp + 13];
            match i {
                0 => assert_eq!(flags, 0x80 | ACK),
                3 => assert_eq!(flags, ACK | TCP_PSH | TCP_FIN),
                _ => assert_eq!(flags, ACK),
            }
            assert_eq!(s[tcp + 20..tcp + 32], TIMESTAMPS, "options repeated");
            joined.extend_from_slice(&s[tcp + 32..]);
        }
        assert_eq!(
            segs[3].len(),
            14 + 20 + 32 + 5000 - 3 * 1448,
            "last shorter"
        );
        assert_eq!(joined, data);
    }

    #[test]
    fn an_ipv6_super_frame_becomes_verified_segments() {
        let data = payload(9001);
        let frame = ipv6_frame(77, ACK | TCP_PSH, &data);
        let cuts = [200, 3840, 7681];
        let pieces = pieces(&frame, &cuts);
        let mtu = 1280;
        let sf = SuperFrame::parse(pieces[0], frame.len(), mtu).unwrap();
        assert_eq!(sf.mss(), 1280 - 40 - 32);
        let segs = segments(&sf, &pieces, mtu);
        assert_eq!(segs.len(), 9001usize.div_ceil(1208));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let plen = usize::from(u16::from_be_bytes([s[IP + 4], s[IP + 5]]));
            assert_eq!(plen, s.len() - 14 - 40);
            let tcp = IP + 40;
            let seq = u32::from_be_bytes([s[tcp + 4], s[tcp + 5], s[tcp + 6], s[tcp + 7]]);
            assert_eq!(seq as usize, 77 + i * 1208);
            let last = i + 1 == segs.len();
            assert_eq!(s[tcp + 13], if last { ACK | TCP_PSH } else { ACK });
            joined.extend_from_slice(&s[tcp + 32..]);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn a_payload_split_at_odd_offsets_sums_as_a_whole() {
        let data = payload(3001);
        let frame = ipv4_frame(1, 1, ACK, &data);
        let whole = SuperFrame::parse(&frame, frame.len(), 9000).unwrap();
        assert_eq!(whole.count(), 1);
        let expected = segments(&whole, &[&frame], 9000);
        // Pieces of one, two and three bytes in the middle of the payload.
        let h = whole.header_len();
        for cuts in [
            vec![h + 1],
            vec![h + 1, h + 2, h + 4, h + 7, h + 1001],
            vec![h, h + 3, h + 3, h + 2999],
        ] {
            let pieces = pieces(&frame, &cuts);
            let got = segments(&whole, &pieces, 9000);
            assert_eq!(got, expected, "cut at {cuts:?}");
        }
    }

    #[test]
    fn copy_sum_agrees_with_sum() {
        let data = payload(300);
        for start in 0..9 {
            for len in 0..40 {
                let src = &data[start..start + len * 7];
                let mut dst = vec![0u8; src.len()];
                let s = copy_sum(&mut dst, src);
                assert_eq!(dst, src);
                assert_eq!(fold(s), fold(sum(src)), "{start} {len}");
            }
        }
    }

    #[test]
    fn a_frame_that_fits_still_gets_its_checksum() {
        let frame = ipv4_frame(5, 9, ACK, &[]);
        let sf = SuperFrame::parse(&frame, frame.len(), 1500).unwrap();
        assert_eq!(sf.count(), 1);
        let segs = segments(&sf, &[&frame], 1500);
        assert_eq!(segs[0].len(), frame.len());
    }

    #[test]
    fn the_urgent_pointer_follows_each_segment() {
        let data = payload(4000);
        let frame = ipv4_frame(1, 1, ACK | TCP_URG, &data);
        let mut frame = frame;
        frame[IP + 20 + 18..IP + 20 + 20].copy_from_slice(&2000u16.to_be_bytes());
        let sf = SuperFrame::parse(&frame, frame.len(), 1500).unwrap();
        let segs = segments(&sf, &[&frame], 1500);
        let urgent: Vec<(u8, u16)> = segs
            .iter()
            .map(|s| {
                let t = IP + 20;
                (s[t + 13], u16::from_be_bytes([s[t + 18], s[t + 19]]))
            })
            .collect();
        assert_eq!(
            urgent,
            [(ACK | TCP_URG, 2000), (ACK | TCP_URG, 552), (ACK, 0)]
        );
    }

    #[test]
    fn ip_options_are_repeated() {
        let data = payload(3000);
        let mut frame = ipv4_frame(1, 1, ACK, &data);
        frame[IP] = 0x46;
        // A 4-byte option (NOPs and end of list) after the IPv4 header.
        frame.splice(IP + 20..IP + 20, [1, 1, 1, 0]);
        let sf = SuperFrame::parse(&frame, frame.len(), 1500).unwrap();
        assert_eq!(sf.mss(), 1500 - 24 - 32);
        for s in segments(&sf, &[&frame], 1500) {
            assert_eq!(s[IP + 20..IP + 24], [1, 1, 1, 0]);
        }
    }

    #[test]
    fn what_is_not_a_tcp_super_frame_is_refused() {
        let data = payload(3000);
        let frame = ipv4_frame(1, 1, ACK, &data);
        let parse = |f: &[u8]| SuperFrame::parse(f, f.len(), 1500).map(|_| ());
        let mut udp = frame.clone();
        udp[IP + 9] = 17;
        assert_eq!(parse(&udp), Err(Unsegmentable::NotTcp));
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp), Err(Unsegmentable::NotTcp));
        let mut ext = ipv6_frame(1, ACK, &data);
        ext[IP + 6] = 0; // hop-by-hop options
        assert_eq!(parse(&ext), Err(Unsegmentable::NotTcp));
        let mut frag = frame.clone();
        frag[IP + 6] = 0x20;
        assert_eq!(parse(&frag), Err(Unsegmentable::Fragment));
        let mut short_tcp = frame.clone();
        short_tcp[IP + 20 + 12] = 4 << 4;
        assert_eq!(parse(&short_tcp), Err(Unsegmentable::Malformed));
        assert_eq!(parse(&frame[..IP + 30]), Err(Unsegmentable::Malformed));
        assert_eq!(
            SuperFrame::parse(&frame[..60], frame.len(), 1500),
            Err(Unsegmentable::Malformed),
            "headers past the first piece"
        );
        assert_eq!(
            SuperFrame::parse(&frame, frame.len(), 52).map(|_| ()),
            Err(Unsegmentable::MtuTooSmall)
        );
    }

    #[test]
    fn write_refuses_short_pieces_and_short_output() {
        let data = payload(3000);
        let frame = ipv4_frame(1, 1, ACK, &data);
        let sf = SuperFrame::parse(&frame, frame.len(), 1500).unwrap();
        let mut out = [0u8; 1514];
        assert!(
            sf.write(&[&frame[..frame.len() - 1]], 0, &mut out)
                .is_none()
        );
        assert!(sf.write(&[&frame], 0, &mut out[..1513]).is_none());
        assert!(sf.write(&[&frame], sf.count(), &mut out).is_none());
        assert!(
            sf.write(&[&frame[..10], &frame[10..]], 0, &mut out)
                .is_none()
        );
        assert!(sf.write(&[], 0, &mut out).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let good = ipv4_frame(1, 1, ACK, &payload(2000));
        let mut out = vec![0u8; 2000];
        for round in 0..20_000 {
            let mut f = if round % 2 == 0 {
                good.clone()
            } else {
                ipv6_frame(3, ACK, &payload(1500))
            };
            for _ in 0..(next() % 6) {
                let at = next() as usize % f.len();
                f[at] = next() as u8;
            }
            f.truncate(next() as usize % (f.len() + 1));
            let total = (f.len() + next() as usize % 3).saturating_sub(1);
            let cut = next() as usize % (f.len() + 1);
            let pieces = [&f[..cut], &f[cut..]];
            let mtu = next() as usize % 2000;
            if let Ok(sf) = SuperFrame::parse(pieces[0], total, mtu) {
                for i in 0..sf.count().min(4) {
                    if let Some(len) = sf.write(&pieces, i, &mut out) {
                        assert!(len <= mtu + 14);
                    }
                }
            }
        }
    }
}
