//! What peers say to each other about IP allocation, and the checks on what
//! arrives, pure so that a fuzz target can drive them.
//!
//! The sender's whole [`Ring`] (gossiped to neighbours on every change and
//! every few seconds; each peer merges and passes on what changed), and
//! requests sent to one peer, routed hop by hop through the mesh like
//! Weave's unicast gossip: for a share of space, or for one address (a
//! claim). The answer to a request is the donor's ring, sent back to the
//! requester and gossiped, or a refused claim's reason.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::consensus::{ConsensusMessage, MAX_PROPOSAL_PEERS};
use super::ring::Ring;
use crate::peer_name::PeerName;

/// Most hops a routed message takes before it is dropped (routing loops
/// while the topology settles).
pub const MAX_HOPS: u8 = 16;

/// One IPAM message and where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPacket {
    /// The peer that wrote it.
    pub src: PeerName,
    /// `None`: for the neighbour that receives it (ring gossip); `Some`:
    /// routed to that peer.
    pub dst: Option<PeerName>,
    /// Hops taken so far.
    pub hops: u8,
    pub body: IpamMessage,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IpamMessage {
    /// The sender's ring (uninitialised rings included: they say "I am
    /// waiting for consensus").
    Ring { ring: Ring },
    /// The sender has no free address in `subnet` and asks for a share of
    /// the receiver's space there (or, while nobody owns anything, asks the
    /// receiver to initialise the ring).
    SpaceRequest { subnet: Ipv4Net },
    /// The sender wants the one address `addr` (an explicit address for a
    /// container, or one its containers held before it lost its ring) that
    /// the ring says the receiver owns. The receiver hands it over (and
    /// answers with its ring) unless one of its containers holds it
    /// ([`IpamMessage::ClaimRefused`]).
    Claim { addr: Ipv4Addr },
    /// The answer to a [`IpamMessage::Claim`] that cannot be granted.
    ClaimRefused { addr: Ipv4Addr, reason: String },
    /// A step of the agreement on who starts the ring, between peers whose
    /// ring is not initialised yet.
    Consensus { step: ConsensusMessage },
}

/// Longest [`IpamMessage::ClaimRefused`] reason accepted from a peer.
pub const MAX_REASON: usize = 256;

/// Why a packet from a neighbour is dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPacket {
    #[error("gossip from {neighbour} claims to come from {src}")]
    Forged { neighbour: PeerName, src: PeerName },
    #[error("addressed to its own sender {0}")]
    ToItself(PeerName),
    #[error("over {MAX_HOPS} hops")]
    TooManyHops,
    #[error("invalid ring: {0}")]
    Ring(#[from] super::ring::Malformed),
    #[error("a claim refusal's reason is over {MAX_REASON} bytes")]
    LongReason,
    #[error("a consensus proposal with no peers or over {MAX_PROPOSAL_PEERS}")]
    BadProposal,
}

impl IpamPacket {
    /// A packet for the neighbours.
    pub const fn gossip(src: PeerName, body: IpamMessage) -> Self {
        Self {
            src,
            dst: None,
            hops: 0,
            body,
        }
    }

    /// A packet routed to `dst`.
    pub const fn to(src: PeerName, dst: PeerName, body: IpamMessage) -> Self {
        Self {
            src,
            dst: Some(dst),
            hops: 0,
            body,
        }
    }

    /// What a router checks on a packet that `neighbour` sent it: gossip
    /// comes from the neighbour itself (a peer cannot speak for another),
    /// routed packets have a bounded path, rings are well formed.
    pub fn check(&self, neighbour: PeerName) -> Result<(), BadPacket> {
        if self.dst.is_none() && self.src != neighbour {
            return Err(BadPacket::Forged {
                neighbour,
                src: self.src,
            });
        }
        if self.dst == Some(self.src) {
            return Err(BadPacket::ToItself(self.src));
        }
        if self.hops >= MAX_HOPS {
            return Err(BadPacket::TooManyHops);
        }
        match &self.body {
            IpamMessage::Ring { ring } => ring.validate()?,
            IpamMessage::ClaimRefused { reason, .. } if reason.len() > MAX_REASON => {
                return Err(BadPacket::LongReason);
            }
            IpamMessage::Consensus { step } if !step.is_valid() => {
                return Err(BadPacket::BadProposal);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Mac;

    fn peer(i: u8) -> PeerName {
        PeerName(Mac([2, 0, 0, 0, 0, i]))
    }

    #[test]
    fn packets_round_trip_and_are_checked() {
        let ring = Ring::init_with_id("10.32.0.0/12".parse().unwrap(), peer(1), 9).unwrap();
        let p = IpamPacket::gossip(peer(1), IpamMessage::Ring { ring });
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"kind\":\"ring\""), "{json}");
        assert_eq!(serde_json::from_str::<IpamPacket>(&json).unwrap(), p);
        p.check(peer(1)).unwrap();
        assert_eq!(
            p.check(peer(2)),
            Err(BadPacket::Forged {
                neighbour: peer(2),
                src: peer(1)
            })
        );
        let mut r = IpamPacket::to(
            peer(1),
            peer(3),
            IpamMessage::SpaceRequest {
                subnet: "10.32.0.0/12".parse().unwrap(),
            },
        );
        // Routed packets may come through any neighbour.
        r.check(peer(2)).unwrap();
        r.hops = MAX_HOPS;
        assert_eq!(r.check(peer(2)), Err(BadPacket::TooManyHops));
        r.hops = 0;
        r.dst = Some(peer(1));
        assert_eq!(r.check(peer(2)), Err(BadPacket::ToItself(peer(1))));
        let refusal = |reason: String| {
            IpamPacket::to(
                peer(1),
                peer(3),
                IpamMessage::ClaimRefused {
                    addr: "10.32.0.3".parse().unwrap(),
                    reason,
                },
            )
        };
        refusal("in use".into()).check(peer(2)).unwrap();
        assert_eq!(
            refusal("x".repeat(MAX_REASON + 1)).check(peer(2)),
            Err(BadPacket::LongReason)
        );
    }
}
