//! Completing the partial TCP and UDP checksums of frames from containers.
//!
//! A container's veth has checksum offload on, so its kernel leaves the
//! TCP or UDP checksum of what it sends to be finished by "the hardware"
//! (`CHECKSUM_PARTIAL`): the field holds only the pseudo-header's sum
//! (addresses, protocol, L4 length), folded and not complemented. Inside
//! one host the skb carries that fact along and nobody checks; a frame that
//! leaves through `AF_XDP` is bare bytes, and a peer's kernel would drop it
//! as corrupt. So the data plane finishes the checksum itself.
//!
//! The frame does not say whether its checksum is partial; the bytes do,
//! nearly: the field equals the folded pseudo-header sum (0x0000 and 0xffff
//! being the same number in ones' complement) and the packet does not
//! verify. Such a field is replaced by the complete checksum. The rule
//! never breaks a correct frame: a complete checksum verifies, so one that
//! happens to equal the partial value is left alone; and a wrong checksum
//! that is not the partial value stays wrong, for the receiver to drop.
//! UDP with a checksum of 0 ("none", and never what Linux writes as a
//! partial sum, which folds a nonzero sum) is left alone too, over IPv6 as
//! well, where tunnels may send it so (RFC 6935). Fragments, IPv6
//! extension headers, other protocols and frames whose lengths disagree
//! are left untouched.

use crate::overlay::wire::checksum::{fold, sum};
use crate::overlay::wire::headers::{
    IP, IPPROTO_TCP, IPPROTO_UDP, IpHeader, TCP_CHECK, TCP_HEADER_LEN, UDP_CHECK, UDP_HEADER_LEN,
};

/// The TCP or UDP packet of a frame.
struct Transport {
    /// Where it starts and ends in the frame (Ethernet padding excluded).
    start: usize,
    end: usize,
    udp: bool,
    /// Its pseudo-header's sum: addresses, protocol, length.
    pseudo: u32,
}

/// The frame's TCP or UDP packet, directly over IPv4 (any header length)
/// or IPv6, not a fragment, with lengths that agree.
fn transport(frame: &[u8]) -> Option<Transport> {
    let header = IpHeader::parse(frame).ok().filter(|h| !h.fragment)?;
    let (header_len, packet_len, protocol) =
        (header.header_len, header.packet_len, header.protocol);
    let ip = frame.get(IP..)?;
    let l4 = ip.get(header_len..packet_len)?;
    let udp = match protocol {
        IPPROTO_TCP if l4.len() >= TCP_HEADER_LEN => false,
        IPPROTO_UDP
            if l4.len() >= UDP_HEADER_LEN
                && usize::from(u16::from_be_bytes([l4[4], l4[5]])) == l4.len() =>
        {
            true
        }
        _ => return None,
    };
    Some(Transport {
        start: IP + header_len,
        end: IP + packet_len,
        udp,
        pseudo: header.addresses + u32::from(protocol) + l4.len() as u32,
    })
}

/// Replaces a partial TCP or UDP checksum in `frame` by the complete one
/// (see the module doc for which); returns whether it changed the frame.
pub fn complete(frame: &mut [u8]) -> bool {
    let Some(t) = transport(frame) else {
        return false;
    };
    let at = t.start + if t.udp { UDP_CHECK } else { TCP_CHECK };
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if t.udp && field == 0 {
        return false;
    }
    let partial = fold(t.pseudo);
    let same = |a: u16, b: u16| a == b || (a | b == 0xffff && a & b == 0);
    if !same(field, partial) {
        return false;
    }
    let with_field = fold(t.pseudo + sum(&frame[t.start..t.end]));
    if with_field == 0xffff {
        return false;
    }
    // Take the field out (ones' complement: add its complement).
    let without_field = fold(u32::from(with_field) + u32::from(!field));
    let mut check = !without_field;
    if t.udp && check == 0 {
        check = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire::headers::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};

    const MAC: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

    fn tcp_ipv4(data: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&ETHERTYPE_IPV4);
        let total = (20 + 20 + data.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        f.extend_from_slice(&[10, 0, 1, 1, 10, 0, 1, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7]);
        f.extend_from_slice(&[5 << 4, 0x18, 2, 0, 0, 0, 0, 0]);
        f.extend_from_slice(data);
        f
    }

    fn udp_ipv6(data: &[u8]) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&ETHERTYPE_IPV6);
        let len = (8 + data.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[IPPROTO_UDP, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(data);
        f
    }

    fn udp_ipv4(data: &[u8]) -> Vec<u8> {
        let mut f = tcp_ipv4(&[]);
        f.truncate(IP + 20);
        f[IP + 9] = IPPROTO_UDP;
        let total = (20 + 8 + data.len()) as u16;
        f[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&(total - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(data);
        f
    }

    /// The partial checksum, as Linux writes it, into the frame's field.
    fn make_partial(frame: &mut [u8]) -> usize {
        let t = transport(frame).unwrap();
        let at = t.start + if t.udp { UDP_CHECK } else { TCP_CHECK };
        frame[at..at + 2].copy_from_slice(&fold(t.pseudo).to_be_bytes());
        at
    }

    fn verifies(frame: &[u8]) -> bool {
        let t = transport(frame).unwrap();
        fold(t.pseudo + sum(&frame[t.start..t.end])) == 0xffff
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|n| (n * 13 + 5) as u8).collect()
    }

    #[test]
    fn partial_checksums_are_completed() {
        for mut frame in [
            tcp_ipv4(&data(1001)),
            tcp_ipv4(&[]),
            udp_ipv6(&data(333)),
            udp_ipv4(&data(64)),
        ] {
            make_partial(&mut frame);
            assert!(!verifies(&frame));
            let before = frame.clone();
            assert!(complete(&mut frame));
            assert!(verifies(&frame));
            assert_eq!(frame.len(), before.len());
            // Only the checksum changed; done twice, nothing changes.
            let at = make_partial(&mut before.clone());
            assert_eq!(frame[..at], before[..at]);
            assert_eq!(frame[at + 2..], before[at + 2..]);
            assert!(!complete(&mut frame));
        }
    }

    #[test]
    fn a_partial_sum_of_ffff_compares_equal_to_zero() {
        let mut frame = tcp_ipv4(&data(100));
        let at = make_partial(&mut frame);
        // A source address whose pseudo-header sum folds to 0xffff, and
        // the field written as the other zero, 0x0000.
        let t = transport(&frame).unwrap();
        let need = !fold(t.pseudo - sum(&frame[IP + 12..IP + 14]));
        frame[IP + 12..IP + 14].copy_from_slice(&need.to_be_bytes());
        assert_eq!(fold(transport(&frame).unwrap().pseudo), 0xffff);
        frame[at..at + 2].fill(0);
        assert!(!verifies(&frame));
        assert!(complete(&mut frame));
        assert!(verifies(&frame));
    }

    #[test]
    fn a_complete_checksum_equal_to_the_partial_one_is_left_alone() {
        let mut frame = tcp_ipv4(&data(100));
        let at = make_partial(&mut frame);
        // Two payload bytes chosen so that the partial value verifies.
        let word = frame.len() - 2;
        frame[word..].fill(0);
        let t = transport(&frame).unwrap();
        let rest = fold(t.pseudo + sum(&frame[t.start..t.end]));
        frame[word..].copy_from_slice(&(!rest).to_be_bytes());
        assert!(verifies(&frame));
        let before = frame.clone();
        assert!(!complete(&mut frame));
        assert_eq!(frame, before);
        assert_eq!(frame[at..at + 2], before[at..at + 2]);
    }

    #[test]
    fn complete_or_wrong_checksums_are_left_alone() {
        let mut frame = tcp_ipv4(&data(200));
        make_partial(&mut frame);
        assert!(complete(&mut frame));
        let before = frame.clone();
        assert!(!complete(&mut frame), "already complete");
        // A wrong checksum that is not the partial one stays wrong.
        frame[IP + 20 + 16] ^= 0x40;
        let wrong = frame.clone();
        assert!(!complete(&mut frame));
        assert_eq!(frame, wrong);
        assert_ne!(frame, before);
    }

    #[test]
    fn udp_without_checksum_is_left_alone() {
        for mut frame in [udp_ipv4(&data(50)), udp_ipv6(&data(50))] {
            let before = frame.clone();
            assert!(!complete(&mut frame));
            assert_eq!(frame, before);
        }
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut partial = tcp_ipv4(&data(100));
        make_partial(&mut partial);
        let mut cases = Vec::new();
        let mut fragment = partial.clone();
        fragment[IP + 6] = 0x20;
        cases.push(fragment);
        let mut icmp = partial.clone();
        icmp[IP + 9] = 1;
        cases.push(icmp);
        let mut long = partial.clone();
        long[IP + 3] += 1;
        cases.push(long);
        let mut udp_len = udp_ipv6(&data(10));
        make_partial(&mut udp_len);
        udp_len[IP + 40 + 5] -= 1;
        cases.push(udp_len);
        let mut ext = udp_ipv6(&data(10));
        make_partial(&mut ext);
        ext[IP + 6] = 0;
        cases.push(ext);
        for len in 0..IP + 40 {
            cases.push(partial[..len].to_vec());
        }
        for mut frame in cases {
            let before = frame.clone();
            assert!(!complete(&mut frame), "{before:?}");
            assert_eq!(frame, before);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut tcp = tcp_ipv4(&data(60));
        make_partial(&mut tcp);
        let mut udp = udp_ipv6(&data(60));
        make_partial(&mut udp);
        for round in 0..20_000 {
            let mut f = if round % 2 == 0 {
                tcp.clone()
            } else {
                udp.clone()
            };
            for _ in 0..(next() % 4) {
                let at = next() as usize % f.len();
                f[at] = next() as u8;
            }
            f.truncate(next() as usize % (f.len() + 1));
            if complete(&mut f) {
                assert!(verifies(&f));
            }
        }
    }
}
