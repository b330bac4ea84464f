//! The `ipam_consensus` fuzz target: five peers agree on who starts the
//! allocation ring (Paxos, `weave_agent::ipam::Consensus`) over a network
//! that the input drives: which peer proposes when, which message is
//! delivered next, lost or delivered twice, which links are cut, and each
//! peer's expected count. Whatever happens, no two peers ever see two
//! different values chosen, as long as every peer expects at least as
//! many peers as there are (a smaller count lets a cut-off peer decide
//! alone: documented, as in Weave); and once the network delivers
//! everything, a proposal completes.

use std::collections::{BTreeMap, BTreeSet};

use super::Bytes;
use weave_agent::ipam::{Consensus, ConsensusMessage, Proposal};
use weave_agent::mac::Mac;
use weave_agent::peer_name::PeerName;

const PEERS: u8 = 5;
/// Messages in flight at most (a flood of duplicates is cut here).
const MAX_QUEUE: usize = 512;

const fn peer(i: u8) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 0, i]))
}

struct Network {
    peers: BTreeMap<PeerName, Consensus>,
    /// Unordered pairs that cannot reach each other.
    cut: BTreeSet<(PeerName, PeerName)>,
    queue: Vec<(PeerName, PeerName, ConsensusMessage)>,
    chosen: BTreeMap<PeerName, Proposal>,
}

impl Network {
    fn connected(&self, a: PeerName, b: PeerName) -> bool {
        a == b || !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn reachable(&self, p: PeerName) -> BTreeSet<PeerName> {
        self.peers
            .keys()
            .copied()
            .filter(|q| *q != p && self.connected(p, *q))
            .collect()
    }

    fn record(&mut self, at: PeerName, chosen: Option<Proposal>) {
        if let Some(value) = chosen {
            for (other, theirs) in &self.chosen {
                assert_eq!(
                    theirs, &value,
                    "{at} chose {value:?} but {other} chose {theirs:?}"
                );
            }
            self.chosen.insert(at, value);
        }
    }

    fn send(&mut self, from: PeerName, out: Vec<(PeerName, ConsensusMessage)>) {
        for (to, msg) in out {
            if self.queue.len() < MAX_QUEUE {
                self.queue.push((from, to, msg));
            }
        }
    }

    fn propose(&mut self, p: PeerName, ring_id: u64) {
        let reachable = self.reachable(p);
        let Some(c) = self.peers.get_mut(&p) else {
            return;
        };
        let (out, chosen) = c.propose(&reachable, ring_id);
        self.send(p, out);
        self.record(p, chosen);
    }

    fn deliver(&mut self, index: usize, keep: bool) {
        if self.queue.is_empty() {
            return;
        }
        let index = index % self.queue.len();
        let (from, to, msg) = if keep {
            self.queue[index].clone()
        } else {
            self.queue.swap_remove(index)
        };
        if !self.connected(from, to) {
            return;
        }
        let reachable = self.reachable(to);
        let Some(c) = self.peers.get_mut(&to) else {
            return;
        };
        let (out, chosen) = c.on_message(from, msg, &reachable, 0x1000 + u64::from(to.0.0[5]));
        self.send(to, out);
        self.record(to, chosen);
    }
}

/// Input: the expected count (5 to 7, each peer's own), then steps of two bytes (what,
/// argument) until the input ends; then every link heals and peer 1
/// proposes until a value is chosen.
pub fn ipam_consensus(data: &[u8]) {
    let mut input = Bytes::new(data);
    let counts = input.byte();
    let expected = |i: u8| usize::from(PEERS) + usize::from((counts >> (i % 4)) % 3);
    let mut net = Network {
        // Peer 5 is an observer when the first bit says so.
        peers: (1..=PEERS)
            .map(|i| {
                (
                    peer(i),
                    Consensus::new(peer(i), expected(i), i == PEERS && counts & 1 == 1),
                )
            })
            .collect(),
        cut: BTreeSet::new(),
        queue: Vec::new(),
        chosen: BTreeMap::new(),
    };
    let mut steps = 0u32;
    while !input.is_empty() && steps < 2000 {
        steps += 1;
        let (what, arg) = (input.byte(), input.byte());
        match what % 8 {
            0 => net.propose(peer(arg % PEERS + 1), u64::from(steps)),
            1..=3 => net.deliver(usize::from(arg), false),
            // Delivered twice.
            4 => net.deliver(usize::from(arg), true),
            // Lost.
            5 if !net.queue.is_empty() => {
                let i = usize::from(arg) % net.queue.len();
                net.queue.swap_remove(i);
            }
            6 => {
                let (a, b) = (peer(arg % PEERS + 1), peer((arg / PEERS) % PEERS + 1));
                if a != b && !net.cut.remove(&(a.min(b), a.max(b))) {
                    net.cut.insert((a.min(b), a.max(b)));
                }
            }
            _ => net.deliver(net.queue.len().saturating_sub(1), false),
        }
    }
    // Healed, everything delivered, proposals retried: someone decides.
    net.cut.clear();
    for round in 0..20u8 {
        if !net.chosen.is_empty() {
            break;
        }
        net.propose(peer(round % (PEERS - 1) + 1), 0x2000 + u64::from(round));
        while !net.queue.is_empty() {
            net.deliver(0, false);
        }
    }
    assert!(
        !net.chosen.is_empty(),
        "no value chosen once the network healed"
    );
}

pub(crate) fn consensus_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Five expected, nothing happens before healing.
        ("quiet", vec![4]),
        // Peer 1 proposes, messages delivered in order.
        (
            "one_proposer",
            vec![4, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0],
        ),
        // Two proposers interleaved, one message delivered twice, one lost.
        (
            "duel",
            vec![
                4, 0, 0, 0, 1, 1, 3, 4, 2, 5, 1, 1, 0, 7, 0, 1, 0, 1, 0, 1, 0, 0, 2, 1, 0, 1, 0,
            ],
        ),
        // A partition 1-2 | 3-4-5, both sides propose.
        (
            "partition",
            vec![
                4, 6, 2, 6, 3, 6, 4, 6, 7, 6, 8, 6, 9, 0, 0, 0, 2, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                0, 1, 0,
            ],
        ),
    ]
}
