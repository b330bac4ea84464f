//! Where the fields of Ethernet, IPv4, IPv6, TCP and UDP headers are, for
//! the wire modules that read or rewrite frames (`coalesce`, `segment`,
//! `partial_checksum`, `too_big`): each fact written once.

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
