//! The one place that decides what happens to a frame once its verdict is
//! known, for every data plane: deliver it into the bridge, send it in
//! clear to a peer, seal it for a hop, or drop it. In the manner of
//! boringtun's `TunnResult`: a pure function returns actions and each engine
//! only carries them out, so the rules below hold for every engine alike.
//!
//! The rules:
//! - In password mode nothing leaves in clear: every send is [`Action::Seal`]
//!   for the hop it goes to, so relays and broadcasts passed on are sealed
//!   again for each hop; a hop without keys gets nothing (dropped).
//! - A frame never goes back to the neighbour it came from, nor to its
//!   origin, nor to this peer itself (which only an inconsistent table
//!   could name as a hop).
//! - A broadcast goes to each of this peer's children in the origin's
//!   broadcast tree, once.
//! - A frame larger than the path to a hop takes (its discovered path MTU)
//!   does not go to that hop as it is: [`Action::TooBig`] (fragmented or
//!   answered, see `wire::too_big`), after the password check.
//!
//! No allocation: a [`Plan`] is an iterator over borrowed routes.

use std::net::SocketAddr;

use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::{Hop, Routes};
use crate::overlay::decide::verdict::{FromBridge, FromPeer};
use crate::overlay::forwarding::ShortId;

/// One thing to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Inject the inner frame into this host's bridge.
    Deliver,
    /// Send the inner frame under VXLAN header `vni` to neighbour `hop`, at
    /// `to`, in clear.
    SendClear {
        vni: u32,
        hop: ShortId,
        to: SocketAddr,
    },
    /// Seal the inner frame under VXLAN header `vni` with the keys of the
    /// connection to neighbour `hop`, and send it to `to`.
    Seal {
        vni: u32,
        hop: ShortId,
        to: SocketAddr,
    },
    /// The frame is larger than `limit`, the largest the path to neighbour
    /// `hop` takes: fragment it for `hop` or tell its sender.
    TooBig {
        vni: u32,
        hop: ShortId,
        to: SocketAddr,
        limit: usize,
    },
    Drop(DropReason),
}

/// A frame's verdict, from either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    FromBridge(FromBridge),
    FromPeer(FromPeer),
}

impl From<FromBridge> for Verdict {
    fn from(v: FromBridge) -> Self {
        Self::FromBridge(v)
    }
}

impl From<FromPeer> for Verdict {
    fn from(v: FromPeer) -> Self {
        Self::FromPeer(v)
    }
}

/// The actions for one frame, in order: deliver first (so a broadcast is
/// in the bridge before it is passed on), then the sends.
#[derive(Clone, Debug)]
pub struct Plan<'r> {
    routes: &'r Routes,
    /// The frame's length.
    len: usize,
    deliver: bool,
    drop: Option<DropReason>,
    vni: u32,
    /// A single send (unicast, relay)…
    single: Option<Hop>,
    /// …or one to each of these (a broadcast tree's children)…
    fan_out: &'r [Hop],
    /// …except these: where the frame came from and where it started.
    never: [ShortId; 2],
}

/// What to do with a frame of verdict `verdict`, `len` bytes long, under
/// `routes` (which say whether the mesh uses a password, hold the keys and
/// the paths' limits).
pub fn plan(verdict: impl Into<Verdict>, len: usize, routes: &Routes) -> Plan<'_> {
    let me = routes.me();
    let mut plan = Plan {
        routes,
        len,
        deliver: false,
        drop: None,
        vni: 0,
        single: None,
        fan_out: &[],
        never: [me, me],
    };
    match verdict.into() {
        Verdict::FromBridge(FromBridge::Flood) => {
            plan.vni = ShortId::vni(me, ShortId::BROADCAST);
            plan.fan_out = routes.children(me);
        }
        Verdict::FromBridge(FromBridge::Unicast { peer, hop, via }) => {
            plan.vni = ShortId::vni(me, peer);
            plan.single = Some((hop, via));
        }
        Verdict::FromBridge(FromBridge::Local) => {}
        Verdict::FromPeer(FromPeer::Deliver {
            origin,
            sender,
            broadcast,
        }) => {
            plan.deliver = true;
            plan.never = [sender, origin];
            if broadcast {
                plan.vni = ShortId::vni(origin, ShortId::BROADCAST);
                plan.fan_out = routes.children(origin);
            }
        }
        Verdict::FromPeer(FromPeer::Relay {
            vni,
            sender,
            hop,
            via,
        }) => {
            plan.vni = vni;
            let (origin, _) = ShortId::from_vni(vni);
            plan.never = [sender, origin];
            plan.single = Some((hop, via));
        }
        Verdict::FromBridge(FromBridge::Drop(reason))
        | Verdict::FromPeer(FromPeer::Drop(reason)) => plan.drop = Some(reason),
    }
    plan
}

impl Plan<'_> {
    /// How many times the frame is used (delivered or sent): an engine may
    /// seal a frame in place, without a copy, only when it is used once.
    pub fn uses(&self) -> usize {
        self.clone()
            .filter(|a| !matches!(a, Action::Drop(_)))
            .count()
    }

    /// The action for one send to `hop`.
    fn send(&self, (hop, to): Hop) -> Action {
        if self.never.contains(&hop) || hop == self.routes.me() {
            // Cannot come from a consistent table; never act on it.
            return Action::Drop(DropReason::NoRoute);
        }
        let vni = self.vni;
        if self.routes.encrypted() && self.routes.keys(hop).is_none() {
            // Never in clear: without keys, nothing.
            return Action::Drop(DropReason::NoRoute);
        }
        if let Some(limit) = self.routes.frame_limit(hop)
            && self.len > limit
        {
            return Action::TooBig {
                vni,
                hop,
                to,
                limit,
            };
        }
        if self.routes.encrypted() {
            Action::Seal { vni, hop, to }
        } else {
            Action::SendClear { vni, hop, to }
        }
    }
}

impl Iterator for Plan<'_> {
    type Item = Action;

    fn next(&mut self) -> Option<Action> {
        if std::mem::take(&mut self.deliver) {
            return Some(Action::Deliver);
        }
        if let Some(reason) = self.drop.take() {
            return Some(Action::Drop(reason));
        }
        if let Some(hop) = self.single.take() {
            return Some(self.send(hop));
        }
        // Children of the origin other than where the frame came from are
        // passed over silently: the tree reaches them some other way.
        while let Some((&hop, rest)) = self.fan_out.split_first() {
            self.fan_out = rest;
            if !self.never.contains(&hop.0) {
                return Some(self.send(hop));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::overlay::decide::routes::tests::{A, B, C, addr, line_seen_from_b};
    use crate::overlay::forwarding::NeighbourKeys;
    use crate::overlay::wire::cipher::DataCipher;
    use crate::overlay::wire::seal::PeerKeys;
    use zeroize::Zeroizing;

    fn routes(encrypted: bool, keyed: &[ShortId]) -> Routes {
        let mut table = line_seen_from_b();
        table.encrypted = encrypted;
        for &peer in keyed {
            let key = Zeroizing::new([peer.0 as u8; 32]);
            let keys = NeighbourKeys(Arc::new(PeerKeys::new(&key, &key, DataCipher::Aes256Gcm)));
            table.keys.insert(peer, keys);
        }
        Routes::compile(Arc::new(table))
    }

    fn actions(verdict: impl Into<Verdict>, routes: &Routes) -> Vec<Action> {
        plan(verdict, 100, routes).collect()
    }

    #[test]
    fn floods_go_to_every_child_once_in_clear_without_a_password() {
        let r = routes(false, &[]);
        let vni = ShortId::vni(B, ShortId::BROADCAST);
        assert_eq!(
            actions(FromBridge::Flood, &r),
            vec![
                Action::SendClear {
                    vni,
                    hop: A,
                    to: addr(A)
                },
                Action::SendClear {
                    vni,
                    hop: C,
                    to: addr(C)
                },
            ]
        );
        assert_eq!(plan(FromBridge::Flood, 100, &r).uses(), 2);
        assert!(actions(FromBridge::Local, &r).is_empty());
    }

    #[test]
    fn with_a_password_everything_is_sealed_for_its_hop_or_dropped() {
        let r = routes(true, &[A]);
        let vni = ShortId::vni(B, ShortId::BROADCAST);
        assert_eq!(
            actions(FromBridge::Flood, &r),
            vec![
                Action::Seal {
                    vni,
                    hop: A,
                    to: addr(A)
                },
                Action::Drop(DropReason::NoRoute),
            ]
        );
        let relay = FromPeer::Relay {
            vni: ShortId::vni(C, A),
            sender: C,
            hop: A,
            via: addr(A),
        };
        assert_eq!(
            actions(relay, &r),
            vec![Action::Seal {
                vni: ShortId::vni(C, A),
                hop: A,
                to: addr(A)
            }]
        );
        assert_eq!(plan(relay, 100, &r).uses(), 1);
    }

    #[test]
    fn broadcasts_from_peers_are_delivered_then_passed_on_never_back() {
        let r = routes(false, &[]);
        let from_a = FromPeer::Deliver {
            origin: A,
            sender: A,
            broadcast: true,
        };
        assert_eq!(
            actions(from_a, &r),
            vec![
                Action::Deliver,
                Action::SendClear {
                    vni: ShortId::vni(A, ShortId::BROADCAST),
                    hop: C,
                    to: addr(C)
                }
            ]
        );
        // A's tree as B sees it names C; from C it would go back: nothing.
        let via_c = FromPeer::Deliver {
            origin: A,
            sender: C,
            broadcast: true,
        };
        assert_eq!(actions(via_c, &r), vec![Action::Deliver]);
        let unicast = FromPeer::Deliver {
            origin: A,
            sender: A,
            broadcast: false,
        };
        assert_eq!(actions(unicast, &r), vec![Action::Deliver]);
        assert_eq!(plan(unicast, 100, &r).uses(), 1);
    }

    #[test]
    fn frames_over_a_paths_limit_are_too_big_for_that_hop_only() {
        let mut table = line_seen_from_b();
        table.frame_limit.insert(A, 600);
        let r = Routes::compile(Arc::new(table));
        let vni = ShortId::vni(B, ShortId::BROADCAST);
        let flood: Vec<Action> = plan(FromBridge::Flood, 601, &r).collect();
        assert_eq!(
            flood,
            vec![
                Action::TooBig {
                    vni,
                    hop: A,
                    to: addr(A),
                    limit: 600
                },
                Action::SendClear {
                    vni,
                    hop: C,
                    to: addr(C)
                },
            ]
        );
        let fits: Vec<Action> = plan(FromBridge::Flood, 600, &r).collect();
        assert!(matches!(fits[0], Action::SendClear { hop: A, .. }));
        // Without keys a hop gets nothing, big or not.
        let mut table = line_seen_from_b();
        table.encrypted = true;
        table.frame_limit.insert(A, 600);
        let r = Routes::compile(Arc::new(table));
        assert_eq!(
            plan(FromBridge::Flood, 700, &r).next(),
            Some(Action::Drop(DropReason::NoRoute))
        );
    }

    #[test]
    fn drops_are_one_action_and_relays_never_go_back_to_their_origin() {
        let r = routes(false, &[]);
        assert_eq!(
            actions(FromBridge::Drop(DropReason::Oversize), &r),
            vec![Action::Drop(DropReason::Oversize)]
        );
        let home = FromPeer::Relay {
            vni: ShortId::vni(A, C),
            sender: C,
            hop: A,
            via: addr(A),
        };
        assert_eq!(actions(home, &r), vec![Action::Drop(DropReason::NoRoute)]);
        assert_eq!(plan(home, 100, &r).uses(), 0);
        // A table naming this peer as a hop (found by the fuzzer).
        let to_me = FromPeer::Relay {
            vni: ShortId::vni(A, C),
            sender: A,
            hop: B,
            via: addr(B),
        };
        assert_eq!(actions(to_me, &r), vec![Action::Drop(DropReason::NoRoute)]);
        // Nor back to the neighbour it came from.
        let back = FromPeer::Relay {
            vni: ShortId::vni(A, ShortId(0x42)),
            sender: C,
            hop: C,
            via: addr(C),
        };
        assert_eq!(actions(back, &r), vec![Action::Drop(DropReason::NoRoute)]);
    }
}
