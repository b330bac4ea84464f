//! Byte offsets of the header fields the classifiers read. Frames are
//! untagged Ethernet II; anything else is dropped before these are used.

pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
pub const ETH_TYPE: usize = 12;
pub const ETH_HLEN: usize = 14;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

/// IPv4 source and destination, relative to the start of the frame.
pub const IPV4_SRC: usize = ETH_HLEN + 12;
pub const IPV4_DST: usize = ETH_HLEN + 16;
pub const IPV4_MIN_LEN: usize = ETH_HLEN + 20;

/// ARP for IPv4 over Ethernet (htype 1, ptype 0x0800, hlen 6, plen 4).
pub const ARP_SHA: usize = ETH_HLEN + 8;
pub const ARP_SPA: usize = ETH_HLEN + 14;
pub const ARP_TPA: usize = ETH_HLEN + 24;
pub const ARP_LEN: usize = ETH_HLEN + 28;
