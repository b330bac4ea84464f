//! A frame too big for the path to a peer (smaller than the overlay MTU
//! makes frames: see `mesh::path_mtu`), treated as a router treats a packet
//! too big for its next link: an IPv4 packet that may be fragmented (DF
//! clear) is cut into fragments that fit; one that may not gets an ICMP
//! "fragmentation needed" back to its sender with the MTU that fits, so that
//! its TCP lowers its segment size (RFC 1191); anything else is dropped
//! (counted by the caller). Pure: bytes in, bytes out, never panics.

use crate::overlay::wire::checksum::checksum;
use crate::overlay::wire::headers::{ETHERTYPE_IPV4, IP};

const IP_HEADER_LEN: usize = 20;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;
const IPPROTO_ICMP: u8 = 1;
const ICMP_HEADER_LEN: usize = 8;
/// Destination unreachable, fragmentation needed and DF set.
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// What an ICMP error quotes of the packet it is about, past its IP header
/// (RFC 792): enough for the sender to find the socket (ports, sequence).
const QUOTED_PAYLOAD: usize = 8;
/// The ICMP error for a packet with the longest IPv4 header.
pub const MAX_FRAG_NEEDED: usize = IP + IP_HEADER_LEN + ICMP_HEADER_LEN + 60 + QUOTED_PAYLOAD;

/// What becomes of a frame too big for its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// IPv4 without DF and without options: cut into fragments.
    Fragment,
    /// IPv4 with DF: its sender hears the MTU that fits.
    TellSender,
    /// Anything else (not IPv4, options, an ICMP error, malformed).
    Drop,
}

/// The IPv4 packet of an Ethernet frame, checked.
struct Ipv4<'a> {
    header_len: usize,
    /// The whole packet, without Ethernet padding.
    packet: &'a [u8],
    flags_offset: u16,
}

fn ipv4(frame: &[u8]) -> Option<Ipv4<'_>> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(IP..)?;
    let first = *ip.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < IP_HEADER_LEN {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if total < header_len {
        return None;
    }
    let packet = ip.get(..total)?;
    Some(Ipv4 {
        header_len,
        packet,
        flags_offset: u16::from_be_bytes([packet[6], packet[7]]),
    })
}

/// What to do with `frame`, too big for its path.
pub fn remedy(frame: &[u8]) -> Remedy {
    let Some(ip) = ipv4(frame) else {
        return Remedy::Drop;
    };
    if ip.flags_offset & FLAG_DF == 0 {
        return if ip.header_len == IP_HEADER_LEN {
            Remedy::Fragment
        } else {
            Remedy::Drop
        };
    }
    // Never an ICMP error about an ICMP error (RFC 1122, 3.2.2), nor about
    // anything but a first fragment.
    let icmp_error = ip.packet[9] == IPPROTO_ICMP
        && ip
            .packet
            .get(ip.header_len)
            .is_some_and(|t| !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18));
    if icmp_error || ip.flags_offset & OFFSET_MASK != 0 || !unique_ends(frame, &ip) {
        return Remedy::Drop;
    }
    Remedy::TellSender
}

/// Whether an ICMP error may answer the packet (RFC 1122, 3.2.2): sent to
/// one host (not a link-layer group, nor an IP multicast or limited
/// broadcast address) by one host (source MAC and address not a group,
/// not 0.0.0.0). The answer's addresses are the packet's, swapped, so a
/// broadcast's answer would carry a broadcast source (the bridge drops it).
fn unique_ends(frame: &[u8], ip: &Ipv4<'_>) -> bool {
    let group_mac = |mac: u8| mac & 1 != 0;
    let one_host = |a: [u8; 4]| {
        let a = std::net::Ipv4Addr::from(a);
        !(a.is_multicast() || a.is_broadcast() || a.is_unspecified())
    };
    let address = |at: usize| <[u8; 4]>::try_from(ip.packet.get(at..at + 4)?).ok();
    !group_mac(frame[0])
        && !group_mac(frame[6])
        && address(12).is_some_and(one_host)
        && address(16).is_some_and(one_host)
}

/// Cuts `frame` (IPv4 without DF or options, see [`remedy`]) into frames of
/// at most `limit` bytes, each written into `scratch` (at least `limit`
/// long) and passed to `send`; returns how many. None when it cannot be
/// (not such a frame, `limit` leaves no room for 8 bytes of data, or
/// `scratch` too short); then nothing was sent.
pub fn fragment(
    frame: &[u8],
    limit: usize,
    scratch: &mut [u8],
    mut send: impl FnMut(&[u8]),
) -> Option<usize> {
    let ip = ipv4(frame)?;
    if ip.header_len != IP_HEADER_LEN || ip.flags_offset & FLAG_DF != 0 {
        return None;
    }
    // Fragment data comes in units of 8 bytes, except in the last one.
    let per = limit.checked_sub(IP + IP_HEADER_LEN)? / 8 * 8;
    if per == 0 || scratch.len() < limit {
        return None;
    }
    let start = usize::from(ip.flags_offset & OFFSET_MASK) * 8;
    let more_after = ip.flags_offset & FLAG_MF;
    let data = &ip.packet[IP_HEADER_LEN..];
    let mut count = 0;
    for (i, piece) in data.chunks(per).enumerate() {
        let last = (i + 1) * per >= data.len();
        let offset = (start + i * per) / 8;
        let flags = if last { more_after } else { FLAG_MF };
        let len = IP + IP_HEADER_LEN + piece.len();
        let out = &mut scratch[..len];
        out[..IP + IP_HEADER_LEN].copy_from_slice(&frame[..IP + IP_HEADER_LEN]);
        let header = &mut out[IP..IP + IP_HEADER_LEN];
        header[2..4].copy_from_slice(&((IP_HEADER_LEN + piece.len()) as u16).to_be_bytes());
        header[6..8].copy_from_slice(&(flags | (offset as u16 & OFFSET_MASK)).to_be_bytes());
        header[10..12].fill(0);
        let sum = checksum(header);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        out[IP + IP_HEADER_LEN..].copy_from_slice(piece);
        send(out);
        count += 1;
    }
    Some(count)
}

/// Writes into `out` the frame that tells `frame`'s sender its packet was
/// too big: an ICMP "fragmentation needed" with next-hop MTU `limit` minus
/// the Ethernet header, as if from the packet's destination (the address
/// and MAC its sender was talking to, so that the isolation rules of its
/// subnet let it through). Returns its length; None for a frame
/// [`remedy`] does not tell the sender about, or an `out` shorter than
/// [`MAX_FRAG_NEEDED`].
pub fn frag_needed(frame: &[u8], limit: usize, out: &mut [u8]) -> Option<usize> {
    if remedy(frame) != Remedy::TellSender || out.len() < MAX_FRAG_NEEDED {
        return None;
    }
    let ip = ipv4(frame)?;
    let mtu = u16::try_from(limit.checked_sub(IP)?).ok()?;
    let quoted = &ip.packet[..ip.packet.len().min(ip.header_len + QUOTED_PAYLOAD)];
    let icmp_len = ICMP_HEADER_LEN + quoted.len();
    let total = IP_HEADER_LEN + icmp_len;
    let out = &mut out[..IP + total];
    // Ethernet: back to the sender, from the destination's MAC.
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    let (header, icmp) = out[IP..].split_at_mut(IP_HEADER_LEN);
    header.copy_from_slice(&[
        0x45,
        0,
        0,
        0, // version, header length, TOS, total length
        0,
        0,
        0,
        0, // id, flags, fragment offset
        64,
        IPPROTO_ICMP,
        0,
        0, // TTL, protocol, checksum
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0, // addresses
    ]);
    header[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    header[12..16].copy_from_slice(&ip.packet[16..20]);
    header[16..20].copy_from_slice(&ip.packet[12..16]);
    let sum = checksum(header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[
        ICMP_UNREACHABLE,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(quoted);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(IP + total)
}

/// Fuzzing: any bytes, any limit: never panics, fragments fit the limit and
/// carry the packet's data in order, an ICMP error fits its buffer.
pub fn fuzz_check(data: &[u8]) {
    let Some((&[a, b], frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([a, b])) % 2048;
    let _ = remedy(frame);
    let mut scratch = [0u8; 2048];
    let mut carried = 0;
    if let Some(n) = fragment(frame, limit, &mut scratch, |f| {
        assert!(f.len() <= limit, "a fragment over the limit");
        carried += f.len() - IP - IP_HEADER_LEN;
    }) {
        let ip = ipv4(frame).expect("fragmented an IPv4 frame");
        assert_eq!(carried, ip.packet.len() - IP_HEADER_LEN);
        assert!(n >= 1 || carried == 0);
    }
    let mut out = [0u8; MAX_FRAG_NEEDED];
    if let Some(len) = frag_needed(frame, limit, &mut out) {
        assert!(len <= MAX_FRAG_NEEDED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::wire::checksum::{fold, sum};

    /// An Ethernet frame with an IPv4 packet of `data_len` bytes of data.
    fn frame(data_len: usize, flags_offset: u16, protocol: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (IP_HEADER_LEN + data_len) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, protocol, 0, 0, 10, 0, 1, 1, 10, 0, 1, 2,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(h);
        f.extend((0..data_len).map(|i| i as u8));
        f
    }

    #[test]
    fn remedies_follow_df_and_the_protocol() {
        assert_eq!(remedy(&frame(1400, 0, 17)), Remedy::Fragment);
        assert_eq!(remedy(&frame(1400, FLAG_DF, 6)), Remedy::TellSender);
        let mut echo = frame(1400, FLAG_DF, 1);
        echo[IP + IP_HEADER_LEN] = 8;
        assert_eq!(remedy(&echo), Remedy::TellSender);
        let mut error = frame(1400, FLAG_DF, 1);
        error[IP + IP_HEADER_LEN] = 3;
        assert_eq!(remedy(&error), Remedy::Drop);
        let mut arp = frame(100, 0, 17);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(remedy(&arp), Remedy::Drop);
        let mut options = frame(100, 0, 17);
        options[IP] = 0x46;
        assert_eq!(remedy(&options), Remedy::Drop);
        assert_eq!(remedy(&frame(100, 0, 17)[..40]), Remedy::Drop, "truncated");
    }

    #[test]
    fn no_answer_to_a_group_or_from_no_one() {
        let told = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = frame(1400, FLAG_DF, 6);
            edit(&mut f);
            remedy(&f)
        };
        assert_eq!(told(&|_| {}), Remedy::TellSender);
        assert_eq!(told(&|f| f[..6].fill(0xff)), Remedy::Drop, "broadcast MAC");
        assert_eq!(told(&|f| f[0] = 0x01), Remedy::Drop, "multicast MAC");
        assert_eq!(told(&|f| f[6] = 0x03), Remedy::Drop, "group source MAC");
        let dst = IP + 16;
        assert_eq!(
            told(&|f| f[dst..dst + 4].fill(0xff)),
            Remedy::Drop,
            "limited broadcast"
        );
        assert_eq!(told(&|f| f[dst] = 239), Remedy::Drop, "multicast");
        let src = IP + 12;
        assert_eq!(
            told(&|f| f[src..src + 4].fill(0)),
            Remedy::Drop,
            "from 0.0.0.0"
        );
        // Without DF, a broadcast is still fragmented: no answer is involved.
        let mut broadcast = frame(1400, 0, 17);
        broadcast[..6].fill(0xff);
        assert_eq!(remedy(&broadcast), Remedy::Fragment);
    }

    #[test]
    fn fragments_fit_and_reassemble_to_the_packet() {
        // A fragment itself (offset 800 bytes, more after it) cut again.
        let f = frame(1400, FLAG_MF | 0x64, 17);
        let limit = 700;
        let mut scratch = vec![0u8; limit];
        let mut pieces = Vec::new();
        let n = fragment(&f, limit, &mut scratch, |p| pieces.push(p.to_vec())).unwrap();
        assert_eq!(n, 3);
        let mut data = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            assert!(p.len() <= limit);
            assert_eq!(&p[..12], &f[..12]);
            let h = &p[IP..IP + IP_HEADER_LEN];
            assert_eq!(fold(sum(h)), 0xffff, "fragment {i}'s header checksum");
            let fo = u16::from_be_bytes([h[6], h[7]]);
            assert_eq!(usize::from(fo & OFFSET_MASK) * 8, 800 + data.len());
            assert_ne!(fo & FLAG_MF, 0, "the original had more after it");
            assert_eq!(usize::from(u16::from_be_bytes([h[2], h[3]])), p.len() - IP);
            data.extend_from_slice(&p[IP + IP_HEADER_LEN..]);
        }
        assert_eq!(data, f[IP + IP_HEADER_LEN..]);
        // The last fragment of a whole packet has MF clear.
        let whole = frame(1000, 0, 17);
        let mut last = Vec::new();
        fragment(&whole, limit, &mut scratch, |p| last = p.to_vec()).unwrap();
        assert_eq!(
            u16::from_be_bytes([last[IP + 6], last[IP + 7]]) & FLAG_MF,
            0
        );
        assert_eq!(
            fragment(&whole, 40, &mut scratch, |_| {}),
            None,
            "no room for data"
        );
        assert_eq!(
            fragment(&frame(1000, FLAG_DF, 17), limit, &mut scratch, |_| {}),
            None
        );
    }

    #[test]
    fn the_sender_hears_the_mtu_from_the_destination() {
        let f = frame(1400, FLAG_DF, 6);
        let mut out = [0u8; MAX_FRAG_NEEDED];
        let len = frag_needed(&f, 700, &mut out).unwrap();
        let icmp = &out[..len];
        assert_eq!(&icmp[..6], &f[6..12], "to the sender's MAC");
        assert_eq!(&icmp[6..12], &f[..6], "from the destination's MAC");
        let h = &icmp[IP..IP + IP_HEADER_LEN];
        assert_eq!(fold(sum(h)), 0xffff);
        assert_eq!(&h[12..16], &[10, 0, 1, 2], "from the destination");
        assert_eq!(&h[16..20], &[10, 0, 1, 1], "to the sender");
        let body = &icmp[IP + IP_HEADER_LEN..];
        assert_eq!(fold(sum(body)), 0xffff, "ICMP checksum");
        assert_eq!((body[0], body[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([body[6], body[7]]), 686);
        assert_eq!(&body[8..], &f[IP..IP + IP_HEADER_LEN + QUOTED_PAYLOAD]);
        assert_eq!(frag_needed(&frame(1400, 0, 6), 700, &mut out), None);
    }

    #[test]
    fn fuzz_check_takes_anything() {
        fuzz_check(&[]);
        fuzz_check(&[2, 188]);
        let mut input = vec![2, 188];
        input.extend(frame(1400, 0, 17));
        fuzz_check(&input);
        let mut input = vec![0, 30];
        input.extend(frame(1400, FLAG_DF, 6));
        fuzz_check(&input);
    }
}
