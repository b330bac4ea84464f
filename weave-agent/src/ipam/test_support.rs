//! Helpers shared by the IPAM unit tests (the ring, the space, the agent's
//! IPAM driver): peers and addresses written the short way.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::AddrRange;
use crate::mac::Mac;
use crate::peer_name::PeerName;

/// The allocation range the tests use: Weave's default.
pub(crate) const DEFAULT: &str = super::DEFAULT_RANGE;

/// Peer number `i`: a locally administered MAC ending in `i`.
pub(crate) const fn peer(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

/// A subnet from its CIDR text; panics on bad text (tests only).
pub(crate) fn net(s: &str) -> Ipv4Net {
    s.parse()
        .unwrap_or_else(|e| panic!("bad subnet {s:?} in a test: {e}"))
}

/// An address from its dotted text; panics on bad text (tests only).
pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad address {s:?} in a test: {e}"))
}

/// An address as a ring token (the ring keeps addresses as numbers).
pub(crate) fn token(s: &str) -> u32 {
    u32::from(ip(s))
}

/// The addresses of a subnet as a range.
pub(crate) fn range(s: &str) -> AddrRange {
    AddrRange::of_net(net(s)).unwrap_or_else(|| panic!("{s} is not a usable range"))
}
