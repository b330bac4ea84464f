//! Randomised simulations of 3 to 5 peers sharing one ring: random
//! allocations, releases, claims, space requests, free reports, `weave
//! reset`s and `weave rmpeer`s, with rings gossiped in random order, late,
//! and repeated. Seeded, so a failure names the seed that reproduces it.
//!
//! After every step: every ring is valid, no address is held by two peers, no
//! peer holds an address outside what it believes it owns, and no two live
//! peers believe they own the same address. At the end: gossip converges to
//! one ring, and merging every ring state that ever existed, in any order and
//! grouping, with repetitions, gives that same ring.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

use super::{AddrRange, Ring, Space, SpaceError};
use crate::mac::Mac;
use crate::peer_name::PeerName;

const RANGES: [&str; 6] = [
    "10.32.0.0/12",
    "10.9.0.0/24",
    "10.9.0.0/27",
    "10.9.0.0/29",
    "10.9.0.0/30",
    "10.9.0.4/31",
];

fn name(i: usize) -> PeerName {
    PeerName(Mac([2, 0, 0, 0, 1, i as u8]))
}

struct Peer {
    name: PeerName,
    ring: Ring,
    space: Space,
    alive: bool,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    range: Ipv4Net,
    subnets: Vec<Ipv4Net>,
    peers: Vec<Peer>,
    /// Every state of every ring, for late, reordered and repeated delivery.
    history: Vec<Ring>,
    /// Which peer holds each address handed out anywhere.
    holders: BTreeMap<Ipv4Addr, usize>,
    stats: Stats,
}

/// What a run did, so that a test can tell it was not vacuous.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    allocations: usize,
    donations: usize,
    rmpeers: usize,
    resets: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, rhs: Self) {
        self.allocations += rhs.allocations;
        self.donations += rhs.donations;
        self.rmpeers += rhs.rmpeers;
        self.resets += rhs.resets;
    }
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let range: Ipv4Net = RANGES[rng.random_range(0..RANGES.len())].parse().unwrap();
        let mut subnets = vec![range];
        for _ in 0..3 {
            let prefix = rng.random_range(range.prefix_len()..=(range.prefix_len() + 10).min(32));
            let size = 1u64 << (32 - prefix);
            let count = u64::from(AddrRange::of_net(range).unwrap().len()) / size;
            let start = u64::from(u32::from(range.network())) + rng.random_range(0..count) * size;
            subnets.push(Ipv4Net::new(Ipv4Addr::from(start as u32), prefix).unwrap());
        }
        let n = rng.random_range(3..=5);
        let peers = (0..n)
            .map(|i| Peer {
                name: name(i),
                ring: if i == 0 {
                    Ring::init_with_id(range, name(i), seed ^ 0x5eed).unwrap()
                } else {
                    Ring::new(range).unwrap()
                },
                space: Space::new(),
                alive: true,
            })
            .collect();
        let mut sim = Self {
            seed,
            rng,
            range,
            subnets,
            peers,
            history: Vec::new(),
            holders: BTreeMap::new(),
            stats: Stats::default(),
        };
        sim.record(0);
        sim
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].alive)
            .collect()
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[self.rng.random_range(0..from.len())]
    }

    fn record(&mut self, i: usize) {
        if self.peers[i].ring.is_initialised() {
            self.history.push(self.peers[i].ring.clone());
        }
    }

    /// Peer `to` merges `ring`: on a valid history, never an error nor a
    /// refusal.
    fn deliver(&mut self, ring: &Ring, to: usize) {
        let seed = self.seed;
        let p = &mut self.peers[to];
        let out = p
            .ring
            .merge(ring, p.name, &p.space)
            .unwrap_or_else(|e| panic!("seed {seed}: merge into peer {to}: {e}"));
        assert!(
            out.refused.is_empty(),
            "seed {seed}: peer {to} refused {:?}",
            out.refused
        );
        if out.changed {
            self.record(to);
        }
    }

    fn step(&mut self) {
        let alive = self.alive();
        let p = self.pick(&alive);
        match self.rng.random_range(0..100) {
            0..40 => {
                // Gossip: a peer's current ring, or any older state.
                let ring = if self.rng.random_bool(0.3) && !self.history.is_empty() {
                    self.history[self.rng.random_range(0..self.history.len())].clone()
                } else {
                    let all: Vec<usize> = (0..self.peers.len()).collect();
                    let src = self.pick(&all);
                    self.peers[src].ring.clone()
                };
                for _ in 0..self.rng.random_range(1..=2) {
                    self.deliver(&ring, p);
                }
            }
            40..70 => self.allocate(p),
            70..75 => {
                let all = AddrRange::of_net(self.range).unwrap();
                let addr = Ipv4Addr::from(self.rng.random_range(all.start..all.end));
                let subnet = self.subnets[self.rng.random_range(0..self.subnets.len())];
                let net = Ipv4Net::new(addr, subnet.prefix_len()).unwrap();
                let peer = &mut self.peers[p];
                if peer.space.claim(&peer.ring, peer.name, net).is_ok() {
                    self.hold(addr, p);
                }
            }
            75..88 => {
                let used: Vec<Ipv4Addr> = self.peers[p].space.iter().collect();
                if !used.is_empty() {
                    let addr = used[self.rng.random_range(0..used.len())];
                    assert!(self.peers[p].space.release(addr));
                    assert_eq!(self.holders.remove(&addr), Some(p));
                }
            }
            88..95 => {
                let peer = &mut self.peers[p];
                if peer.ring.is_initialised() && peer.ring.report_free(peer.name, &peer.space) {
                    self.record(p);
                }
            }
            95..98 if alive.len() > 2 => self.rmpeer(p),
            98..100 if alive.len() > 2 => self.reset(p),
            _ => {}
        }
    }

    fn hold(&mut self, addr: Ipv4Addr, p: usize) {
        self.stats.allocations += 1;
        if let Some(other) = self.holders.insert(addr, p) {
            panic!(
                "seed {}: {addr} handed out by peer {p} and peer {other}",
                self.seed
            );
        }
    }

    /// Allocates in a random subnet; out of space, asks the best donor, and
    /// (most of the time at once) merges its answer and tries again.
    fn allocate(&mut self, p: usize) {
        let subnet = self.subnets[self.rng.random_range(0..self.subnets.len())];
        let peer = &mut self.peers[p];
        match peer.space.allocate(&peer.ring, peer.name, subnet) {
            Ok(net) => self.hold(net.addr(), p),
            Err(SpaceError::NoSpace(_)) => {
                let me = peer.name;
                let donors = peer.ring.donors(me, subnet);
                let Some(d) = donors
                    .iter()
                    .filter_map(|n| self.peers.iter().position(|q| q.name == *n))
                    .find(|&d| self.peers[d].alive)
                else {
                    return;
                };
                let donor = &mut self.peers[d];
                if donor
                    .ring
                    .donate(donor.name, me, subnet, &donor.space)
                    .is_none()
                {
                    return;
                }
                self.stats.donations += 1;
                self.record(d);
                if self.rng.random_bool(0.8) {
                    let answer = self.peers[d].ring.clone();
                    self.deliver(&answer, p);
                    let peer = &mut self.peers[p];
                    if let Ok(net) = peer.space.allocate(&peer.ring, peer.name, subnet) {
                        self.hold(net.addr(), p);
                    }
                }
            }
            Err(SpaceError::NotInitialised) => {}
            Err(e) => panic!("seed {}: allocate in {subnet}: {e}", self.seed),
        }
    }

    /// Peer `dead` dies (its containers with it) once everyone has heard it;
    /// another peer `rmpeer`s it.
    fn rmpeer(&mut self, dead: usize) {
        self.converge();
        self.stats.rmpeers += 1;
        self.die(dead);
        let alive = self.alive();
        let by = self.pick(&alive);
        let dead_name = self.peers[dead].name;
        let peer = &mut self.peers[by];
        let taken = peer.ring.transfer(dead_name, peer.name);
        if !taken.is_empty() {
            self.record(by);
        }
    }

    /// `weave reset` on `p`: its containers are gone, it hands its space to
    /// another live peer and tells it.
    fn reset(&mut self, p: usize) {
        let heirs: Vec<usize> = self.alive().into_iter().filter(|&q| q != p).collect();
        let heir = self.pick(&heirs);
        self.stats.resets += 1;
        self.die(p);
        let heir_name = self.peers[heir].name;
        let peer = &mut self.peers[p];
        if !peer.ring.leave(peer.name, heir_name).is_empty() {
            self.record(p);
        }
        let last = self.peers[p].ring.clone();
        self.deliver(&last, heir);
    }

    fn die(&mut self, p: usize) {
        self.peers[p].alive = false;
        for addr in std::mem::take(&mut self.peers[p].space).iter() {
            assert_eq!(self.holders.remove(&addr), Some(p));
        }
    }

    /// Gossip until nothing changes: every peer, the dead included (their
    /// last word), to every live one.
    fn converge(&mut self) {
        for round in 0.. {
            assert!(round < 20, "seed {}: gossip does not converge", self.seed);
            let before: Vec<Ring> = self.peers.iter().map(|p| p.ring.clone()).collect();
            let mut order: Vec<usize> = (0..self.peers.len()).collect();
            order.shuffle(&mut self.rng);
            for &src in &order {
                for dst in self.alive() {
                    let ring = self.peers[src].ring.clone();
                    self.deliver(&ring, dst);
                }
            }
            if self.peers.iter().map(|p| &p.ring).eq(before.iter()) {
                break;
            }
        }
    }

    fn check(&self) {
        let seed = self.seed;
        let size = AddrRange::of_net(self.range).unwrap().len();
        for (i, p) in self.peers.iter().enumerate() {
            p.ring
                .validate()
                .unwrap_or_else(|e| panic!("seed {seed}: peer {i}: {e}"));
            if p.ring.is_initialised() {
                // The ring partitions the range.
                let total: u64 = p.ring.shares().iter().map(|s| u64::from(s.addresses)).sum();
                assert_eq!(total, u64::from(size), "seed {seed}: peer {i}");
            }
            if p.alive {
                assert!(
                    p.space.not_owned(&p.ring, p.name).is_empty(),
                    "seed {seed}: peer {i} holds addresses it does not own"
                );
            } else {
                assert!(p.space.is_empty());
            }
        }
        let held: usize = self.peers.iter().map(|p| p.space.len()).sum();
        assert_eq!(held, self.holders.len(), "seed {seed}");
        // What each live peer believes it owns never overlaps another's belief.
        let alive = self.alive();
        for &a in &alive {
            for &b in alive.iter().filter(|&&b| b > a) {
                let (pa, pb) = (&self.peers[a], &self.peers[b]);
                for ra in pa.ring.owned_ranges(pa.name) {
                    for rb in pb.ring.owned_ranges(pb.name) {
                        assert!(
                            ra.intersect(&rb).is_none(),
                            "seed {seed}: peers {a} and {b} both own {ra} / {rb}"
                        );
                    }
                }
            }
        }
    }
}

/// Merges `rings` in order into a fresh ring, as an observer with nothing.
fn fold(range: Ipv4Net, rings: &[Ring]) -> Ring {
    let observer = name(200);
    let mut out = Ring::new(range).unwrap();
    for r in rings {
        out.merge(r, observer, &Space::new()).unwrap();
    }
    out
}

fn simulate(seed: u64, steps: usize) -> Stats {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
        sim.check();
    }
    sim.converge();
    sim.check();
    let alive = sim.alive();
    let converged = sim.peers[alive[0]].ring.clone();
    for &i in &alive {
        assert_eq!(
            sim.peers[i].ring, converged,
            "seed {seed}: peer {i} differs"
        );
    }

    // Order, grouping and repetition of merges do not matter.
    let history = sim.history.clone();
    for _ in 0..3 {
        let mut shuffled = history.clone();
        shuffled.shuffle(&mut sim.rng);
        for _ in 0..sim.rng.random_range(0..10) {
            let again = shuffled[sim.rng.random_range(0..shuffled.len())].clone();
            let at = sim.rng.random_range(0..=shuffled.len());
            shuffled.insert(at, again);
        }
        assert_eq!(fold(sim.range, &shuffled), converged, "seed {seed}: order");
        let mut groups = Vec::new();
        let mut rest = &*shuffled;
        while !rest.is_empty() {
            let n = sim.rng.random_range(1..=rest.len());
            groups.push(fold(sim.range, &rest[..n]));
            rest = &rest[n..];
        }
        groups.shuffle(&mut sim.rng);
        assert_eq!(fold(sim.range, &groups), converged, "seed {seed}: grouping");
    }
    sim.stats
}

#[test]
fn random_peers_never_hand_out_an_address_twice_and_converge() {
    let mut stats = Stats::default();
    for seed in 0..150 {
        stats += simulate(seed, 250);
    }
    // Not vacuous: every kind of event happened, often.
    assert!(
        stats.allocations > 5000
            && stats.donations > 500
            && stats.rmpeers > 50
            && stats.resets > 50,
        "{stats:?}"
    );
}

/// The default range with many peers asking for space over and over: the
/// ring fragments, and stays correct.
#[test]
fn a_busy_default_range_stays_consistent() {
    for seed in 1000..1010 {
        let mut sim = Sim::new(seed);
        sim.range = "10.32.0.0/12".parse().unwrap();
        let owner = sim.peers[0].name;
        sim.peers[0].ring = Ring::init_with_id(sim.range, owner, seed).unwrap();
        for p in sim.peers.iter_mut().skip(1) {
            p.ring = Ring::new(sim.range).unwrap();
        }
        sim.subnets = [
            "10.32.0.0/12",
            "10.40.0.0/24",
            "10.44.1.0/26",
            "10.33.0.0/28",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        sim.history = vec![sim.peers[0].ring.clone()];
        for _ in 0..600 {
            sim.step();
        }
        sim.check();
        sim.converge();
        sim.check();
        let entries = sim.peers[sim.alive()[0]].ring.entries().len();
        assert!(entries > 8, "seed {seed}: only {entries} entries");
    }
}

/// Arbitrary rings of one identity, valid but not from any valid history
/// (equal versions with different owners or free counts included), as seen
/// by an observer that owns nothing: the merge is a plain join, so order,
/// grouping and repetition do not matter.
#[test]
fn merge_is_a_join_even_on_arbitrary_rings() {
    let range: Ipv4Net = "10.9.0.0/24".parse().unwrap();
    let base = u32::from(range.network());
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let rings: Vec<Ring> = (0..rng.random_range(1..8))
            .map(|_| {
                let mut tokens: Vec<u32> = (0..rng.random_range(0..6))
                    .map(|_| base + rng.random_range(1..16) * 16)
                    .collect();
                tokens.push(base);
                tokens.sort_unstable();
                tokens.dedup();
                let entries: Vec<super::Entry> = tokens
                    .into_iter()
                    .map(|token| super::Entry {
                        token,
                        peer: name(rng.random_range(0..3)),
                        version: rng.random_range(0..3),
                        free: rng.random_range(0..2),
                    })
                    .collect();
                let json = serde_json::json!({
                    "range": range,
                    "ring_id": 1,
                    "entries": entries,
                });
                let ring: Ring = serde_json::from_value(json).unwrap();
                ring.validate().unwrap();
                ring
            })
            .collect();
        let reference = fold(range, &rings);
        assert_eq!(
            fold(range, &[reference.clone(), reference.clone()]),
            reference
        );
        for _ in 0..5 {
            let mut shuffled = rings.clone();
            shuffled.shuffle(&mut rng);
            shuffled.push(shuffled[rng.random_range(0..shuffled.len())].clone());
            assert_eq!(fold(range, &shuffled), reference);
            let split = rng.random_range(0..=shuffled.len());
            let (a, b) = shuffled.split_at(split);
            assert_eq!(fold(range, &[fold(range, b), fold(range, a)]), reference);
        }
    }
}
