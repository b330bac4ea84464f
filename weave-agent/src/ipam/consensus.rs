//! Which peers start the ring: single-decree Paxos among the peers that
//! wait for it, so that two groups started apart never both initialise one
//! (Weave's `--ipalloc-init consensus`). Pure: the agent delivers messages
//! and sends what the methods return.
//!
//! Every peer whose ring is not initialised is an acceptor. A peer that
//! needs addresses proposes: it asks every peer it can reach to promise a
//! ballot (phase 1), and once a quorum has promised it asks them to accept
//! a value (phase 2): the promised value with the highest ballot if any
//! promiser had accepted one, else the peers that promised (not observers)
//! and a fresh ring id. Once a quorum accepted, the value is chosen and the
//! proposer builds the ring from it ([`super::Ring::init_among`]); the
//! others adopt that ring from gossip, as any initialised ring.
//!
//! Safety is Paxos's: an acceptor never accepts a ballot lower than one it
//! promised, a proposer proposes the value of the highest accepted ballot
//! among a quorum's promises, and any two quorums share an acceptor, so at
//! most one value is ever chosen. Two quorums share an acceptor as long as
//! both proposers count them out of the same peers: the quorum is a
//! majority of the number given at launch (`consensus=N`, by default 1 +
//! the peers named, as Weave) and at least a majority of the peers the
//! proposer knows of, so that peers launched with a small N still agree
//! with every peer they can see. Acceptors keep their promises in memory:
//! a peer restarted in the middle of a round forgets them, as in Weave.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::peer_name::PeerName;

/// Most peers a proposal may name (a larger one from the wire is refused).
pub const MAX_PROPOSAL_PEERS: usize = 1024;

/// A proposal number: higher rounds win, the proposer's name breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u32,
    pub proposer: PeerName,
}

/// What the peers agree on: the peers that share the range at first (in
/// name order) and the ring's id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Proposal {
    pub peers: Vec<PeerName>,
    pub ring_id: u64,
}

/// A ballot and the value accepted under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub ballot: Ballot,
    pub proposal: Proposal,
}

/// The Paxos messages, carried inside IPAM messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum ConsensusMessage {
    /// Phase 1a: promise to accept nothing below `ballot`.
    Prepare { ballot: Ballot },
    /// Phase 1b: promised, with what this acceptor accepted before. An
    /// observer promises but does not want a share of the range.
    Promise {
        ballot: Ballot,
        accepted: Option<Accepted>,
        observer: bool,
    },
    /// Phase 2a: accept `proposal` under `ballot`.
    Accept { ballot: Ballot, proposal: Proposal },
    /// Phase 2b: accepted.
    Accepted { ballot: Ballot },
    /// Refused: this acceptor promised `promised`, a higher ballot.
    Nack { promised: Ballot },
}

impl ConsensusMessage {
    /// Whether a message from the wire is within bounds.
    pub fn is_valid(&self) -> bool {
        let fits = |p: &Proposal| p.peers.len() <= MAX_PROPOSAL_PEERS && !p.peers.is_empty();
        match self {
            Self::Promise {
                accepted: Some(a), ..
            } => fits(&a.proposal),
            Self::Accept { proposal, .. } => fits(proposal),
            _ => true,
        }
    }
}

/// Where this peer's own proposal stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Waiting for promises (with what each promiser accepted before, and
    /// whether it is an observer).
    Preparing {
        ballot: Ballot,
        promises: BTreeMap<PeerName, (Option<Accepted>, bool)>,
    },
    /// Waiting for acceptances of `proposal`.
    Accepting {
        ballot: Ballot,
        proposal: Proposal,
        accepts: BTreeSet<PeerName>,
    },
}

/// A message to send to a peer.
pub(super) type Outgoing = (PeerName, ConsensusMessage);

/// One peer's part: acceptor always, proposer when asked to.
#[derive(Clone, Debug)]
pub struct Consensus {
    me: PeerName,
    /// How many peers are expected (`consensus=N`).
    expected: usize,
    observer: bool,
    promised: Option<Ballot>,
    accepted: Option<Accepted>,
    /// The highest round seen, so that the next ballot beats it.
    highest_round: u32,
    phase: Phase,
    /// The value this peer saw chosen.
    chosen: Option<Proposal>,
}

impl Consensus {
    pub fn new(me: PeerName, expected: usize, observer: bool) -> Self {
        Self {
            me,
            expected: expected.max(1),
            observer,
            promised: None,
            accepted: None,
            highest_round: 0,
            phase: Phase::Idle,
            chosen: None,
        }
    }

    /// The number of promises (and then acceptances) a proposal needs when
    /// this peer can reach `reachable` others.
    pub fn quorum(&self, reachable: usize) -> usize {
        self.electorate(reachable) / 2 + 1
    }

    /// The peers a quorum is a majority of: those expected, or all those
    /// in sight when more.
    pub fn electorate(&self, reachable: usize) -> usize {
        self.expected.max(reachable + 1)
    }

    pub const fn expected(&self) -> usize {
        self.expected
    }

    /// Starts a new round (also to retry one that stalled), to `reachable`
    /// others; `fresh_ring_id` is the ring id to propose if nobody accepted
    /// a value yet. Returns the messages to send, and the chosen value if
    /// this peer decides alone (a quorum of one).
    pub fn propose(
        &mut self,
        reachable: &BTreeSet<PeerName>,
        fresh_ring_id: u64,
    ) -> (Vec<Outgoing>, Option<Proposal>) {
        if self.observer || self.chosen.is_some() {
            return (Vec::new(), self.chosen.clone());
        }
        self.highest_round = self.highest_round.saturating_add(1);
        let ballot = Ballot {
            round: self.highest_round,
            proposer: self.me,
        };
        self.phase = Phase::Preparing {
            ballot,
            promises: BTreeMap::new(),
        };
        let prepares = reachable
            .iter()
            .filter(|p| **p != self.me)
            .chain([&self.me])
            .map(|p| (*p, ConsensusMessage::Prepare { ballot }))
            .collect();
        self.deliver_own(prepares, reachable, fresh_ring_id)
    }

    /// A message from `from`. Returns the answers to send and the chosen
    /// value once this peer's proposal has a quorum of acceptances.
    pub fn on_message(
        &mut self,
        from: PeerName,
        msg: ConsensusMessage,
        reachable: &BTreeSet<PeerName>,
        fresh_ring_id: u64,
    ) -> (Vec<Outgoing>, Option<Proposal>) {
        let (out, chosen) = self.step(from, msg, reachable, fresh_ring_id);
        let (out, chosen_here) = self.deliver_own(out, reachable, fresh_ring_id);
        (out, chosen.or(chosen_here))
    }

    /// Handles at once what this peer sends itself (its own promise and
    /// acceptance, as an acceptor among the others); returns what goes to
    /// the others, and the value chosen meanwhile.
    fn deliver_own(
        &mut self,
        out: Vec<Outgoing>,
        reachable: &BTreeSet<PeerName>,
        fresh_ring_id: u64,
    ) -> (Vec<Outgoing>, Option<Proposal>) {
        let mut queue: VecDeque<Outgoing> = out.into();
        let (mut others, mut chosen) = (Vec::new(), None);
        while let Some((to, msg)) = queue.pop_front() {
            if to == self.me {
                let (more, c) = self.step(to, msg, reachable, fresh_ring_id);
                chosen = chosen.or(c);
                queue.extend(more);
            } else {
                others.push((to, msg));
            }
        }
        (others, chosen)
    }

    /// One message from `from` (which may be this peer itself): the
    /// answers, to anyone (this peer included), and the value chosen.
    fn step(
        &mut self,
        from: PeerName,
        msg: ConsensusMessage,
        reachable: &BTreeSet<PeerName>,
        fresh_ring_id: u64,
    ) -> (Vec<Outgoing>, Option<Proposal>) {
        let quorum = self.quorum(reachable.iter().filter(|p| **p != self.me).count());
        match msg {
            ConsensusMessage::Prepare { ballot } => {
                self.see(ballot);
                if self.promised.is_some_and(|p| p > ballot) {
                    let promised = self.promised.unwrap_or(ballot);
                    return (vec![(from, ConsensusMessage::Nack { promised })], None);
                }
                self.promised = Some(ballot);
                let answer = ConsensusMessage::Promise {
                    ballot,
                    accepted: self.accepted.clone(),
                    observer: self.observer,
                };
                (vec![(from, answer)], None)
            }
            ConsensusMessage::Promise {
                ballot,
                accepted,
                observer,
            } => {
                let Phase::Preparing {
                    ballot: ours,
                    promises,
                } = &mut self.phase
                else {
                    return (Vec::new(), None);
                };
                if *ours != ballot {
                    return (Vec::new(), None);
                }
                promises.insert(from, (accepted, observer));
                if promises.len() < quorum {
                    return (Vec::new(), None);
                }
                let ballot = *ours;
                let proposal = promises
                    .values()
                    .filter_map(|(a, _)| a.as_ref())
                    .max_by_key(|a| a.ballot)
                    .map_or_else(
                        || Proposal {
                            peers: promises
                                .iter()
                                .filter(|(_, (_, observer))| !observer)
                                .map(|(p, _)| *p)
                                .collect(),
                            ring_id: fresh_ring_id,
                        },
                        |a| a.proposal.clone(),
                    );
                let promisers: Vec<PeerName> = promises.keys().copied().collect();
                self.phase = Phase::Accepting {
                    ballot,
                    proposal: proposal.clone(),
                    accepts: BTreeSet::new(),
                };
                let out = promisers
                    .into_iter()
                    .map(|p| {
                        let proposal = proposal.clone();
                        (p, ConsensusMessage::Accept { ballot, proposal })
                    })
                    .collect();
                (out, None)
            }
            ConsensusMessage::Accept { ballot, proposal } => {
                self.see(ballot);
                if self.promised.is_some_and(|p| p > ballot) {
                    let promised = self.promised.unwrap_or(ballot);
                    return (vec![(from, ConsensusMessage::Nack { promised })], None);
                }
                self.promised = Some(ballot);
                self.accepted = Some(Accepted { ballot, proposal });
                (vec![(from, ConsensusMessage::Accepted { ballot })], None)
            }
            ConsensusMessage::Accepted { ballot } => {
                let Phase::Accepting {
                    ballot: ours,
                    proposal,
                    accepts,
                } = &mut self.phase
                else {
                    return (Vec::new(), None);
                };
                if *ours != ballot {
                    return (Vec::new(), None);
                }
                accepts.insert(from);
                if accepts.len() < quorum {
                    return (Vec::new(), None);
                }
                let chosen = proposal.clone();
                self.chosen = Some(chosen.clone());
                self.phase = Phase::Idle;
                (Vec::new(), Some(chosen))
            }
            ConsensusMessage::Nack { promised } => {
                self.see(promised);
                (Vec::new(), None)
            }
        }
    }

    fn see(&mut self, ballot: Ballot) {
        self.highest_round = self.highest_round.max(ballot.round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Mac;

    fn peer(i: u8) -> PeerName {
        PeerName(Mac([2, 0, 0, 0, 0, i]))
    }

    /// Peers `1..=n` expecting `expected`, with links between the pairs
    /// `connected` says; messages are delivered in order until none is left.
    struct Net {
        peers: BTreeMap<PeerName, Consensus>,
        connected: Box<dyn Fn(PeerName, PeerName) -> bool>,
        chosen: BTreeMap<PeerName, Proposal>,
        queue: VecDeque<(PeerName, PeerName, ConsensusMessage)>,
    }

    impl Net {
        fn new(
            n: u8,
            expected: usize,
            connected: impl Fn(PeerName, PeerName) -> bool + 'static,
        ) -> Self {
            Self {
                peers: (1..=n)
                    .map(|i| (peer(i), Consensus::new(peer(i), expected, false)))
                    .collect(),
                connected: Box::new(connected),
                chosen: BTreeMap::new(),
                queue: Default::default(),
            }
        }

        fn reachable(&self, p: PeerName) -> BTreeSet<PeerName> {
            self.peers
                .keys()
                .copied()
                .filter(|q| *q != p && (self.connected)(p, *q))
                .collect()
        }

        fn propose(&mut self, p: PeerName) {
            let reachable = self.reachable(p);
            let (out, chosen) = self
                .peers
                .get_mut(&p)
                .unwrap()
                .propose(&reachable, u64::from(p.0.0[5]));
            if let Some(c) = chosen {
                self.chosen.insert(p, c);
            }
            self.queue.extend(out.into_iter().map(|(to, m)| (p, to, m)));
        }

        /// Delivers one queued message (the first one, or the last with `lifo`).
        fn step(&mut self, lifo: bool) -> bool {
            let Some((from, to, msg)) = (if lifo {
                self.queue.pop_back()
            } else {
                self.queue.pop_front()
            }) else {
                return false;
            };
            if !(self.connected)(from, to) {
                return true;
            }
            let reachable = self.reachable(to);
            let (out, chosen) = self.peers.get_mut(&to).unwrap().on_message(
                from,
                msg,
                &reachable,
                u64::from(to.0.0[5]),
            );
            if let Some(c) = chosen {
                self.chosen.insert(to, c);
            }
            self.queue.extend(out.into_iter().map(|(t, m)| (to, t, m)));
            true
        }

        fn run(&mut self, lifo: bool) {
            while self.step(lifo) {}
        }

        fn values(&self) -> BTreeSet<Proposal> {
            self.chosen.values().cloned().collect()
        }
    }

    #[test]
    fn a_lone_peer_expecting_only_itself_decides_at_once() {
        let mut c = Consensus::new(peer(1), 1, false);
        let (out, chosen) = c.propose(&BTreeSet::new(), 7);
        assert!(out.is_empty());
        assert_eq!(
            chosen,
            Some(Proposal {
                peers: vec![peer(1)],
                ring_id: 7
            })
        );
    }

    #[test]
    fn a_lone_peer_expecting_others_never_decides() {
        let mut c = Consensus::new(peer(1), 3, false);
        for _ in 0..5 {
            let (out, chosen) = c.propose(&BTreeSet::new(), 7);
            assert!(out.is_empty());
            assert_eq!(chosen, None);
        }
    }

    #[test]
    fn a_majority_decides_the_peers_that_promised_and_a_minority_waits() {
        // Five expected; 1-2 and 3-4-5 cannot reach each other.
        let group = |p: PeerName| p.0.0[5] <= 2;
        let mut net = Net::new(5, 5, move |a, b| group(a) == group(b));
        for i in 1..=5 {
            net.propose(peer(i));
        }
        net.run(false);
        assert!(!net.chosen.contains_key(&peer(1)) && !net.chosen.contains_key(&peer(2)));
        let values = net.values();
        assert_eq!(values.len(), 1, "{values:?}");
        let value = values.into_iter().next().unwrap();
        assert_eq!(value.peers, vec![peer(3), peer(4), peer(5)]);
        // Healed: the minority's proposals end with the same value.
        net.connected = Box::new(|_, _| true);
        net.propose(peer(1));
        net.propose(peer(2));
        net.run(true);
        assert_eq!(net.values(), BTreeSet::from([value]));
    }

    #[test]
    fn duelling_proposers_with_any_delivery_order_choose_one_value() {
        for order in 0..64u32 {
            let mut net = Net::new(4, 4, |_, _| true);
            // Interleave proposals and deliveries in a pattern set by `order`.
            for i in 1..=4 {
                if order & (1 << (i - 1)) != 0 {
                    net.propose(peer(i));
                    for _ in 0..(order % 5) {
                        net.step(order & 16 != 0);
                    }
                }
            }
            for i in 1..=4 {
                net.propose(peer(i));
                net.step(order & 32 != 0);
            }
            net.run(order & 1 != 0);
            assert!(net.values().len() <= 1, "order {order}: {:?}", net.values());
            // Retries until someone decides.
            for round in 0..10u8 {
                if !net.chosen.is_empty() {
                    break;
                }
                net.propose(peer(1 + round % 4));
                net.run(false);
            }
            assert_eq!(net.values().len(), 1, "order {order}");
        }
    }

    #[test]
    fn a_small_launch_count_still_needs_a_majority_of_the_peers_in_sight() {
        let c = Consensus::new(peer(1), 1, false);
        assert_eq!(c.quorum(0), 1);
        assert_eq!(c.quorum(2), 2);
        assert_eq!(c.quorum(4), 3);
        let c = Consensus::new(peer(1), 5, false);
        assert_eq!(c.quorum(1), 3);
        assert_eq!(c.quorum(9), 6);
    }

    #[test]
    fn observers_promise_but_take_no_share_and_never_propose() {
        let mut net = Net::new(3, 3, |_, _| true);
        net.peers.insert(peer(3), Consensus::new(peer(3), 3, true));
        net.propose(peer(3));
        net.run(false);
        assert!(net.chosen.is_empty());
        net.propose(peer(1));
        net.run(false);
        let value = net.chosen[&peer(1)].clone();
        assert!(!value.peers.contains(&peer(3)), "{value:?}");
    }

    #[test]
    fn a_lower_ballot_is_refused_with_the_promised_one() {
        let mut c = Consensus::new(peer(2), 3, false);
        let high = Ballot {
            round: 5,
            proposer: peer(1),
        };
        let low = Ballot {
            round: 4,
            proposer: peer(3),
        };
        let none = BTreeSet::new();
        c.on_message(
            peer(1),
            ConsensusMessage::Prepare { ballot: high },
            &none,
            1,
        );
        let (out, _) = c.on_message(peer(3), ConsensusMessage::Prepare { ballot: low }, &none, 1);
        assert_eq!(
            out,
            vec![(peer(3), ConsensusMessage::Nack { promised: high })]
        );
        let proposal = Proposal {
            peers: vec![peer(3)],
            ring_id: 1,
        };
        let (out, _) = c.on_message(
            peer(3),
            ConsensusMessage::Accept {
                ballot: low,
                proposal,
            },
            &none,
            1,
        );
        assert_eq!(
            out,
            vec![(peer(3), ConsensusMessage::Nack { promised: high })]
        );
        // Its next own ballot beats what it has seen.
        let (out, _) = c.propose(&BTreeSet::from([peer(1)]), 1);
        let ConsensusMessage::Prepare { ballot } = &out[0].1 else {
            panic!("{out:?}")
        };
        assert!(*ballot > high);
    }

    #[test]
    fn oversized_proposals_from_the_wire_are_invalid() {
        let ballot = Ballot {
            round: 1,
            proposer: peer(1),
        };
        let big = Proposal {
            peers: vec![peer(1); MAX_PROPOSAL_PEERS + 1],
            ring_id: 1,
        };
        assert!(
            !ConsensusMessage::Accept {
                ballot,
                proposal: big
            }
            .is_valid()
        );
        let empty = Proposal {
            peers: vec![],
            ring_id: 1,
        };
        assert!(
            !ConsensusMessage::Accept {
                ballot,
                proposal: empty
            }
            .is_valid()
        );
        assert!(ConsensusMessage::Prepare { ballot }.is_valid());
    }
}
