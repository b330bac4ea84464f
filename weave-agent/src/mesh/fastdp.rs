//! Per connection, whether frames to that neighbour take the in-kernel
//! data path (fastdp) or the agent's own (xdp, plain).
//!
//! A connection uses fastdp when both ends run it (each says so in its
//! hello), the traffic is not encrypted (fastdp carries clear VXLAN only; a
//! peer in password mode never advertises it), and the underlay is IPv4 at
//! both ends (the eBPF encapsulation writes IPv4 outer headers). The outer
//! source address is our end of the TCP connection: the address the peer
//! knows us by, so its decapsulation recognises the sender.
//!
//! Pure, so the rule is unit-tested without sockets; the router applies it
//! to fill `ForwardingTable::fastdp` and the lines of
//! `weave status connections`. Each direction decides on its own, and a
//! peer that is not chosen simply gets the userspace path: mixed meshes need
//! no agreement beyond the two hellos.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::overlay::ShortId;

/// The data plane name shown for a connection that uses fastdp.
pub const NAME: &str = "fastdp";

/// Why a connection does not use fastdp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastdpOff {
    /// This agent does not run fastdp: nothing to explain per connection.
    NotHere,
    /// Password mode: fastdp carries unencrypted traffic only.
    PasswordMode,
    /// The peer's hello did not offer fastdp (an older peer, or one on
    /// another data plane).
    PeerHasNone,
    /// The forwarding table has no direct route to the peer, so no frame
    /// goes to it this way: its topology entry has not arrived yet (for
    /// moments after connecting), its data path does not answer, or its
    /// short id is taken by a smaller name.
    NotRouted,
    /// The underlay address of the peer or ours is IPv6.
    NotIpv4,
}

impl FastdpOff {
    /// What `weave status connections` says after "fastdp off: ", `None`
    /// when this agent does not run fastdp.
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            Self::NotHere => None,
            Self::PasswordMode => Some("password mode"),
            Self::PeerHasNone => Some("peer has no fastdp"),
            Self::NotRouted => Some("no direct route to the peer yet"),
            Self::NotIpv4 => Some("IPv6 underlay"),
        }
    }
}

/// One established connection, as the rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// This agent runs fastdp (whatever the password says).
    pub ours: bool,
    /// Password mode (both ends agree, or the handshake is refused).
    pub encrypted: bool,
    /// The peer's hello offered fastdp.
    pub theirs: bool,
    /// Our end of the TCP connection, IPv4-mapped addresses made plain.
    pub local: SocketAddr,
}

/// Both ends run fastdp and nothing is encrypted: what the hellos decide.
pub const fn negotiated(ours: bool, theirs: bool, encrypted: bool) -> bool {
    ours && theirs && !encrypted
}

/// Our IPv4 address on `link`, the outer source of the frames fastdp
/// encapsulates to the peer, or why fastdp is not used. `data` is the
/// peer's underlay data address in the forwarding table, `None` when the
/// table has no entry for it.
pub fn choose(link: &Link, data: Option<SocketAddr>) -> Result<Ipv4Addr, FastdpOff> {
    if !link.ours {
        return Err(FastdpOff::NotHere);
    }
    if link.encrypted {
        return Err(FastdpOff::PasswordMode);
    }
    if !negotiated(link.ours, link.theirs, link.encrypted) {
        return Err(FastdpOff::PeerHasNone);
    }
    let data = data.ok_or(FastdpOff::NotRouted)?;
    match (data.ip(), link.local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(local)) => Ok(local),
        _ => Err(FastdpOff::NotIpv4),
    }
}

/// `ForwardingTable::fastdp`: each neighbour in `neighbours` whose link
/// uses fastdp, with our address on that link. Links to peers missing from
/// `neighbours` are left out.
pub fn table<S: BuildHasher>(
    neighbours: &HashMap<ShortId, SocketAddr, S>,
    links: impl IntoIterator<Item = (ShortId, Link)>,
) -> HashMap<ShortId, Ipv4Addr> {
    links
        .into_iter()
        .filter_map(|(id, link)| {
            let data = neighbours.get(&id).copied()?;
            choose(&link, Some(data)).ok().map(|local| (id, local))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ours: bool, theirs: bool, encrypted: bool, local: &str) -> Link {
        Link {
            ours,
            encrypted,
            theirs,
            local: local.parse().unwrap(),
        }
    }

    const LOCAL: &str = "192.168.48.13:41000";

    #[test]
    fn only_both_ends_without_a_password_negotiate() {
        assert!(negotiated(true, true, false));
        assert!(!negotiated(true, false, false));
        assert!(!negotiated(false, true, false));
        assert!(!negotiated(true, true, true));
    }

    #[test]
    fn choose_gives_our_address_or_the_first_reason() {
        let data = Some("192.168.48.14:6784".parse().unwrap());
        let ours: Ipv4Addr = "192.168.48.13".parse().unwrap();
        assert_eq!(choose(&link(true, true, false, LOCAL), data), Ok(ours));
        assert_eq!(
            choose(&link(false, true, false, LOCAL), data),
            Err(FastdpOff::NotHere)
        );
        assert_eq!(
            choose(&link(true, true, true, LOCAL), data),
            Err(FastdpOff::PasswordMode)
        );
        assert_eq!(
            choose(&link(true, false, false, LOCAL), data),
            Err(FastdpOff::PeerHasNone)
        );
        assert_eq!(
            choose(&link(true, true, false, LOCAL), None),
            Err(FastdpOff::NotRouted)
        );
        assert_eq!(
            choose(&link(true, true, false, "[fd00::1]:41000"), data),
            Err(FastdpOff::NotIpv4)
        );
        assert_eq!(
            choose(
                &link(true, true, false, LOCAL),
                Some("[fd00::2]:6784".parse().unwrap())
            ),
            Err(FastdpOff::NotIpv4)
        );
        assert_eq!(FastdpOff::NotHere.reason(), None);
        assert_eq!(FastdpOff::PeerHasNone.reason(), Some("peer has no fastdp"));
        assert_eq!(FastdpOff::PasswordMode.reason(), Some("password mode"));
    }

    #[test]
    fn the_table_holds_negotiated_ipv4_neighbours_only() {
        let (a, b, c, d, e, f) = (
            ShortId(1),
            ShortId(2),
            ShortId(3),
            ShortId(4),
            ShortId(5),
            ShortId(6),
        );
        let neighbours: HashMap<ShortId, SocketAddr> = [
            (a, "10.0.0.1:6784"),
            (b, "10.0.0.2:6784"),
            (c, "10.0.0.3:6784"),
            (d, "[fd00::4]:6784"),
            (f, "10.0.0.6:6784"),
        ]
        .into_iter()
        .map(|(id, s)| (id, s.parse().unwrap()))
        .collect();
        let links = [
            // Negotiated, IPv4 both ends: in.
            (a, link(true, true, false, "10.0.0.9:40001")),
            // The peer has no fastdp.
            (b, link(true, false, false, "10.0.0.9:40002")),
            // Our end is IPv6.
            (c, link(true, true, false, "[fd00::9]:40003")),
            // The peer's data address is IPv6.
            (d, link(true, true, false, "10.0.0.9:40004")),
            // Not in the forwarding table's neighbours.
            (e, link(true, true, false, "10.0.0.9:40005")),
            // Another local address on this link: it is the one used.
            (f, link(true, true, false, "172.16.0.9:40006")),
        ];
        let want: HashMap<ShortId, Ipv4Addr> = [
            (a, "10.0.0.9".parse().unwrap()),
            (f, "172.16.0.9".parse().unwrap()),
        ]
        .into_iter()
        .collect();
        assert_eq!(table(&neighbours, links), want);

        // Password mode, or this agent not running fastdp: empty.
        let encrypted = links.map(|(id, l)| {
            (
                id,
                Link {
                    encrypted: true,
                    ..l
                },
            )
        });
        assert!(table(&neighbours, encrypted).is_empty());
        let not_here = links.map(|(id, l)| (id, Link { ours: false, ..l }));
        assert!(table(&neighbours, not_here).is_empty());
    }
}
