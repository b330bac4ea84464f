//! What happens to each frame, decided without I/O: the workers hand frames
//! in and carry the verdicts out, so every rule is unit-tested here.
//!
//! From the bridge: broadcast, multicast and unknown destinations flood along
//! this peer's broadcast tree; a destination learnt behind a peer goes to that
//! peer's next hop. The only thing learnt is that the source is local.
//!
//! From a peer: only from a neighbour's address, only well-formed VXLAN
//! within the MTU; for this peer or for all, the inner frame is delivered
//! (and a broadcast passed on down the origin's tree), its source learnt
//! behind the origin, unless that source is a local MAC; for another peer,
//! the packet is relayed unchanged.

use std::net::SocketAddr;
use std::time::Instant;

use crate::mac::Mac;
use crate::overlay::counters::DropReason;
use crate::overlay::decide::macs::Macs;
use crate::overlay::decide::routes::Routes;
use crate::overlay::forwarding::ShortId;
use crate::overlay::wire::vxlan;

const DST_MAC: usize = 0;
const SRC_MAC: usize = 6;

pub(crate) fn mac_at(frame: &[u8], offset: usize) -> Mac {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[offset..offset + 6]);
    Mac(mac)
}

/// Broadcast and multicast addresses have the group bit set.
pub(crate) const fn is_group(mac: Mac) -> bool {
    mac.0[0] & 1 != 0
}

/// A frame captured on the datapath port, on its way to peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromBridge {
    /// To this peer's children in its own broadcast tree, VNI (me, BROADCAST).
    Flood,
    /// To `hop` (at `via`), the next hop towards `peer`, VNI (me, peer).
    Unicast {
        peer: ShortId,
        hop: ShortId,
        via: SocketAddr,
    },
    /// For a MAC on this host: the bridge flooded it here too; not for peers.
    Local,
    Drop(DropReason),
}

/// The verdict for a frame captured from the bridge.
pub fn from_bridge(
    frame: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) -> FromBridge {
    from_bridge_tagged(frame, max_frame, None, routes, macs, now)
}

/// [`from_bridge`] for a frame whose destination the datapath XDP program
/// may have looked up already (`tag`: the peer the MAC was learnt behind,
/// or BROADCAST for a group or unknown MAC; `None`: not looked up): the
/// remote table is only consulted for an untagged frame.
pub fn from_bridge_tagged(
    frame: &[u8],
    max_frame: usize,
    tag: Option<ShortId>,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) -> FromBridge {
    if let Err(reason) = learn_local_source(frame, max_frame, macs, now) {
        return FromBridge::Drop(reason);
    }
    let peer = match tag {
        Some(peer) if peer != ShortId::BROADCAST => peer,
        _ => {
            let dst = mac_at(frame, DST_MAC);
            if is_group(dst) {
                return FromBridge::Flood;
            }
            if macs.local.lookup(&dst, now).is_some() {
                return FromBridge::Local;
            }
            match (tag, macs.remote.lookup(&dst, now)) {
                (None, Some(peer)) => peer,
                _ => return FromBridge::Flood,
            }
        }
    };
    match routes.next_hop(peer) {
        Some((hop, via)) => FromBridge::Unicast { peer, hop, via },
        None => FromBridge::Drop(DropReason::NoRoute),
    }
}

/// Checks a frame from the bridge and learns its source as local.
fn learn_local_source(
    frame: &[u8],
    max_frame: usize,
    macs: &mut Macs,
    now: Instant,
) -> Result<(), DropReason> {
    if frame.len() < vxlan::ETHERNET_HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    if frame.len() > max_frame {
        return Err(DropReason::Oversize);
    }
    let src = mac_at(frame, SRC_MAC);
    if is_group(src) {
        return Err(DropReason::Malformed);
    }
    macs.learn_local(src, now);
    Ok(())
}

/// A VXLAN packet received from the underlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromPeer {
    /// Inject the inner frame into the bridge; when `broadcast`, also pass
    /// the packet on to the origin's children, except `sender`.
    Deliver {
        origin: ShortId,
        sender: ShortId,
        broadcast: bool,
    },
    /// Pass the packet on, VXLAN header `vni` unchanged, to `hop` at `via`,
    /// the next hop towards its destination; it came from neighbour `sender`.
    Relay {
        vni: u32,
        sender: ShortId,
        hop: ShortId,
        via: SocketAddr,
    },
    Drop(DropReason),
}

/// For a packet too long for the receive buffer (so not read whole): an
/// oversize packet from a neighbour, or one from a stranger.
pub fn from_peer_truncated(sender: Option<SocketAddr>, routes: &Routes) -> FromPeer {
    match sender.and_then(|a| routes.neighbour_at(&a)) {
        Some(_) => FromPeer::Drop(DropReason::Oversize),
        None => FromPeer::Drop(DropReason::UnknownSender),
    }
}

/// `sender`: the packet's source address, canonical (see `sys::canonical`).
pub fn from_peer(
    sender: Option<SocketAddr>,
    payload: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) -> FromPeer {
    let Some(sender) = sender.and_then(|a| routes.neighbour_at(&a)) else {
        return FromPeer::Drop(DropReason::UnknownSender);
    };
    let Ok(packet) = vxlan::parse(payload) else {
        return FromPeer::Drop(DropReason::Malformed);
    };
    if packet.frame.len() > max_frame {
        return FromPeer::Drop(DropReason::Oversize);
    }
    let (origin, dest) = ShortId::from_vni(packet.vni);
    let me = routes.me();
    if origin == me {
        return FromPeer::Drop(DropReason::Spoofed);
    }
    if dest != me && dest != ShortId::BROADCAST {
        // Never back where it came from, nor to where it started.
        return match routes.next_hop(dest) {
            Some((hop, via)) if hop != sender && hop != origin => FromPeer::Relay {
                vni: packet.vni,
                sender,
                hop,
                via,
            },
            _ => FromPeer::Drop(DropReason::NoRoute),
        };
    }
    if !routes.reaches(origin) {
        return FromPeer::Drop(DropReason::UnknownSender);
    }
    let src = mac_at(packet.frame, SRC_MAC);
    if is_group(src) {
        return FromPeer::Drop(DropReason::Malformed);
    }
    if macs.local.lookup(&src, now).is_some() {
        return FromPeer::Drop(DropReason::Spoofed);
    }
    // Delivered whether or not the origin was over its learning allowance.
    macs.learn_remote(src, origin, now);
    FromPeer::Deliver {
        origin,
        sender,
        broadcast: dest == ShortId::BROADCAST,
    }
}

/// What makes two packets' [`from_peer`] verdicts the same within one
/// batch (one lock of the MAC tables, one routes snapshot): the sender, the
/// VXLAN header and the inner source MAC. Nothing else of the packet is
/// read but its length, checked every time.
type Likeness = (SocketAddr, [u8; vxlan::HEADER_LEN], [u8; 6]);

/// [`from_peer`] over one batch: a packet like the one before it (see
/// [`Likeness`]) gets its verdict without the lookups. The packets of a
/// GRO datagram come from one sender and mostly one TCP stream, so this
/// looks the sender up and learns the source MAC once per run of them
/// instead of once per packet. Learning the same MAC behind the same origin
/// again at the same instant changes nothing, so the verdicts and the
/// tables are exactly what per-packet calls would give; only
/// `Macs::not_learnt` counts a source refused for its origin's allowance
/// once per run of like packets, not once per packet. Start a new one for
/// every batch.
#[derive(Default)]
pub struct FromPeerBatch {
    last: Option<(Likeness, FromPeer)>,
}

impl FromPeerBatch {
    pub fn from_peer(
        &mut self,
        sender: Option<SocketAddr>,
        payload: &[u8],
        max_frame: usize,
        routes: &Routes,
        macs: &mut Macs,
        now: Instant,
    ) -> FromPeer {
        let within = (vxlan::HEADER_LEN + vxlan::ETHERNET_HEADER_LEN
            ..=vxlan::HEADER_LEN + max_frame)
            .contains(&payload.len());
        let likeness = sender.filter(|_| within).and_then(|sender| {
            let header = payload.first_chunk::<{ vxlan::HEADER_LEN }>()?;
            let src = payload.get(vxlan::HEADER_LEN + SRC_MAC..vxlan::HEADER_LEN + SRC_MAC + 6)?;
            Some((sender, *header, <[u8; 6]>::try_from(src).ok()?))
        });
        if let (Some(likeness), Some((last, verdict))) = (likeness, self.last)
            && likeness == last
        {
            return verdict;
        }
        let verdict = from_peer(sender, payload, max_frame, routes, macs, now);
        self.last = likeness.map(|l| (l, verdict));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::overlay::decide::routes::tests::{A, B, C, addr, line_seen_from_b};

    const MTU: usize = 1450;
    const MAX: usize = MTU + vxlan::ETHERNET_HEADER_LEN;
    const LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb1];
    const AT_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
    const AT_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
    const BCAST: [u8; 6] = [0xff; 6];

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn packet(origin: ShortId, dest: ShortId, frame: &[u8]) -> Vec<u8> {
        let mut p = vxlan::header(ShortId::vni(origin, dest)).to_vec();
        p.extend_from_slice(frame);
        p
    }

    fn setup() -> (Routes, Macs, Instant) {
        (
            Routes::compile(Arc::new(line_seen_from_b())),
            Macs::default(),
            Instant::now(),
        )
    }

    #[test]
    fn bridge_frames_flood_until_their_destination_is_learnt() {
        let (routes, mut macs, now) = setup();
        let to_a = frame(AT_A, LOCAL, 60);
        assert_eq!(
            from_bridge(&frame(BCAST, LOCAL, 60), MAX, &routes, &mut macs, now),
            FromBridge::Flood
        );
        assert_eq!(
            from_bridge(&to_a, MAX, &routes, &mut macs, now),
            FromBridge::Flood
        );
        let reply = packet(A, B, &frame(LOCAL, AT_A, 60));
        assert!(matches!(
            from_peer(Some(addr(A)), &reply, MAX, &routes, &mut macs, now),
            FromPeer::Deliver {
                origin: A,
                sender: A,
                broadcast: false
            }
        ));
        assert_eq!(
            from_bridge(&to_a, MAX, &routes, &mut macs, now),
            FromBridge::Unicast {
                peer: A,
                hop: A,
                via: addr(A)
            }
        );
        // A local destination: the bridge flooded it, peers don't need it.
        let other_local = [0x02, 0, 0, 0, 0, 0xb2];
        from_bridge(&frame(BCAST, other_local, 60), MAX, &routes, &mut macs, now);
        assert_eq!(
            from_bridge(&frame(other_local, LOCAL, 60), MAX, &routes, &mut macs, now),
            FromBridge::Local
        );
    }

    #[test]
    fn bridge_frames_that_cannot_go_are_dropped() {
        let (routes, mut macs, now) = setup();
        let drop = |r| FromBridge::Drop(r);
        assert_eq!(
            from_bridge(&[0u8; 13], MAX, &routes, &mut macs, now),
            drop(DropReason::Malformed)
        );
        assert_eq!(
            from_bridge(&frame(BCAST, LOCAL, MAX + 1), MAX, &routes, &mut macs, now),
            drop(DropReason::Oversize)
        );
        assert_eq!(
            from_bridge(&frame(BCAST, BCAST, 60), MAX, &routes, &mut macs, now),
            drop(DropReason::Malformed)
        );
        // Learnt behind a peer that is no longer reachable.
        macs.remote.learn(Mac(AT_A), ShortId(0x999), now);
        assert_eq!(
            from_bridge(&frame(AT_A, LOCAL, 60), MAX, &routes, &mut macs, now),
            drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn a_mac_seen_locally_has_moved_here() {
        let (routes, mut macs, now) = setup();
        macs.remote.learn(Mac(AT_A), A, now);
        from_bridge(&frame(BCAST, AT_A, 60), MAX, &routes, &mut macs, now);
        assert_eq!(macs.remote.lookup(&Mac(AT_A), now), None);
        assert_eq!(macs.local.lookup(&Mac(AT_A), now), Some(()));
    }

    #[test]
    fn peers_cannot_claim_local_macs_or_this_peer() {
        let (routes, mut macs, now) = setup();
        from_bridge(&frame(BCAST, LOCAL, 60), MAX, &routes, &mut macs, now);
        let spoof = packet(A, ShortId::BROADCAST, &frame(BCAST, LOCAL, 60));
        assert_eq!(
            from_peer(Some(addr(A)), &spoof, MAX, &routes, &mut macs, now),
            FromPeer::Drop(DropReason::Spoofed)
        );
        let as_me = packet(B, ShortId::BROADCAST, &frame(BCAST, AT_A, 60));
        assert_eq!(
            from_peer(Some(addr(A)), &as_me, MAX, &routes, &mut macs, now),
            FromPeer::Drop(DropReason::Spoofed)
        );
        assert_eq!(macs.remote.len(), 0);
    }

    #[test]
    fn broadcasts_are_delivered_and_passed_down_the_tree() {
        let (routes, mut macs, now) = setup();
        let p = packet(A, ShortId::BROADCAST, &frame(BCAST, AT_A, 60));
        assert_eq!(
            from_peer(Some(addr(A)), &p, MAX, &routes, &mut macs, now),
            FromPeer::Deliver {
                origin: A,
                sender: A,
                broadcast: true
            }
        );
        assert_eq!(routes.children(A), &[(C, addr(C))]);
        assert_eq!(macs.remote.lookup(&Mac(AT_A), now), Some(A));
    }

    #[test]
    fn frames_for_others_are_relayed_never_back() {
        let (routes, mut macs, now) = setup();
        let p = packet(A, C, &frame(AT_C, AT_A, 60));
        assert_eq!(
            from_peer(Some(addr(A)), &p, MAX, &routes, &mut macs, now),
            FromPeer::Relay {
                vni: ShortId::vni(A, C),
                sender: A,
                hop: C,
                via: addr(C)
            }
        );
        // Relays learn nothing.
        assert!(macs.remote.is_empty());
        // From C for C: would go back where it came from.
        let back = packet(A, C, &frame(AT_C, AT_A, 60));
        assert_eq!(
            from_peer(Some(addr(C)), &back, MAX, &routes, &mut macs, now),
            FromPeer::Drop(DropReason::NoRoute)
        );
        let nowhere = packet(A, ShortId(0x555), &frame(AT_C, AT_A, 60));
        assert_eq!(
            from_peer(Some(addr(A)), &nowhere, MAX, &routes, &mut macs, now),
            FromPeer::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn bad_packets_from_peers_are_dropped() {
        let (routes, mut macs, now) = setup();
        let good = packet(A, B, &frame(LOCAL, AT_A, 60));
        let stranger: SocketAddr = "192.168.250.1:40000".parse().unwrap();
        let verdict = |macs: &mut Macs, from: Option<SocketAddr>, p: &[u8]| {
            from_peer(from, p, MAX, &routes, macs, now)
        };
        assert_eq!(
            verdict(&mut macs, Some(stranger), &good),
            FromPeer::Drop(DropReason::UnknownSender)
        );
        assert_eq!(
            verdict(&mut macs, None, &good),
            FromPeer::Drop(DropReason::UnknownSender)
        );
        assert_eq!(
            verdict(&mut macs, Some(addr(A)), &good[..20]),
            FromPeer::Drop(DropReason::Malformed)
        );
        assert_eq!(
            verdict(&mut macs, Some(addr(A)), b"garbage"),
            FromPeer::Drop(DropReason::Malformed)
        );
        let big = packet(A, B, &frame(LOCAL, AT_A, MAX + 1));
        assert_eq!(
            verdict(&mut macs, Some(addr(A)), &big),
            FromPeer::Drop(DropReason::Oversize)
        );
        let group_src = packet(A, B, &frame(LOCAL, BCAST, 60));
        assert_eq!(
            verdict(&mut macs, Some(addr(A)), &group_src),
            FromPeer::Drop(DropReason::Malformed)
        );
        let unknown_origin = packet(ShortId(0x777), B, &frame(LOCAL, AT_A, 60));
        assert_eq!(
            verdict(&mut macs, Some(addr(A)), &unknown_origin),
            FromPeer::Drop(DropReason::UnknownSender)
        );
        assert!(macs.remote.is_empty());
        assert!(matches!(
            verdict(
                &mut macs,
                Some(addr(A)),
                &packet(A, B, &frame(LOCAL, AT_A, MAX))
            ),
            FromPeer::Deliver { .. }
        ));
    }

    #[test]
    fn a_batch_decides_like_packet_by_packet_calls() {
        let (routes, mut one_by_one, now) = setup();
        let mut batched = Macs::default();
        let at_a2 = [0x02, 0, 0, 0, 0, 0xa2];
        let to_me = |src, len| packet(A, B, &frame(LOCAL, src, len));
        // Runs of like packets, broken by another source, another VNI
        // (a relay, a broadcast), another sender, a stranger, lengths over
        // the MTU and under an Ethernet header, a local MAC as source.
        let packets: Vec<(Option<SocketAddr>, Vec<u8>)> = vec![
            (Some(addr(A)), to_me(AT_A, 1400)),
            (Some(addr(A)), to_me(AT_A, 1400)),
            (Some(addr(A)), to_me(AT_A, MAX + 1)),
            (Some(addr(A)), to_me(AT_A, 60)),
            (Some(addr(A)), to_me(at_a2, 60)),
            (Some(addr(A)), packet(A, C, &frame(AT_C, AT_A, 60))),
            (Some(addr(A)), packet(A, C, &frame(AT_C, AT_A, 60))),
            (
                Some(addr(A)),
                packet(A, ShortId::BROADCAST, &frame(BCAST, AT_A, 60)),
            ),
            (Some(addr(C)), packet(C, B, &frame(LOCAL, AT_A, 60))),
            (Some(addr(C)), packet(C, B, &frame(LOCAL, AT_A, 60))),
            (None, to_me(AT_A, 60)),
            (Some(addr(A)), to_me(AT_A, 60)[..20].to_vec()),
            (Some(addr(A)), to_me(LOCAL, 60)),
            (Some(addr(A)), to_me(AT_A, 60)),
        ];
        batched.learn_local(Mac(LOCAL), now);
        one_by_one.learn_local(Mac(LOCAL), now);
        let mut batch = FromPeerBatch::default();
        for (i, (sender, payload)) in packets.iter().enumerate() {
            let want = from_peer(*sender, payload, MAX, &routes, &mut one_by_one, now);
            let got = batch.from_peer(*sender, payload, MAX, &routes, &mut batched, now);
            assert_eq!(got, want, "packet {i}");
        }
        for mac in [AT_A, at_a2, AT_C, LOCAL] {
            assert_eq!(
                batched.remote.lookup(&Mac(mac), now),
                one_by_one.remote.lookup(&Mac(mac), now),
                "{mac:02x?}"
            );
        }
    }
}
