//! What fastdp's maps must hold for a forwarding table: pure, so the rule
//! lives in one place and is unit-tested without a kernel.
//!
//! A peer is encapsulated to only when every one of these holds: the mesh
//! is not in password mode (sealing needs the agent), both ends negotiated
//! fastdp on their connection, it is a direct neighbour its frames go to
//! straight (not through a relay), both its data address and our address on
//! the connection are IPv4, and the interface holding our address is known.
//! A peer whose path takes smaller frames than the overlay MTU makes gets
//! its limit: larger frames go to the userspace engine, which fragments or
//! answers them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use weave_common::fastdp::{FastdpPeer, Sender, SenderKey};

use crate::overlay::forwarding::ForwardingTable;
#[cfg(test)]
use crate::overlay::forwarding::ShortId;

/// The maps' wanted contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    /// `FASTDP_PEERS`: short id -> where to send.
    pub peers: HashMap<u32, FastdpPeer>,
    /// `FASTDP_SENDERS`: where a neighbour sends from -> who it is.
    pub senders: HashMap<SenderKey, Sender>,
}

/// The contents for `table`; `interface_of` names the interface index that
/// holds a local address (encapsulated frames leave by it).
pub(crate) fn desired(
    table: &ForwardingTable,
    interface_of: impl Fn(Ipv4Addr) -> Option<u32>,
) -> Desired {
    let mut out = Desired::default();
    if table.encrypted {
        return out;
    }
    for (&peer, &local) in &table.fastdp {
        if peer == table.me || table.next_hop.get(&peer) != Some(&peer) {
            continue;
        }
        let Some(SocketAddr::V4(remote)) = table.neighbours.get(&peer).copied() else {
            continue;
        };
        let Some(ifindex) = interface_of(local) else {
            continue;
        };
        out.peers.insert(
            u32::from(peer.0),
            FastdpPeer {
                remote_ip: remote.ip().octets(),
                local_ip: local.octets(),
                ifindex,
                remote_port: remote.port(),
                // Frames over it are left to the userspace engine.
                frame_limit: table
                    .frame_limit
                    .get(&peer)
                    .map_or(0, |&limit| u16::try_from(limit).unwrap_or(u16::MAX).max(1)),
            },
        );
        out.senders.insert(
            SenderKey {
                ip: remote.ip().octets(),
                port: remote.port(),
                zero: 0,
            },
            Sender {
                peer: peer.0,
                zero: 0,
                local_ip: local.octets(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carries(desired: &Desired, peer: ShortId) -> bool {
        desired.peers.contains_key(&u32::from(peer.0))
    }

    fn table() -> ForwardingTable {
        let mut t = ForwardingTable {
            me: ShortId(1),
            ..ForwardingTable::default()
        };
        for (id, addr) in [
            (2, "10.0.0.2:6784"),
            (3, "10.0.0.3:6784"),
            (5, "[fd00::5]:6784"),
        ] {
            t.neighbours.insert(ShortId(id), addr.parse().unwrap());
            t.next_hop.insert(ShortId(id), ShortId(id));
        }
        // 4 is reached through 2.
        t.next_hop.insert(ShortId(4), ShortId(2));
        t
    }

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn only_negotiated_direct_ipv4_neighbours_are_carried() {
        let mut t = table();
        for id in [2, 4, 5] {
            t.fastdp.insert(ShortId(id), LOCAL);
        }
        let d = desired(&t, |_| Some(7));
        assert!(carries(&d, ShortId(2)));
        assert!(!carries(&d, ShortId(3)), "3 did not negotiate fastdp");
        assert!(!carries(&d, ShortId(4)), "4 is relayed");
        assert!(!carries(&d, ShortId(5)), "5 is reached over IPv6");
        assert_eq!(d.peers.len(), 1);
        let p = d.peers[&2];
        assert_eq!(
            (
                p.remote_ip,
                p.local_ip,
                p.ifindex,
                p.remote_port,
                p.frame_limit
            ),
            ([10, 0, 0, 2], [10, 0, 0, 1], 7, 6784, 0)
        );
        t.frame_limit.insert(ShortId(2), 700);
        assert_eq!(desired(&t, |_| Some(7)).peers[&2].frame_limit, 700);
        let key = SenderKey {
            ip: [10, 0, 0, 2],
            port: 6784,
            zero: 0,
        };
        assert_eq!(d.senders[&key].peer, 2);
        assert_eq!(d.senders[&key].local_ip, [10, 0, 0, 1]);
    }

    #[test]
    fn nothing_in_password_mode_or_without_an_interface() {
        let mut t = table();
        t.fastdp.insert(ShortId(2), LOCAL);
        assert!(desired(&t, |_| None).peers.is_empty());
        t.encrypted = true;
        assert_eq!(desired(&t, |_| Some(7)), Desired::default());
    }
}
