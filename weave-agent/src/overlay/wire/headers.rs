//! Where the fields of Ethernet, IPv4, IPv6, TCP and UDP headers are, for
//! the wire modules that read or rewrite frames (`coalesce`, `segment`,
//! `partial_checksum`, `too_big`): each fact written once, and the one
//! reading of an IP header that `segment` and `partial_checksum` share.

use crate::overlay::wire::checksum::sum;
use crate::overlay::wire::vxlan::ETHERNET_HEADER_LEN;

pub(crate) const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
pub(crate) const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// Where the IP header starts in an (untagged) Ethernet frame.
pub(crate) const IP: usize = ETHERNET_HEADER_LEN;
pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
/// IPv4 "more fragments" and the fragment offset's high bits (in byte 6).
pub(crate) const IPV4_MF_OFFSET: u8 = 0x3f;
/// An IP packet's length must fit the 16-bit length fields.
pub(crate) const MAX_IP_LEN: usize = 65_535;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

pub(crate) const TCP_HEADER_LEN: usize = 20;
/// TCP header offsets.
pub(crate) const TCP_SEQ: usize = 4;
pub(crate) const TCP_FLAGS: usize = 13;
pub(crate) const TCP_CHECK: usize = 16;
pub(crate) const TCP_URGENT: usize = 18;
/// TCP flags.
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const TCP_URG: u8 = 0x20;
pub(crate) const TCP_CWR: u8 = 0x80;

pub(crate) const UDP_HEADER_LEN: usize = 8;
pub(crate) const UDP_CHECK: usize = 6;

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// Why a frame's IP header was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotIp {
    /// Another Ethernet type (a VLAN tag included).
    OtherEthertype,
    /// Cut short, or a version or header length that is not IP's.
    Malformed,
}

/// The IP header right behind an untagged Ethernet header, as `segment` and
/// `partial_checksum` read it (`coalesce` matches one exact IPv4 shape
/// instead, on its hot path). IPv6 extension headers are not followed:
/// `protocol` is then the extension's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpHeader {
    pub family: Family,
    /// With IPv4 options; always 40 for IPv6.
    pub header_len: usize,
    /// The IP packet's length as its length field says (IPv4 total length,
    /// IPv6 header plus payload length); a GSO frame's may be 0.
    pub packet_len: usize,
    pub protocol: u8,
    /// The ones' complement sum of the source and destination addresses,
    /// unfolded, for a pseudo-header.
    pub addresses: u32,
    /// The IPv4 identification (0 for IPv6).
    pub id: u16,
    /// An IPv4 fragment: "more fragments" set or an offset (never IPv6).
    pub fragment: bool,
}

impl IpHeader {
    pub(crate) fn parse(frame: &[u8]) -> Result<Self, NotIp> {
        let ethertype = frame.get(12..14).ok_or(NotIp::Malformed)?;
        if ethertype == ETHERTYPE_IPV4 {
            let ip = frame
                .get(IP..IP + IPV4_HEADER_LEN)
                .ok_or(NotIp::Malformed)?;
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || header_len < IPV4_HEADER_LEN {
                return Err(NotIp::Malformed);
            }
            Ok(Self {
                family: Family::V4,
                header_len,
                packet_len: usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                protocol: ip[9],
                addresses: sum(&ip[12..20]),
                id: u16::from_be_bytes([ip[4], ip[5]]),
                fragment: ip[6] & IPV4_MF_OFFSET != 0 || ip[7] != 0,
            })
        } else if ethertype == ETHERTYPE_IPV6 {
            let ip = frame
                .get(IP..IP + IPV6_HEADER_LEN)
                .ok_or(NotIp::Malformed)?;
            if ip[0] >> 4 != 6 {
                return Err(NotIp::Malformed);
            }
            Ok(Self {
                family: Family::V6,
                header_len: IPV6_HEADER_LEN,
                packet_len: IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                protocol: ip[6],
                addresses: sum(&ip[8..40]),
                id: 0,
                fragment: false,
            })
        } else {
            Err(NotIp::OtherEthertype)
        }
    }
}
