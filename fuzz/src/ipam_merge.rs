//! The `ipam_merge` fuzz target: IPAM messages from peers, rings merged into
//! ours, and claims of single addresses handed over from ours.

use std::sync::OnceLock;

use super::mesh_frames::{check_message, encode};
use weave_agent::ipam::{IpamMessage, IpamPacket, Malformed, Ring, RingError, Space};
use weave_agent::mac::Mac;
use weave_agent::mesh::protocol::Message;
use weave_agent::peer_name::PeerName;

/// The ring id of the rings the checks merge into (seeds share it, so that
/// they reach the merge rather than the identity check).
const IPAM_RING_ID: u64 = 0x5eed;

const fn ipam_peer(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

/// Our rings before the merge, as peer 1: nothing yet; all of the range
/// with addresses in use; half of it (the other half given to peer 2),
/// with addresses in use on both sides of peer 3's would-be tokens.
fn ipam_states() -> &'static [(Ring, Space)] {
    static STATES: OnceLock<Vec<(Ring, Space)>> = OnceLock::new();
    STATES.get_or_init(|| {
        let range = "10.32.0.0/12".parse().expect("a valid range");
        let me = ipam_peer(1);
        let fresh = Ring::new(range).expect("a valid range");
        let mut all = Ring::init_with_id(range, me, IPAM_RING_ID).expect("a valid range");
        let mut used = Space::new();
        for _ in 0..3 {
            used.allocate(&all, me, range).expect("room");
        }
        used.claim(&all, me, "10.36.0.7/12".parse().expect("a cidr"))
            .expect("ours");
        all.report_free(me, &used);
        let mut half = all.clone();
        half.donate(me, ipam_peer(2), range, &used)
            .expect("half to give");
        vec![(fresh, Space::new()), (all, used.clone()), (half, used)]
    })
}

/// Input: the body of a frame. An IPAM packet is checked as the router
/// checks it (from neighbour peer 2); a ring is merged into each of our
/// states. A merge either fails and changes nothing, or keeps a valid ring
/// in which every address we use is still ours, and merging it again
/// changes nothing more.
pub fn ipam_merge(data: &[u8]) {
    let Some(Message::Ipam(packet)) = check_message(data) else {
        return;
    };
    let _ = packet.check(ipam_peer(2));
    if let IpamMessage::Claim { addr } = packet.body {
        hand_over(addr);
        return;
    }
    let IpamMessage::Ring { ring: theirs } = &packet.body else {
        return;
    };
    let me = ipam_peer(1);
    for (start, space) in ipam_states() {
        let mut ours = start.clone();
        match ours.merge(theirs, me, space) {
            Err(e) => {
                assert_eq!(&ours, start, "a failed merge ({e}) changed our ring");
                if theirs.validate().is_ok() {
                    assert!(
                        matches!(
                            e,
                            RingError::Conflict { .. }
                                | RingError::Invalid(Malformed::TooManyEntries(_))
                        ),
                        "a valid ring refused as {e}"
                    );
                }
            }
            Ok(outcome) => {
                ours.validate()
                    .unwrap_or_else(|e| panic!("the merge made an invalid ring: {e}"));
                assert!(
                    space.not_owned(&ours, me).is_empty(),
                    "addresses we use were taken from us (refused: {:?})",
                    outcome.refused
                );
                assert_eq!(ours.range(), start.range());
                let once = ours.clone();
                let again = ours.merge(theirs, me, space).expect("merged once");
                assert!(!again.changed, "merging twice changed the ring again");
                assert_eq!(ours, once);
            }
        }
    }
}

/// Peer 2 claims `addr` from each of our states: we hand over exactly that
/// address, or refuse and change nothing; never one we use.
fn hand_over(addr: std::net::Ipv4Addr) {
    let me = ipam_peer(1);
    for (start, space) in ipam_states() {
        let mut ours = start.clone();
        match ours.hand_over(me, ipam_peer(2), addr, space) {
            Ok(true) => {
                ours.validate()
                    .unwrap_or_else(|e| panic!("handing over {addr} made an invalid ring: {e}"));
                assert!(!space.is_used(addr), "handed over {addr}, which we use");
                assert_eq!(ours.owner_of(addr), Some(ipam_peer(2)));
                assert!(
                    space.not_owned(&ours, me).is_empty(),
                    "handing over {addr} took an address we use"
                );
                assert_eq!(
                    ours.size(),
                    start.size(),
                    "the range changed when handing over {addr}"
                );
            }
            Ok(false) | Err(_) => {
                assert_eq!(&ours, start, "a refused claim of {addr} changed our ring")
            }
        }
    }
}

pub(crate) fn ipam_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body = |packet: IpamPacket| encode(&Message::Ipam(packet))[4..].to_vec();
    let range = "10.32.0.0/12".parse().expect("a valid range");
    let (p2, p3) = (ipam_peer(2), ipam_peer(3));
    let ring = |r: Ring| IpamMessage::Ring { ring: r };
    // Peer 2's view after it was given half and gave a quarter to peer 3.
    let mut theirs = ipam_states()[2].0.clone();
    theirs.donate(p2, p3, range, &Space::new()).expect("room");
    // Peer 2 took over everything of ours (an rmpeer of a live peer).
    let mut takeover = ipam_states()[1].0.clone();
    takeover.transfer(ipam_peer(1), p2);
    vec![
        ("donated", body(IpamPacket::gossip(p2, ring(theirs)))),
        ("takeover", body(IpamPacket::gossip(p2, ring(takeover)))),
        (
            "uninitialised",
            body(IpamPacket::gossip(
                p2,
                ring(Ring::new(range).expect("valid")),
            )),
        ),
        (
            "separate-ring",
            body(IpamPacket::gossip(
                p2,
                ring(Ring::init_with_id(range, p2, 77).expect("valid")),
            )),
        ),
        (
            "claim-free",
            body(IpamPacket::to(
                p2,
                ipam_peer(1),
                IpamMessage::Claim {
                    addr: "10.36.0.9".parse().expect("an address"),
                },
            )),
        ),
        (
            "claim-in-use",
            body(IpamPacket::to(
                p2,
                ipam_peer(1),
                IpamMessage::Claim {
                    addr: "10.36.0.7".parse().expect("an address"),
                },
            )),
        ),
        (
            "claim-refused",
            body(IpamPacket::to(
                p2,
                ipam_peer(1),
                IpamMessage::ClaimRefused {
                    addr: "10.36.0.7".parse().expect("an address"),
                    reason: "it is in use by container db on peer h1".to_owned(),
                },
            )),
        ),
        (
            "space-request-routed",
            body(IpamPacket::to(
                p3,
                ipam_peer(1),
                IpamMessage::SpaceRequest {
                    subnet: "10.40.0.0/13".parse().expect("a cidr"),
                },
            )),
        ),
    ]
}
