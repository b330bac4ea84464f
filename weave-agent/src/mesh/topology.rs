//! What every peer knows about every peer: who it is and whom it is
//! connected to. A state-based CRDT: each peer owns its own entry and bumps
//! its version on every change; [`Topology::merge`] keeps, per peer, the entry
//! with the larger `(version, uid)`, so merging is idempotent, commutative and
//! associative and gossip converges whatever the order of delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mesh::protocol::check_nickname;
use crate::overlay::ShortId;
use crate::peer_name::PeerName;

/// Most peers a topology holds; entries for more are rejected.
pub const MAX_PEERS: usize = 1024;
/// Most connections one peer's entry may list.
pub const MAX_CONNECTIONS_PER_PEER: usize = 256;
/// How far ahead of our clock a version may be. Versions start at the clock
/// in ms and grow by one per change, so a legitimate one is never far ahead;
/// without a bound, an entry at `u64::MAX` could never be outbid, and anyone
/// could claim a name (ours included) for good.
pub const MAX_VERSION_AHEAD_MS: u64 = 1 << 40;

/// One connection as its owner describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnectionSummary {
    pub peer: PeerName,
    /// The remote's listen address as the owner sees it: its IP on the
    /// connection and the port from its hello. Others may dial it.
    pub address: SocketAddr,
    /// Whether the owner dialled it.
    pub outbound: bool,
    pub established: bool,
}

/// One peer's entry, owned (and only changed) by that peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    pub version: u64,
    /// The id the data plane knows this peer by (12 bits of the VNI),
    /// chosen by the peer: first `ShortId::of(name)`, another one when a
    /// smaller name turns out to have the same (as Weave's peers did), so
    /// that two peers never stay indistinguishable on the wire.
    pub short_id: ShortId,
    pub connections: Vec<ConnectionSummary>,
}

impl PeerInfo {
    pub fn new(name: PeerName, nickname: String, uid: u64, version: u64) -> Self {
        Self {
            name,
            nickname,
            uid,
            version,
            short_id: ShortId::of(&name),
            connections: Vec::new(),
        }
    }

    /// Whether this entry lists an established connection to `peer`.
    pub fn established_with(&self, peer: &PeerName) -> bool {
        self.connections
            .iter()
            .any(|c| c.established && c.peer == *peer)
    }

    /// Whether this entry wins over `other` (same peer) in a merge: larger
    /// `(version, uid)`, then the whole entry, so that two entries never tie
    /// and the merge stays commutative even for a peer that misbehaves.
    pub fn supersedes(&self, other: &Self) -> bool {
        (self.version, self.uid, self) > (other.version, other.uid, other)
    }

    /// Checks what a peer cannot legitimately send.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.version > now_ms().saturating_add(MAX_VERSION_AHEAD_MS) {
            return Err(Rejection::VersionFromTheFuture(self.version));
        }
        if self.short_id >= ShortId::BROADCAST {
            return Err(Rejection::BadShortId(self.short_id));
        }
        check_nickname(&self.nickname).map_err(Rejection::BadNickname)?;
        if self.connections.len() > MAX_CONNECTIONS_PER_PEER {
            return Err(Rejection::TooManyConnections(self.connections.len()));
        }
        let mut seen = BTreeSet::new();
        for c in &self.connections {
            if c.peer == self.name {
                return Err(Rejection::ConnectionToItself);
            }
            if !seen.insert(c.peer) {
                return Err(Rejection::DuplicateConnection(c.peer));
            }
        }
        Ok(())
    }
}

/// A set of entries on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyUpdate {
    pub peers: Vec<PeerInfo>,
}

/// Which entries a peer holds, without their connections: per peer, the
/// `(version, uid)` that orders its entries. Two peers that meet exchange
/// digests and then only the entries the other lacks or holds older
/// ([`Topology::newer_than`]), instead of their whole topologies: at a
/// hundred peers a whole topology is about 150 KB and a digest 7 KB, and a
/// peer joining a mesh meets every peer in it within seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyDigest {
    pub peers: Vec<DigestEntry>,
}

/// One entry of a [`TopologyDigest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    pub name: PeerName,
    pub version: u64,
    pub uid: u64,
}

/// Why an entry was not merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("it describes us differently from how we do")]
    OurName,
    #[error("its short id {0} is the broadcast id or beyond")]
    BadShortId(ShortId),
    #[error("{0}")]
    BadNickname(String),
    #[error("it lists {0} connections (limit {MAX_CONNECTIONS_PER_PEER})")]
    TooManyConnections(usize),
    #[error("it lists a connection to itself")]
    ConnectionToItself,
    #[error("it lists two connections to {0}")]
    DuplicateConnection(PeerName),
    #[error("the topology is full ({MAX_PEERS} peers)")]
    Full,
    #[error("its version {0} is implausibly far ahead of our clock")]
    VersionFromTheFuture(u64),
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Peers whose entry was added or replaced (ours when its version was
    /// raised over a newer one claiming our name).
    pub changed: BTreeSet<PeerName>,
    pub rejected: Vec<(PeerName, Rejection)>,
}

impl MergeOutcome {
    pub fn is_changed(&self) -> bool {
        !self.changed.is_empty()
    }
}

/// Every peer known to us, ourselves included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    me: PeerName,
    peers: BTreeMap<PeerName, PeerInfo>,
}

impl Topology {
    pub fn new(ours: PeerInfo) -> Self {
        let me = ours.name;
        Self {
            me,
            peers: BTreeMap::from([(me, ours)]),
        }
    }

    pub const fn me(&self) -> PeerName {
        self.me
    }

    pub fn ours(&self) -> &PeerInfo {
        &self.peers[&self.me]
    }

    pub fn get(&self, name: &PeerName) -> Option<&PeerInfo> {
        self.peers.get(name)
    }

    /// In name order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// What we hold, for a peer we just met (ours included).
    pub fn digest(&self) -> TopologyDigest {
        TopologyDigest {
            peers: self
                .peers
                .values()
                .map(|p| DigestEntry {
                    name: p.name,
                    version: p.version,
                    uid: p.uid,
                })
                .collect(),
        }
    }

    /// Our entries that the holder of `digest` lacks or holds with a
    /// smaller `(version, uid)`. Two entries with the same `(version, uid)`
    /// and different content (only a misbehaving peer makes them) are not
    /// told apart here; the periodic whole-topology repair settles them.
    pub fn newer_than(&self, digest: &TopologyDigest) -> Vec<PeerInfo> {
        let mut theirs: BTreeMap<PeerName, (u64, u64)> = BTreeMap::new();
        for e in &digest.peers {
            let held = theirs.entry(e.name).or_insert((e.version, e.uid));
            *held = (*held).max((e.version, e.uid));
        }
        self.peers
            .values()
            .filter(|p| {
                theirs
                    .get(&p.name)
                    .is_none_or(|&held| held < (p.version, p.uid))
            })
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Replaces our own connections; bumps our version when they changed, to
    /// at least `now_ms` so that our entries outrank those of a previous run.
    /// Returns whether anything changed.
    pub fn set_our_connections(
        &mut self,
        mut connections: Vec<ConnectionSummary>,
        now_ms: u64,
    ) -> bool {
        connections.sort();
        connections.truncate(MAX_CONNECTIONS_PER_PEER);
        let ours = self
            .peers
            .get_mut(&self.me)
            .expect("our own entry is never removed");
        if ours.connections == connections {
            return false;
        }
        ours.connections = connections;
        ours.version = ours.version.saturating_add(1).max(now_ms);
        true
    }

    /// The short id `name` publishes, if we know its entry.
    pub fn short_id(&self, name: &PeerName) -> Option<ShortId> {
        self.peers.get(name).map(|p| p.short_id)
    }

    /// The smaller name that publishes our short id, if any: the smaller
    /// keeps an id two peers share (routes leave the other out), so we are
    /// the one to choose another.
    pub fn our_short_id_taken_by(&self) -> Option<PeerName> {
        let ours = self.ours().short_id;
        self.peers
            .range(..self.me)
            .find(|(_, p)| p.short_id == ours)
            .map(|(n, _)| *n)
    }

    /// Chooses for us a short id that no peer we know publishes, at random
    /// among those free (so that two peers leaving the same id do not meet
    /// again), and bumps our version like a change of connections. Returns
    /// the new id.
    pub fn choose_our_short_id(&mut self, rng: &mut impl rand::Rng, now_ms: u64) -> ShortId {
        let taken: BTreeSet<ShortId> = self.peers.values().map(|p| p.short_id).collect();
        let free: Vec<ShortId> = (0..ShortId::BROADCAST.0)
            .map(ShortId)
            .filter(|id| !taken.contains(id))
            .collect();
        let ours = self
            .peers
            .get_mut(&self.me)
            .expect("our own entry is never removed");
        // MAX_PEERS is far below the 4095 ids, so one is always free.
        if let Some(&id) = free.get(rng.random_range(0..free.len().max(1))) {
            ours.short_id = id;
            ours.version = ours.version.saturating_add(1).max(now_ms);
        }
        ours.short_id
    }

    /// Merges entries received from a peer.
    pub fn merge(&mut self, update: &TopologyUpdate) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        for entry in &update.peers {
            // Before anything else, for entries with our name too: one we
            // could not outbid must not make us try.
            if let Err(why) = entry.validate() {
                out.rejected.push((entry.name, why));
                continue;
            }
            if entry.name == self.me {
                self.merge_ours(entry, &mut out);
                continue;
            }
            let full = self.peers.len() >= MAX_PEERS;
            match self.peers.get_mut(&entry.name) {
                Some(known) => {
                    if entry.supersedes(known) {
                        *known = entry.clone();
                        out.changed.insert(entry.name);
                    }
                }
                None if full => out.rejected.push((entry.name, Rejection::Full)),
                None => {
                    self.peers.insert(entry.name, entry.clone());
                    out.changed.insert(entry.name);
                }
            }
        }
        out
    }

    /// Nobody else may describe us. An entry with our name from a previous
    /// run (older version) is stale and dropped; one that would win over ours
    /// (a clock gone backwards, or an impostor) makes us raise our version
    /// past it, so that ours wins everywhere once gossiped.
    fn merge_ours(&mut self, entry: &PeerInfo, out: &mut MergeOutcome) {
        let ours = self
            .peers
            .get_mut(&self.me)
            .expect("our own entry is never removed");
        if entry == ours {
            return;
        }
        if entry.supersedes(ours) {
            ours.version = entry.version.saturating_add(1).max(ours.version);
            out.changed.insert(self.me);
        }
        out.rejected.push((self.me, Rejection::OurName));
    }

    /// Drops the peers not in `keep` (those unreachable from us); never us.
    /// Returns the names dropped.
    pub fn retain(&mut self, keep: &BTreeSet<PeerName>) -> Vec<PeerName> {
        let me = self.me;
        let gone: Vec<PeerName> = self
            .peers
            .keys()
            .filter(|n| **n != me && !keep.contains(n))
            .copied()
            .collect();
        for n in &gone {
            self.peers.remove(n);
        }
        gone
    }

    /// All our entries, as one update.
    pub fn to_update(&self) -> TopologyUpdate {
        TopologyUpdate {
            peers: self.peers.values().cloned().collect(),
        }
    }
}

/// Milliseconds since the Unix epoch: the first version of a run.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom as _;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    fn name(i: u8) -> PeerName {
        PeerName(crate::mac::Mac([2, 0, 0, 0, 0, i]))
    }

    fn entry(i: u8, version: u64, uid: u64, links: &[u8]) -> PeerInfo {
        let mut e = PeerInfo::new(name(i), format!("h{i}"), uid, version);
        e.connections = links
            .iter()
            .map(|&j| ConnectionSummary {
                peer: name(j),
                address: SocketAddr::from(([10, 0, 0, j], 6783)),
                outbound: i < j,
                established: true,
            })
            .collect();
        e
    }

    fn update(entries: &[PeerInfo]) -> TopologyUpdate {
        TopologyUpdate {
            peers: entries.to_vec(),
        }
    }

    #[test]
    fn a_digest_exchange_leaves_both_sides_holding_the_newest_entries() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            // Each side holds a random version of some of peers 1..=8.
            let mut sides = [
                Topology::new(entry(100, 1, 1, &[])),
                Topology::new(entry(101, 1, 1, &[])),
            ];
            for side in &mut sides {
                let mut entries = Vec::new();
                for i in 1..=8 {
                    if rng.random_bool(0.7) {
                        let (version, uid) = (rng.random_range(1..4), rng.random_range(1..3));
                        entries.push(entry(i, version, uid, &[i % 8 + 1]));
                    }
                }
                side.merge(&update(&entries));
            }
            let [a, b] = &mut sides;
            let to_b = a.newer_than(&b.digest());
            let to_a = b.newer_than(&a.digest());
            // Only what the other lacks or holds older travels.
            for sent in &to_b {
                assert!(
                    b.get(&sent.name)
                        .is_none_or(|held| (held.version, held.uid) < (sent.version, sent.uid))
                );
            }
            a.merge(&update(&to_a));
            b.merge(&update(&to_b));
            let held = |t: &Topology| -> Vec<(PeerName, u64, u64)> {
                t.peers().map(|p| (p.name, p.version, p.uid)).collect()
            };
            assert_eq!(held(a), held(b));
            assert!(a.newer_than(&b.digest()).is_empty() && b.newer_than(&a.digest()).is_empty());
        }
    }

    #[test]
    fn a_digest_naming_a_peer_twice_counts_its_newest_entry() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        t.merge(&update(&[entry(2, 5, 1, &[])]));
        let said = |version| DigestEntry {
            name: name(2),
            version,
            uid: 1,
        };
        let ours = DigestEntry {
            name: name(1),
            version: 1,
            uid: 1,
        };
        let digest = TopologyDigest {
            peers: vec![ours, said(9), said(3)],
        };
        assert!(t.newer_than(&digest).is_empty());
        let digest = TopologyDigest {
            peers: vec![ours, said(3), said(4)],
        };
        assert_eq!(t.newer_than(&digest), vec![entry(2, 5, 1, &[])]);
    }

    #[test]
    fn newer_versions_win_and_merging_again_changes_nothing() {
        let mut t = Topology::new(entry(1, 100, 1, &[]));
        let out = t.merge(&update(&[entry(2, 5, 1, &[1]), entry(3, 5, 1, &[])]));
        assert_eq!(out.changed, BTreeSet::from([name(2), name(3)]));
        let again = t.merge(&update(&[entry(2, 5, 1, &[1]), entry(3, 5, 1, &[])]));
        assert!(!again.is_changed());

        assert!(!t.merge(&update(&[entry(2, 4, 9, &[])])).is_changed());
        assert!(t.merge(&update(&[entry(2, 6, 0, &[])])).is_changed());
        assert_eq!(t.get(&name(2)).unwrap().version, 6);
        // Same version: the larger uid (a restarted peer) wins.
        assert!(t.merge(&update(&[entry(2, 6, 1, &[3])])).is_changed());
        assert_eq!(t.get(&name(2)).unwrap().connections.len(), 1);
    }

    #[test]
    fn entries_for_our_name_are_refused_and_a_newer_one_raises_our_version() {
        let ours = entry(1, 100, 1, &[]);
        let mut t = Topology::new(ours.clone());
        let out = t.merge(&update(&[entry(1, 50, 7, &[2])]));
        assert!(!out.is_changed());
        assert_eq!(out.rejected, vec![(name(1), Rejection::OurName)]);
        assert_eq!(t.ours(), &ours);

        let out = t.merge(&update(&[entry(1, 500, 7, &[2])]));
        assert_eq!(out.changed, BTreeSet::from([name(1)]));
        assert_eq!(t.ours().version, 501);
        assert_eq!(t.ours().uid, 1);
        assert!(t.ours().connections.is_empty());

        assert!(!t.merge(&update(&[t.ours().clone()])).is_changed());
        // An entry we could never outbid is refused, and changes nothing
        // however often it comes (found by the gossip_merge fuzz target).
        for _ in 0..2 {
            let out = t.merge(&update(&[entry(1, u64::MAX, 7, &[])]));
            assert!(!out.is_changed());
            assert_eq!(
                out.rejected,
                vec![(name(1), Rejection::VersionFromTheFuture(u64::MAX))]
            );
            assert_eq!(t.ours().version, 501);
        }
        let out = t.merge(&update(&[entry(2, u64::MAX, 7, &[])]));
        assert!(!out.is_changed(), "nor for another peer's name");
    }

    #[test]
    fn invalid_entries_are_rejected() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let mut bad_id = entry(2, 1, 1, &[]);
        bad_id.short_id = ShortId::BROADCAST;
        let mut bad_nick = entry(3, 1, 1, &[]);
        bad_nick.nickname = "\x1b[31m".into();
        let self_link = entry(4, 1, 1, &[4]);
        let dup_link = entry(5, 1, 1, &[1, 1]);
        let mut many = entry(6, 1, 1, &[]);
        many.connections = (0..=MAX_CONNECTIONS_PER_PEER)
            .map(|i| ConnectionSummary {
                peer: PeerName(crate::mac::Mac([2, 1, 0, 0, (i >> 8) as u8, i as u8])),
                address: "10.0.0.1:1".parse().unwrap(),
                outbound: true,
                established: true,
            })
            .collect();
        let out = t.merge(&update(&[bad_id, bad_nick, self_link, dup_link, many]));
        assert!(!out.is_changed());
        assert_eq!(out.rejected.len(), 5);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_larger_name_gives_up_a_shared_short_id_for_a_free_one() {
        let mut t = Topology::new(entry(5, 1, 1, &[]));
        let ours = t.ours().short_id;
        let mut larger = entry(9, 1, 1, &[]);
        larger.short_id = ours;
        t.merge(&update(&[larger]));
        assert_eq!(
            t.our_short_id_taken_by(),
            None,
            "the larger name gives it up"
        );

        let mut smaller = entry(2, 1, 1, &[]);
        smaller.short_id = ours;
        t.merge(&update(&[smaller]));
        assert_eq!(t.our_short_id_taken_by(), Some(name(2)));
        let version = t.ours().version;
        let chosen = t.choose_our_short_id(&mut StdRng::seed_from_u64(7), 0);
        assert_eq!(t.ours().short_id, chosen);
        assert!(chosen < ShortId::BROADCAST);
        assert!(t.peers().filter(|p| p.short_id == chosen).count() == 1);
        assert!(t.ours().version > version, "others must take the new entry");
        assert_eq!(t.our_short_id_taken_by(), None);
        assert!(t.ours().validate().is_ok());
    }

    #[test]
    fn the_topology_is_bounded() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        let flood: Vec<PeerInfo> = (0..MAX_PEERS + 10)
            .map(|i| {
                PeerInfo::new(
                    PeerName(crate::mac::Mac([2, 9, 0, 0, (i >> 8) as u8, i as u8])),
                    String::new(),
                    1,
                    1,
                )
            })
            .collect();
        let out = t.merge(&update(&flood));
        assert_eq!(t.len(), MAX_PEERS);
        assert_eq!(out.rejected.len(), 11);
        assert!(out.rejected.iter().all(|(_, r)| *r == Rejection::Full));
    }

    #[test]
    fn our_connections_bump_the_version_to_at_least_now() {
        let mut t = Topology::new(entry(1, 100, 1, &[]));
        let link = entry(1, 0, 0, &[2]).connections;
        assert!(t.set_our_connections(link.clone(), 50));
        assert_eq!(t.ours().version, 101);
        assert!(!t.set_our_connections(link, 5000));
        assert!(t.set_our_connections(vec![], 5000));
        assert_eq!(t.ours().version, 5000);
    }

    #[test]
    fn retain_drops_others_but_never_us() {
        let mut t = Topology::new(entry(1, 1, 1, &[]));
        t.merge(&update(&[entry(2, 1, 1, &[]), entry(3, 1, 1, &[])]));
        assert_eq!(t.retain(&BTreeSet::from([name(3)])), vec![name(2)]);
        assert_eq!(
            t.peers().map(|p| p.name).collect::<Vec<_>>(),
            vec![name(1), name(3)]
        );
        t.retain(&BTreeSet::new());
        assert_eq!(t.len(), 1);
    }

    /// Random entries for peers 2..=6 (several versions of each, some with
    /// equal `(version, uid)` and different content), delivered in random
    /// orders and random batches to topologies that start the same: all end
    /// identical, whatever the order (commutative), grouping (associative),
    /// or repetition (idempotent).
    #[test]
    fn merge_order_grouping_and_repetition_do_not_matter() {
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..300 {
            let mut entries = Vec::new();
            for _ in 0..rng.random_range(1..25) {
                let i = rng.random_range(2..=6);
                let links: Vec<u8> = (1..=6u8)
                    .filter(|&j| j != i && rng.random_bool(0.4))
                    .collect();
                entries.push(entry(
                    i,
                    rng.random_range(0..4),
                    rng.random_range(0..2),
                    &links,
                ));
            }
            let start = {
                let mut t = Topology::new(entry(1, 10, 1, &[2]));
                t.merge(&update(&[entry(2, 1, 0, &[1])]));
                t
            };
            let mut reference = start.clone();
            reference.merge(&update(&entries));
            for _ in 0..8 {
                let mut shuffled = entries.clone();
                shuffled.shuffle(&mut rng);
                // Repeat some entries.
                for _ in 0..rng.random_range(0..5) {
                    let e = shuffled[rng.random_range(0..shuffled.len())].clone();
                    shuffled.push(e);
                }
                let mut t = start.clone();
                let mut rest = &*shuffled;
                while !rest.is_empty() {
                    let n = rng.random_range(1..=rest.len());
                    t.merge(&update(&rest[..n]));
                    rest = &rest[n..];
                }
                assert_eq!(t, reference);
            }
            // Merging two topologies into each other converges both ways.
            let mut a = start.clone();
            a.merge(&update(&entries[..entries.len() / 2]));
            let mut b = start.clone();
            b.merge(&update(&entries[entries.len() / 2..]));
            let (mut ab, mut ba) = (a.clone(), b.clone());
            ab.merge(&b.to_update());
            ba.merge(&a.to_update());
            assert_eq!(ab, ba);
            assert_eq!(ab, reference);
        }
    }
}
