//! Who owns which part of the allocation range: Weave's IPAM ring.
//!
//! The range (10.32.0.0/12 by default) is cut into contiguous pieces by
//! tokens. Each [`Entry`] says that its peer owns the addresses from its token
//! up to the next token (the last one up to the end of the range). Only the
//! owner of an entry changes it, and bumps its version when it does: to hand
//! part of its space to another peer ([`Ring::donate`]), to give everything
//! away when it leaves ([`Ring::leave`]), or to report how much is free
//! ([`Ring::report_free`]). The one exception is [`Ring::transfer`], the
//! `weave rmpeer` of a dead peer, which bumps versions far above anything the
//! dead peer could still have in flight.
//!
//! A state-based CRDT like the topology: [`Ring::merge`] keeps, per token, the
//! entry with the larger `(version, peer, free)`, so on valid histories it is
//! idempotent, commutative and associative and gossip converges whatever the
//! order of delivery. Two guards sit on top, and only act on histories that
//! are not valid (a live peer `rmpeer`ed, a peer restarted without its state):
//! an incoming entry that would take space in which we hold addresses is
//! refused (and reported), and an incoming entry in our name that is newer
//! than ours (a previous run of ours) makes us raise our version over it.
//!
//! A ring has an identity, a random id drawn when it is initialised plus its
//! range: two rings initialised independently never merge
//! ([`RingError::Conflict`]), since their owners would hand out the same
//! addresses.
//!
//! Pure: no I/O. The agent gossips the whole ring, persists it, and calls in
//! here with its [`Space`] (the addresses it has handed out).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::addr_range::{AddrRange, coalesce, dotted};
use super::space::{Space, SpaceError};
use crate::peer_name::PeerName;

/// Most entries a ring holds; a ring with more is refused as malformed, and a
/// donation that would go over it does not happen.
pub const MAX_ENTRIES: usize = 8192;

/// How far [`Ring::transfer`] raises the version of a dead peer's entries,
/// so that the takeover wins over whatever the dead peer had bumped (free
/// reports) that has not reached us yet.
pub const TRANSFER_VERSION_BUMP: u32 = 1 << 16;

/// One piece of the ring: `peer` owns the addresses from `token` to the next
/// entry's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The first address of the piece.
    #[serde(with = "dotted")]
    pub token: u32,
    pub peer: PeerName,
    pub version: u32,
    /// How many addresses of the piece its owner last reported free (the
    /// network and broadcast addresses of the range excluded). Informational:
    /// it steers space requests and `weave status ipam`, never ownership.
    pub free: u32,
}

impl Entry {
    pub fn start(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.token)
    }

    /// Whether this entry wins over `other` (same token) in a merge: larger
    /// `(version, peer, free)`, so that two entries never tie and the merge
    /// stays commutative even for a peer that misbehaves.
    pub fn supersedes(&self, other: &Self) -> bool {
        (self.version, self.peer, self.free) > (other.version, other.peer, other.free)
    }
}

/// What tells two rings apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIdentity {
    /// `None` while uninitialised.
    pub ring_id: Option<u64>,
    pub range: Ipv4Net,
}

impl fmt::Display for RingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ring_id {
            Some(id) => write!(f, "ring {id:016x} over {}", self.range),
            None => write!(f, "uninitialised ring over {}", self.range),
        }
    }
}

/// What makes a ring (from the network or from disk) unacceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("its range {0} is not a network address or includes 255.255.255.255")]
    BadRange(Ipv4Net),
    #[error("it has {0} entries (limit {MAX_ENTRIES})")]
    TooManyEntries(usize),
    #[error("its first token {0} is not the start of its range")]
    FirstTokenNotRangeStart(Ipv4Addr),
    #[error("its tokens are not sorted (at {0})")]
    NotSorted(Ipv4Addr),
    #[error("token {0} appears twice")]
    DuplicateToken(Ipv4Addr),
    #[error("token {0} is outside its range")]
    TokenOutsideRange(Ipv4Addr),
    #[error("it has entries but no ring id")]
    EntriesWithoutId,
    #[error("it has a ring id but no entries")]
    IdWithoutEntries,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error(
        "{0} cannot be an allocation range: it must be a network address (like 10.32.0.0/12) \
         and must not include 255.255.255.255"
    )]
    BadRange(Ipv4Net),
    #[error("the allocation ring is already initialised")]
    AlreadyInitialised,
    #[error("a ring shared among no peers")]
    NoPeers,
    #[error(
        "IP allocation was initialised separately: ours is {ours}, the peer's is {theirs}; \
         refusing to merge them, as both would hand out the same addresses"
    )]
    Conflict {
        ours: RingIdentity,
        theirs: RingIdentity,
    },
    #[error("invalid ring: {0}")]
    Invalid(#[from] Malformed),
}

/// An incoming entry that [`Ring::merge`] did not take, because it would have
/// taken from us space in which we hold addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub token: Ipv4Addr,
    pub claimed_by: PeerName,
    pub version: u32,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer {} claims the space from {} (v{}) in which we have addresses in use",
            self.claimed_by, self.token, self.version
        )
    }
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingMerge {
    pub changed: bool,
    pub refused: Vec<Refused>,
}

/// One peer's part of the ring, for `weave status ipam`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub peer: PeerName,
    /// Addresses owned.
    pub addresses: u32,
    /// Of which this many could ever be handed out (all but the range's
    /// network and broadcast addresses).
    pub usable: u32,
    /// Of which the owner last reported this many free.
    pub reported_free: u32,
}

impl Share {
    /// Percentage of `total` (the ring's size) owned.
    pub fn percent_of(&self, total: u32) -> f64 {
        if total == 0 {
            0.0
        } else {
            f64::from(self.addresses) * 100.0 / f64::from(total)
        }
    }
}

/// A random ring id for [`Ring::init_with_id`]; never 0.
pub fn random_ring_id() -> u64 {
    rand::random::<u64>().max(1)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    range: Ipv4Net,
    ring_id: Option<u64>,
    entries: Vec<Entry>,
}

impl Ring {
    /// An uninitialised ring: a peer that joins others starts with one and
    /// takes theirs on the first merge.
    pub fn new(range: Ipv4Net) -> Result<Self, RingError> {
        let range = range.trunc();
        if AddrRange::of_net(range).is_none() {
            return Err(RingError::BadRange(range));
        }
        Ok(Self {
            range,
            ring_id: None,
            entries: Vec::new(),
        })
    }

    /// A ring in which `me` owns the whole range, with a random id.
    pub fn init(range: Ipv4Net, me: PeerName) -> Result<Self, RingError> {
        Self::init_with_id(range, me, random_ring_id())
    }

    pub fn init_with_id(range: Ipv4Net, me: PeerName, ring_id: u64) -> Result<Self, RingError> {
        let mut ring = Self::new(range)?;
        ring.claim_all(me, ring_id)?;
        Ok(ring)
    }

    /// A ring shared among `peers` from the start (Weave's consensus and
    /// seed): the first (by name) owns the range, then each next peer gets
    /// a half of the largest share, as a donation would give it. Every peer
    /// that builds it from the same peers and id builds the same ring, so
    /// the copies merge as one. `peers` must not be empty.
    pub fn init_among(range: Ipv4Net, peers: &[PeerName], ring_id: u64) -> Result<Self, RingError> {
        let mut sorted: Vec<PeerName> = peers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let (&first, rest) = sorted.split_first().ok_or(RingError::NoPeers)?;
        let mut ring = Self::init_with_id(range, first, ring_id)?;
        let nothing_used = Space::new();
        for &peer in rest {
            let largest = ring
                .shares()
                .into_iter()
                .max_by(|a, b| a.addresses.cmp(&b.addresses).then(b.peer.cmp(&a.peer)))
                .map(|s| s.peer);
            if let Some(donor) = largest {
                ring.donate(donor, peer, ring.range, &nothing_used);
            }
        }
        Ok(ring)
    }

    /// The ring id every peer given the same seeds derives (FNV-1a over
    /// the range and the sorted names: stable across builds, unlike std's
    /// hasher). Never 0.
    pub fn seed_id(range: Ipv4Net, seeds: &[PeerName]) -> u64 {
        let mut sorted = seeds.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = u32::from(range.network())
            .to_be_bytes()
            .into_iter()
            .chain([range.prefix_len()])
            .chain(sorted.iter().flat_map(|p| p.0.0));
        for b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash.max(1)
    }

    /// Initialises an uninitialised ring: `me` owns everything.
    pub fn claim_all(&mut self, me: PeerName, ring_id: u64) -> Result<(), RingError> {
        if self.is_initialised() {
            return Err(RingError::AlreadyInitialised);
        }
        let all = self.addr_range();
        self.ring_id = Some(ring_id);
        self.entries = vec![Entry {
            token: all.start,
            peer: me,
            version: 1,
            free: self.usable_in(all),
        }];
        Ok(())
    }

    pub const fn range(&self) -> Ipv4Net {
        self.range
    }

    /// The range as numbers.
    pub fn addr_range(&self) -> AddrRange {
        AddrRange::of_net(self.range).unwrap_or_else(|| {
            // Only an invalid ring (refused by `validate`) gets here.
            AddrRange::new(u32::from(self.range.network()), u32::MAX)
        })
    }

    /// How many addresses the range holds.
    pub fn size(&self) -> u32 {
        self.addr_range().len()
    }

    pub const fn ring_id(&self) -> Option<u64> {
        self.ring_id
    }

    pub const fn is_initialised(&self) -> bool {
        self.ring_id.is_some()
    }

    pub const fn identity(&self) -> RingIdentity {
        RingIdentity {
            ring_id: self.ring_id,
            range: self.range,
        }
    }

    /// In token order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Every entry with the addresses it covers, in order.
    pub fn entry_ranges(&self) -> impl Iterator<Item = (AddrRange, &Entry)> + '_ {
        (0..self.entries.len()).map(|i| (self.entry_range(i), &self.entries[i]))
    }

    fn entry_range(&self, i: usize) -> AddrRange {
        let end = self
            .entries
            .get(i + 1)
            .map_or_else(|| self.addr_range().end, |next| next.token);
        AddrRange::new(self.entries[i].token, end)
    }

    /// The network and broadcast addresses of the range, never handed out
    /// (none in a /31 or /32).
    fn reserved(&self) -> [Option<u32>; 2] {
        let all = self.addr_range();
        if self.range.prefix_len() >= 31 {
            [None, None]
        } else {
            [Some(all.start), Some(all.end - 1)]
        }
    }

    /// How many addresses of `r` could ever be handed out.
    fn usable_in(&self, r: AddrRange) -> u32 {
        let reserved = self
            .reserved()
            .into_iter()
            .flatten()
            .filter(|a| r.contains(*a))
            .count() as u32;
        r.len() - reserved
    }

    /// What `peer` owns, adjacent entries coalesced, in address order.
    pub fn owned_ranges(&self, peer: PeerName) -> Vec<AddrRange> {
        coalesce(
            self.entry_ranges()
                .filter(|(_, e)| e.peer == peer)
                .map(|(r, _)| r),
        )
    }

    /// Whether `peer` owns every address of `r`.
    pub fn owns(&self, peer: PeerName, r: AddrRange) -> bool {
        self.owned_ranges(peer).iter().any(|o| o.covers(&r))
    }

    /// `None` while uninitialised, or for an address outside the range.
    pub fn owner_of(&self, addr: Ipv4Addr) -> Option<PeerName> {
        let a = u32::from(addr);
        if !self.addr_range().contains(a) {
            return None;
        }
        let after = self.entries.partition_point(|e| e.token <= a);
        after.checked_sub(1).map(|i| self.entries[i].peer)
    }

    /// Every peer that owns something.
    pub fn peers(&self) -> BTreeSet<PeerName> {
        self.entries.iter().map(|e| e.peer).collect()
    }

    /// Per peer (in name order), how much it owns and reported free.
    pub fn shares(&self) -> Vec<Share> {
        let mut by_peer: BTreeMap<PeerName, Share> = BTreeMap::new();
        for (r, e) in self.entry_ranges() {
            let share = by_peer.entry(e.peer).or_insert(Share {
                peer: e.peer,
                addresses: 0,
                usable: 0,
                reported_free: 0,
            });
            share.addresses += r.len();
            share.usable += self.usable_in(r);
            share.reported_free += e.free.min(self.usable_in(r));
        }
        by_peer.into_values().collect()
    }

    /// The peers other than `me` to ask for space in `subnet`: those that
    /// reported free addresses there, most first (then by name). The agent
    /// asks the first, then the next if it gets nothing.
    pub fn donors(&self, me: PeerName, subnet: Ipv4Net) -> Vec<PeerName> {
        let Some(sub) = AddrRange::of_net(subnet.trunc()) else {
            return Vec::new();
        };
        let mut free: BTreeMap<PeerName, u64> = BTreeMap::new();
        for (r, e) in self.entry_ranges() {
            if e.peer == me || e.free == 0 {
                continue;
            }
            if let Some(overlap) = r.intersect(&sub) {
                *free.entry(e.peer).or_default() += u64::from(e.free.min(overlap.len()));
            }
        }
        let mut donors: Vec<(u64, PeerName)> = free.into_iter().map(|(p, f)| (f, p)).collect();
        donors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        donors.into_iter().map(|(_, p)| p).collect()
    }

    /// Updates the free counts of `me`'s entries from `space`, bumping the
    /// version of each that changed. Returns whether any did.
    pub fn report_free(&mut self, me: PeerName, space: &Space) -> bool {
        let mut changed = false;
        for i in 0..self.entries.len() {
            if self.entries[i].peer != me {
                continue;
            }
            let r = self.entry_range(i);
            let free = self.usable_in(r).saturating_sub(space.count_in(r));
            let e = &mut self.entries[i];
            if e.free != free {
                e.free = free;
                e.version = e.version.saturating_add(1);
                changed = true;
            }
        }
        changed
    }

    /// `me` hands `to` a share of its free space in `subnet` (the subnet `to`
    /// wants to allocate in), as a buddy allocator halves a block: the
    /// largest aligned block that is entirely free in `space` and whose buddy
    /// (the other half of the aligned block twice its size) `me` also owns
    /// within `subnet`, so that `me` always keeps at least as much as it
    /// gives; the highest such block among equals. A fresh /12 thus splits
    /// into two /13s, and after its owner took 10.32.0.1 it still gives
    /// 10.40.0.0/13. A block that holds nothing `to` could hand out (a lone
    /// network or broadcast address) is never given. `None` when there is
    /// nothing to give (a single address, all in use), or the ring is full.
    pub fn donate(
        &mut self,
        me: PeerName,
        to: PeerName,
        subnet: Ipv4Net,
        space: &Space,
    ) -> Option<AddrRange> {
        if me == to || !self.is_initialised() || self.entries.len() + 2 > MAX_ENTRIES {
            return None;
        }
        let subnet = subnet.trunc();
        let sub = AddrRange::of_net(subnet)?.intersect(&self.addr_range())?;
        // What `to` could hand out in that subnet.
        let allocatable = AddrRange::hosts_of(subnet)?.intersect(&self.hosts())?;
        let owned: Vec<AddrRange> = self
            .owned_ranges(me)
            .iter()
            .filter_map(|o| o.intersect(&sub))
            .collect();
        let mut best: Option<(u32, u32)> = None; // (log2 size, start)
        for seg in &owned {
            for run in space.free_runs(*seg) {
                if let Some(found) = best_block_in(run, &owned, allocatable, best) {
                    best = Some(found);
                }
            }
        }
        let (k, start) = best?;
        let block = AddrRange::new(start, (u64::from(start) + (1u64 << k)) as u32);
        self.grant(block, to);
        self.report_free(me, space);
        Some(block)
    }

    /// `me` hands `to` the one address `addr` that `to` claims (an explicit
    /// address for one of its containers, as Weave's claims): the ring
    /// changes hands for exactly that address. Refused (`Err` saying why)
    /// unless `me` owns it and has not handed it out; `Ok(false)` when the
    /// ring is too full to split.
    pub fn hand_over(
        &mut self,
        me: PeerName,
        to: PeerName,
        addr: Ipv4Addr,
        space: &Space,
    ) -> Result<bool, SpaceError> {
        let a = u32::from(addr);
        match self.owner_of(addr) {
            None => return Err(SpaceError::NotInitialised),
            Some(owner) if owner != me || me == to => {
                return Err(SpaceError::OwnedBy { addr, owner });
            }
            Some(_) => {}
        }
        if space.is_used(addr) {
            return Err(SpaceError::InUse(addr));
        }
        if self.entries.len() + 2 > MAX_ENTRIES {
            return Ok(false);
        }
        // `a` is inside the range, so `a + 1` is at most its end.
        self.grant(AddrRange::new(a, a + 1), to);
        self.report_free(me, space);
        Ok(true)
    }

    /// The addresses of the range that may ever be handed out.
    fn hosts(&self) -> AddrRange {
        AddrRange::hosts_of(self.range).unwrap_or_else(|| self.addr_range())
    }

    /// Gives `block` (owned by the caller, and free) to `to`: splits entries
    /// at its ends and hands over every entry inside it.
    fn grant(&mut self, block: AddrRange, to: PeerName) {
        let first = self.split_at(block.start);
        let end = if block.end == self.addr_range().end {
            self.entries.len()
        } else {
            self.split_at(block.end)
        };
        for i in first..end {
            let free = self.usable_in(self.entry_range(i));
            let e = &mut self.entries[i];
            e.peer = to;
            e.version = e.version.saturating_add(1);
            e.free = free;
        }
    }

    /// Makes sure an entry starts at `at` (inside the range), splitting the
    /// entry that covers it: the new entry has the same owner and a newer
    /// version. Returns its index.
    fn split_at(&mut self, at: u32) -> usize {
        match self.entries.binary_search_by_key(&at, |e| e.token) {
            Ok(i) => i,
            Err(i) => {
                let covering = self.entries[i - 1];
                self.entries.insert(
                    i,
                    Entry {
                        token: at,
                        peer: covering.peer,
                        version: covering.version.saturating_add(1),
                        free: 0,
                    },
                );
                i
            }
        }
    }

    /// `weave rmpeer`: `to` (the peer running it) takes over every entry of
    /// the dead peer `dead`, all of it free. Returns the space taken over.
    /// Run it once, on one peer, after the dead peer's last ring has reached
    /// it: two peers taking over the same dead peer, or one taking over a
    /// live peer, would hand out the same addresses (the merge then refuses
    /// what it can, see [`RingMerge::refused`]).
    pub fn transfer(&mut self, dead: PeerName, to: PeerName) -> Vec<AddrRange> {
        self.reassign(dead, to, TRANSFER_VERSION_BUMP)
    }

    /// `weave reset`: `me` leaves and hands all its space to `heir`. Returns
    /// what was handed over. Its containers must be gone: all of it is free.
    pub fn leave(&mut self, me: PeerName, heir: PeerName) -> Vec<AddrRange> {
        self.reassign(me, heir, 1)
    }

    fn reassign(&mut self, from: PeerName, to: PeerName, bump: u32) -> Vec<AddrRange> {
        if from == to {
            return Vec::new();
        }
        let mut moved = Vec::new();
        for i in 0..self.entries.len() {
            if self.entries[i].peer != from {
                continue;
            }
            let r = self.entry_range(i);
            let free = self.usable_in(r);
            let e = &mut self.entries[i];
            e.peer = to;
            e.version = e.version.saturating_add(bump);
            e.free = free;
            moved.push(r);
        }
        coalesce(moved)
    }

    /// Checks what a peer (or a corrupted file) cannot legitimately send.
    pub fn validate(&self) -> Result<(), Malformed> {
        if self.range.addr() != self.range.network() || AddrRange::of_net(self.range).is_none() {
            return Err(Malformed::BadRange(self.range));
        }
        match (self.ring_id, self.entries.is_empty()) {
            (None, false) => return Err(Malformed::EntriesWithoutId),
            (Some(_), true) => return Err(Malformed::IdWithoutEntries),
            _ => {}
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(Malformed::TooManyEntries(self.entries.len()));
        }
        let all = self.addr_range();
        if let Some(bad) = self.entries.iter().find(|e| !all.contains(e.token)) {
            return Err(Malformed::TokenOutsideRange(bad.start()));
        }
        if let Some(first) = self.entries.first()
            && first.token != all.start
        {
            return Err(Malformed::FirstTokenNotRangeStart(first.start()));
        }
        for pair in self.entries.windows(2) {
            if pair[1].token == pair[0].token {
                return Err(Malformed::DuplicateToken(pair[1].start()));
            }
            if pair[1].token < pair[0].token {
                return Err(Malformed::NotSorted(pair[1].start()));
            }
        }
        Ok(())
    }

    /// Merges a ring received from a peer (or read back from disk) into ours.
    /// `me` and `space` (the addresses we have handed out) guard our own
    /// space: see the module documentation. On error nothing changes.
    pub fn merge(
        &mut self,
        other: &Self,
        me: PeerName,
        space: &Space,
    ) -> Result<RingMerge, RingError> {
        other.validate()?;
        let conflict = || RingError::Conflict {
            ours: self.identity(),
            theirs: other.identity(),
        };
        if self.range != other.range {
            return Err(conflict());
        }
        let Some(theirs_id) = other.ring_id else {
            return Ok(RingMerge::default());
        };
        match self.ring_id {
            None => {
                self.ring_id = Some(theirs_id);
                self.entries.clone_from(&other.entries);
                return Ok(RingMerge {
                    changed: true,
                    refused: Vec::new(),
                });
            }
            Some(ours) if ours != theirs_id => return Err(conflict()),
            Some(_) => {}
        }

        let mut slots = join(&self.entries, &other.entries, me);
        let refused = self.guard_our_space(&mut slots, me, space);
        if slots.len() > MAX_ENTRIES {
            return Err(Malformed::TooManyEntries(slots.len()).into());
        }
        let merged: Vec<Entry> = slots.into_iter().map(|s| s.entry).collect();
        let changed = merged != self.entries;
        self.entries = merged;
        Ok(RingMerge { changed, refused })
    }

    /// Undoes, in the joined `slots`, every incoming entry that would take
    /// from `me` space holding addresses in use; returns what it undid. An
    /// undone entry that replaced one of ours gets ours back; a new token is
    /// dropped (which widens the entry before it, hence the loop).
    fn guard_our_space(&self, slots: &mut Vec<Slot>, me: PeerName, space: &Space) -> Vec<Refused> {
        let ours_before = self.owned_ranges(me);
        let end = self.addr_range().end;
        let mut refused = Vec::new();
        loop {
            let undo: Vec<usize> = (0..slots.len())
                .filter(|&i| {
                    let s = &slots[i];
                    if s.theirs.is_none() || s.entry.peer == me {
                        return false;
                    }
                    let next = slots.get(i + 1).map_or(end, |n| n.entry.token);
                    let taken = AddrRange::new(s.entry.token, next);
                    let from = ours_before.partition_point(|o| o.end <= taken.start);
                    ours_before[from..]
                        .iter()
                        .take_while(|o| o.start < taken.end)
                        .filter_map(|o| o.intersect(&taken))
                        .any(|lost| space.any_used_in(lost))
                })
                .collect();
            if undo.is_empty() {
                return refused;
            }
            for &i in undo.iter().rev() {
                let theirs = slots[i]
                    .theirs
                    .take()
                    .expect("only incoming entries are undone");
                refused.push(Refused {
                    token: theirs.start(),
                    claimed_by: theirs.peer,
                    version: theirs.version,
                });
                match slots[i].ours {
                    Some(ours) => slots[i].entry = ours,
                    None => {
                        slots.remove(i);
                    }
                }
            }
        }
    }
}

/// One token of a merge in progress.
struct Slot {
    entry: Entry,
    /// Our entry at this token, if we had one.
    ours: Option<Entry>,
    /// The incoming entry, when it is the one kept.
    theirs: Option<Entry>,
}

/// Per token, the winning entry; an incoming entry in our name that beats
/// ours comes from a previous run of ours, and makes ours go over it.
fn join(ours: &[Entry], theirs: &[Entry], me: PeerName) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(ours.len().max(theirs.len()));
    let (mut i, mut j) = (0, 0);
    while i < ours.len() || j < theirs.len() {
        let (o, t) = (ours.get(i), theirs.get(j));
        let slot = match (o, t) {
            (Some(o), Some(t)) if o.token == t.token => {
                i += 1;
                j += 1;
                if !t.supersedes(o) {
                    Slot {
                        entry: *o,
                        ours: Some(*o),
                        theirs: None,
                    }
                } else if o.peer == me && t.peer == me {
                    Slot {
                        entry: Entry {
                            version: t.version.saturating_add(1),
                            ..*o
                        },
                        ours: Some(*o),
                        theirs: None,
                    }
                } else {
                    Slot {
                        entry: *t,
                        ours: Some(*o),
                        theirs: Some(*t),
                    }
                }
            }
            (Some(o), t) if t.is_none_or(|t| o.token < t.token) => {
                i += 1;
                Slot {
                    entry: *o,
                    ours: Some(*o),
                    theirs: None,
                }
            }
            (_, Some(t)) => {
                j += 1;
                Slot {
                    entry: *t,
                    ours: None,
                    theirs: Some(*t),
                }
            }
            (_, None) => unreachable!("the loop stops when both are exhausted"),
        };
        slots.push(slot);
    }
    slots
}

/// The largest aligned block inside the free `run` whose buddy lies in
/// `owned` and that holds at least one `allocatable` address, if it beats
/// `best` (larger, or as large and higher). Only the two largest block sizes
/// that fit in the run need looking at: the halves of a block of the largest
/// size are each other's buddies.
fn best_block_in(
    run: AddrRange,
    owned: &[AddrRange],
    allocatable: AddrRange,
    best: Option<(u32, u32)>,
) -> Option<(u32, u32)> {
    let (a, b) = (u64::from(run.start), u64::from(run.end));
    let fits = |k: u32| {
        let size = 1u64 << k;
        a.next_multiple_of(size) + size <= b
    };
    let k_max = (0..32u32).rev().find(|&k| fits(k))?;
    for k in (k_max.saturating_sub(1)..=k_max).rev() {
        if best.is_some_and(|(best_k, _)| best_k > k) {
            return None;
        }
        let size = 1u64 << k;
        let mut found = None;
        let mut s = a.next_multiple_of(size);
        while s + size <= b {
            let buddy = s ^ size;
            let buddy_ok = u32::try_from(buddy + size).is_ok()
                && owned
                    .iter()
                    .any(|o| o.covers(&AddrRange::new(buddy as u32, (buddy + size) as u32)));
            let block = AddrRange::new(s as u32, (s + size) as u32);
            if buddy_ok && block.intersect(&allocatable).is_some() {
                found = Some((k, s as u32));
            }
            s += size;
        }
        if let Some(found) = found {
            return (best.is_none_or(|b| found > b)).then_some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::test_support::{DEFAULT, net, peer, range, token};

    #[test]
    fn hand_over_gives_exactly_the_claimed_address_when_free() {
        let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        let mut ring = Ring::init_with_id(range, peer(1), 7).unwrap();
        let mut space = Space::new();
        let held: Ipv4Net = "10.32.0.5/12".parse().unwrap();
        space.claim(&ring, peer(1), held).unwrap();
        assert_eq!(
            ring.hand_over(peer(1), peer(2), held.addr(), &space),
            Err(SpaceError::InUse(held.addr()))
        );
        let claimed: Ipv4Addr = "10.32.0.9".parse().unwrap();
        assert_eq!(ring.hand_over(peer(1), peer(2), claimed, &space), Ok(true));
        assert_eq!(ring.owner_of(claimed), Some(peer(2)));
        assert_eq!(ring.owner_of("10.32.0.8".parse().unwrap()), Some(peer(1)));
        assert_eq!(ring.owner_of("10.32.0.10".parse().unwrap()), Some(peer(1)));
        assert_eq!(
            ring.owned_ranges(peer(2)),
            vec![AddrRange::new(u32::from(claimed), u32::from(claimed) + 1)]
        );
        // The new owner's copy after a merge lets it take the address.
        let mut theirs = Ring::new(range).unwrap();
        theirs.merge(&ring, peer(2), &Space::new()).unwrap();
        let mut their_space = Space::new();
        their_space
            .claim(&theirs, peer(2), Ipv4Net::new(claimed, 12).unwrap())
            .unwrap();
        // Only the owner hands over, and not twice.
        assert!(matches!(
            ring.hand_over(peer(1), peer(3), claimed, &space),
            Err(SpaceError::OwnedBy { owner, .. }) if owner == peer(2)
        ));
        ring.validate().unwrap();
    }

    #[test]
    fn a_ring_among_peers_is_the_same_whoever_builds_it_and_splits_by_halves() {
        let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        let a = Ring::init_among(range, &[peer(3), peer(1), peer(2)], 5).unwrap();
        let b = Ring::init_among(range, &[peer(2), peer(3), peer(1), peer(2)], 5).unwrap();
        assert_eq!(a, b);
        a.validate().unwrap();
        let shares: Vec<(PeerName, u32)> =
            a.shares().iter().map(|s| (s.peer, s.addresses)).collect();
        let total = 1u32 << 20;
        assert_eq!(shares.iter().map(|s| s.1).sum::<u32>(), total, "{shares:?}");
        let of = |p| shares.iter().find(|s| s.0 == p).unwrap().1;
        assert_eq!(
            (of(peer(1)), of(peer(2)), of(peer(3))),
            (total / 4, total / 2, total / 4)
        );
        assert_eq!(Ring::init_among(range, &[], 5), Err(RingError::NoPeers));
        // The seed id depends on the range and the set of names only.
        let id = Ring::seed_id(range, &[peer(1), peer(2)]);
        assert_eq!(id, Ring::seed_id(range, &[peer(2), peer(1), peer(1)]));
        assert_ne!(id, Ring::seed_id(range, &[peer(1), peer(3)]));
        assert_ne!(
            id,
            Ring::seed_id("10.32.0.0/13".parse().unwrap(), &[peer(1), peer(2)])
        );
    }

    #[test]
    fn init_claims_the_whole_range() {
        let r = Ring::init_with_id(net(DEFAULT), peer(1), 7).unwrap();
        r.validate().unwrap();
        assert_eq!(r.owned_ranges(peer(1)), vec![range(DEFAULT)]);
        assert_eq!(r.owner_of("10.47.255.255".parse().unwrap()), Some(peer(1)));
        assert_eq!(r.owner_of("10.48.0.0".parse().unwrap()), None);
        assert_eq!(r.entries()[0].free, (1 << 20) - 2);
        let shares = r.shares();
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].addresses, 1 << 20);
        assert_eq!(shares[0].percent_of(r.size()), 100.0);
        let mut again = r;
        assert_eq!(
            again.claim_all(peer(2), 8),
            Err(RingError::AlreadyInitialised)
        );
    }

    #[test]
    fn uninitialised_rings_own_nothing_and_bad_ranges_are_refused() {
        let r = Ring::new(net("10.32.1.0/12")).unwrap();
        assert_eq!(r.range(), net(DEFAULT));
        assert!(!r.is_initialised());
        assert_eq!(r.owner_of("10.32.0.1".parse().unwrap()), None);
        assert!(r.shares().is_empty());
        assert!(matches!(
            Ring::new(net("255.255.255.0/24")),
            Err(RingError::BadRange(_))
        ));
        assert!(Ring::new(net("0.0.0.0/0")).is_err());
    }

    #[test]
    fn a_fresh_range_is_halved_into_aligned_blocks() {
        let mut r = Ring::init_with_id(net(DEFAULT), peer(1), 7).unwrap();
        let none = Space::new();
        let given = r.donate(peer(1), peer(2), net(DEFAULT), &none).unwrap();
        assert_eq!(given.to_string(), "10.40.0.0/13");
        assert_eq!(r.owned_ranges(peer(1)), vec![range("10.32.0.0/13")]);
        assert_eq!(r.owned_ranges(peer(2)), vec![range("10.40.0.0/13")]);
        let given = r.donate(peer(1), peer(3), net(DEFAULT), &none).unwrap();
        assert_eq!(given.to_string(), "10.36.0.0/14");
        let shares = r.shares();
        assert_eq!(
            shares
                .iter()
                .map(|s| (s.peer, s.percent_of(r.size())))
                .collect::<Vec<_>>(),
            vec![(peer(1), 25.0), (peer(2), 50.0), (peer(3), 25.0)]
        );
        r.validate().unwrap();
    }

    #[test]
    fn donations_skip_used_addresses_and_keep_the_buddy() {
        let mut r = Ring::init_with_id(net("10.9.0.0/24"), peer(1), 7).unwrap();
        let mut space = Space::new();
        // Used high up: the lower half is the largest free block.
        space.claim(&r, peer(1), net("10.9.0.200/24")).unwrap();
        let given = r.donate(peer(1), peer(2), net("10.9.0.0/24"), &space);
        assert_eq!(given.unwrap().to_string(), "10.9.0.0/25");
        assert!(r.owns(peer(1), range("10.9.0.128/25")));
        // Restricted to a subnet: only space inside it, and half of it.
        let given = r.donate(peer(1), peer(3), net("10.9.0.128/26"), &space);
        assert_eq!(given.unwrap().to_string(), "10.9.0.160/27");
    }

    #[test]
    fn a_single_address_cannot_be_donated() {
        let mut r = Ring::init_with_id(net("10.9.9.9/32"), peer(1), 7).unwrap();
        assert_eq!(
            r.donate(peer(1), peer(2), net("10.9.9.9/32"), &Space::new()),
            None
        );
        // Nor can a range whose only free addresses are network and broadcast.
        let mut r = Ring::init_with_id(net("10.9.0.0/30"), peer(1), 7).unwrap();
        let mut space = Space::new();
        for _ in 0..2 {
            space.allocate(&r, peer(1), net("10.9.0.0/30")).unwrap();
        }
        assert_eq!(r.donate(peer(1), peer(2), net("10.9.0.0/30"), &space), None);
        // Nor to ourselves, nor from an uninitialised ring.
        assert_eq!(
            r.donate(peer(1), peer(1), net("10.9.0.0/30"), &Space::new()),
            None
        );
        let mut empty = Ring::new(net("10.9.0.0/30")).unwrap();
        assert_eq!(
            empty.donate(peer(1), peer(2), net("10.9.0.0/30"), &Space::new()),
            None
        );
    }

    #[test]
    fn a_tiny_range_gives_what_can_be_used() {
        let mut r = Ring::init_with_id(net("10.9.0.0/30"), peer(1), 7).unwrap();
        let mut space = Space::new();
        space.allocate(&r, peer(1), net("10.9.0.0/30")).unwrap();
        let given = r.donate(peer(1), peer(2), net("10.9.0.0/30"), &space);
        assert_eq!(
            given,
            Some(AddrRange::new(token("10.9.0.2"), token("10.9.0.4")))
        );
        assert_eq!(r.entries().len(), 2);
        // A /31 of two free addresses gives one.
        let mut r = Ring::init_with_id(net("10.9.0.4/31"), peer(1), 7).unwrap();
        let given = r.donate(peer(1), peer(2), net("10.9.0.4/31"), &Space::new());
        assert_eq!(
            given,
            Some(AddrRange::new(token("10.9.0.5"), token("10.9.0.6")))
        );
        assert_eq!(
            r.donate(peer(1), peer(3), net("10.9.0.4/31"), &Space::new()),
            None
        );
    }

    #[test]
    fn free_counts_are_reported_by_the_owner() {
        let mut r = Ring::init_with_id(net("10.9.0.0/24"), peer(1), 7).unwrap();
        let mut space = Space::new();
        assert!(!r.report_free(peer(1), &space));
        space.allocate(&r, peer(1), net("10.9.0.0/24")).unwrap();
        let v = r.entries()[0].version;
        assert!(r.report_free(peer(1), &space));
        assert_eq!(r.entries()[0].free, 253);
        assert_eq!(r.entries()[0].version, v + 1);
        assert!(!r.report_free(peer(2), &space));
        assert_eq!(r.donors(peer(2), net("10.9.0.0/24")), vec![peer(1)]);
        assert!(r.donors(peer(1), net("10.9.0.0/24")).is_empty());
    }

    #[test]
    fn rmpeer_takes_over_a_dead_peers_space() {
        let (a, b, c) = (peer(1), peer(2), peer(3));
        let mut ra = Ring::init_with_id(net(DEFAULT), a, 7).unwrap();
        let none = Space::new();
        ra.donate(a, b, net(DEFAULT), &none).unwrap();
        ra.donate(a, c, net(DEFAULT), &none).unwrap();
        let mut rb = Ring::new(net(DEFAULT)).unwrap();
        rb.merge(&ra, b, &none).unwrap();
        let before_death = rb.clone();
        let taken = ra.transfer(b, a);
        assert_eq!(taken, vec![range("10.40.0.0/13")]);
        assert!(ra.peers().iter().all(|p| *p != b));
        let e = ra
            .entries()
            .iter()
            .find(|e| e.token == token("10.40.0.0"))
            .unwrap();
        assert!(e.version > TRANSFER_VERSION_BUMP);
        // B's last word (even with its own later free reports) does not undo it.
        let mut late = before_death;
        let mut b_space = Space::new();
        b_space.allocate(&late, b, net(DEFAULT)).unwrap();
        late.report_free(b, &b_space);
        assert!(!ra.merge(&late, a, &Space::new()).unwrap().changed);
        assert!(ra.peers().iter().all(|p| *p != b));
        // A third peer that hears both ends up with A's view.
        let mut rc = Ring::new(net(DEFAULT)).unwrap();
        rc.merge(&late, c, &none).unwrap();
        rc.merge(&ra, c, &none).unwrap();
        assert_eq!(rc, ra);
        assert!(ra.transfer(a, a).is_empty());
    }

    #[test]
    fn leaving_hands_everything_to_the_heir() {
        let (a, b) = (peer(1), peer(2));
        let mut r = Ring::init_with_id(net(DEFAULT), a, 7).unwrap();
        r.donate(a, b, net(DEFAULT), &Space::new()).unwrap();
        let handed = r.leave(b, a);
        assert_eq!(handed, vec![range("10.40.0.0/13")]);
        assert_eq!(
            r.owned_ranges(a).iter().map(AddrRange::len).sum::<u32>(),
            1 << 20
        );
        assert_eq!(r.shares().len(), 1);
    }

    #[test]
    fn merging_is_idempotent_and_newer_versions_win() {
        let (a, b) = (peer(1), peer(2));
        let mut ra = Ring::init_with_id(net(DEFAULT), a, 7).unwrap();
        let mut rb = Ring::new(net(DEFAULT)).unwrap();
        assert!(rb.merge(&ra, b, &Space::new()).unwrap().changed);
        assert!(!rb.merge(&ra, b, &Space::new()).unwrap().changed);
        ra.donate(a, b, net(DEFAULT), &Space::new()).unwrap();
        assert!(rb.merge(&ra, b, &Space::new()).unwrap().changed);
        assert_eq!(rb, ra);
        assert!(!rb.merge(&ra, b, &Space::new()).unwrap().changed);
        // An uninitialised ring teaches nothing.
        let empty = Ring::new(net(DEFAULT)).unwrap();
        assert_eq!(
            rb.merge(&empty, b, &Space::new()).unwrap(),
            RingMerge::default()
        );
    }

    #[test]
    fn independently_initialised_rings_refuse_to_merge() {
        let mut r1 = Ring::init_with_id(net(DEFAULT), peer(1), 1).unwrap();
        let mut r2 = Ring::init_with_id(net(DEFAULT), peer(2), 2).unwrap();
        let (s1, s2) = (r1.clone(), r2.clone());
        let err = r1.merge(&s2, peer(1), &Space::new()).unwrap_err();
        assert_eq!(
            err,
            RingError::Conflict {
                ours: s1.identity(),
                theirs: s2.identity()
            }
        );
        assert!(err.to_string().contains("initialised separately"));
        assert!(r2.merge(&s1, peer(2), &Space::new()).is_err());
        assert_eq!((&r1, &r2), (&s1, &s2));
        // Different ranges conflict too, even uninitialised.
        let mut r3 = Ring::new(net("10.32.0.0/16")).unwrap();
        let before = r3.clone();
        assert!(matches!(
            r3.merge(&s2, peer(3), &Space::new()),
            Err(RingError::Conflict { .. })
        ));
        assert_eq!(r3, before);
    }

    #[test]
    fn malformed_rings_are_refused_and_change_nothing() {
        let base = Ring::init_with_id(net("10.9.0.0/24"), peer(1), 7).unwrap();
        let entry = |at: &str, v: u32| Entry {
            token: token(at),
            peer: peer(2),
            version: v,
            free: 0,
        };
        let with = |entries: Vec<Entry>| Ring {
            entries,
            ..base.clone()
        };
        let cases = [
            (
                with(vec![entry("10.9.0.0", 9), entry("10.9.1.0", 9)]),
                Malformed::TokenOutsideRange("10.9.1.0".parse().unwrap()),
            ),
            (
                with(vec![entry("10.9.0.4", 9)]),
                Malformed::FirstTokenNotRangeStart("10.9.0.4".parse().unwrap()),
            ),
            (
                with(vec![
                    entry("10.9.0.0", 9),
                    entry("10.9.0.8", 9),
                    entry("10.9.0.4", 9),
                ]),
                Malformed::NotSorted("10.9.0.4".parse().unwrap()),
            ),
            (
                with(vec![entry("10.9.0.0", 9), entry("10.9.0.0", 10)]),
                Malformed::DuplicateToken("10.9.0.0".parse().unwrap()),
            ),
            (
                Ring {
                    ring_id: None,
                    ..base.clone()
                },
                Malformed::EntriesWithoutId,
            ),
            (with(Vec::new()), Malformed::IdWithoutEntries),
            (
                Ring {
                    range: net("10.9.0.1/24"),
                    ..base.clone()
                },
                Malformed::BadRange(net("10.9.0.1/24")),
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(bad.validate(), Err(why.clone()));
            let mut ours = base.clone();
            assert_eq!(
                ours.merge(&bad, peer(1), &Space::new()),
                Err(RingError::Invalid(why))
            );
            assert_eq!(ours, base);
        }
        // Too many entries (in a range big enough for their tokens).
        let big = Ring::init_with_id(net("10.0.0.0/16"), peer(1), 7).unwrap();
        let flood = Ring {
            entries: (0..=MAX_ENTRIES as u32)
                .map(|i| Entry {
                    token: token("10.0.0.0") + i,
                    ..entry("10.9.0.0", 1)
                })
                .collect(),
            ..big
        };
        let why = Malformed::TooManyEntries(MAX_ENTRIES + 1);
        assert_eq!(flood.validate(), Err(why.clone()));
        let mut ours = big.clone();
        assert_eq!(
            ours.merge(&flood, peer(1), &Space::new()),
            Err(RingError::Invalid(why))
        );
        assert_eq!(ours, big);
    }

    #[test]
    fn an_entry_in_our_name_from_a_previous_run_makes_ours_go_over_it() {
        let a = peer(1);
        let ours = Ring::init_with_id(net(DEFAULT), a, 7).unwrap();
        let mut old = ours.clone();
        old.entries[0].version = 50;
        old.entries[0].free = 3;
        let mut r = ours.clone();
        let out = r.merge(&old, a, &Space::new()).unwrap();
        assert!(out.changed && out.refused.is_empty());
        assert_eq!(r.entries()[0].version, 51);
        assert_eq!(r.entries()[0].free, ours.entries()[0].free);
        // Anyone merging both now takes ours.
        let mut c = Ring::new(net(DEFAULT)).unwrap();
        c.merge(&old, peer(3), &Space::new()).unwrap();
        c.merge(&r, peer(3), &Space::new()).unwrap();
        assert_eq!(c, r);
    }

    #[test]
    fn space_we_use_is_never_taken_from_us() {
        let (a, b) = (peer(1), peer(2));
        let ours = Ring::init_with_id(net(DEFAULT), a, 7).unwrap();
        let mut space = Space::new();
        space.claim(&ours, a, net("10.44.0.5/12")).unwrap();
        // B rmpeer'ed us while we were alive, then gave part of it away.
        let mut theirs = ours.clone();
        theirs.transfer(a, b);
        theirs
            .donate(b, peer(3), net(DEFAULT), &Space::new())
            .unwrap();
        let mut r = ours.clone();
        let out = r.merge(&theirs, a, &space).unwrap();
        assert!(!out.refused.is_empty(), "{out:?}");
        assert!(r.owns(a, range("10.44.0.0/14")));
        assert_eq!(r.owner_of("10.44.0.5".parse().unwrap()), Some(a));
        assert!(space.not_owned(&r, a).is_empty());
        // Merging again refuses again and changes nothing more.
        let again = r.merge(&theirs, a, &space).unwrap();
        assert!(!again.changed && !again.refused.is_empty());
        // With nothing in use there, the takeover is accepted.
        let mut idle = ours.clone();
        let out = idle.merge(&theirs, a, &Space::new()).unwrap();
        assert!(out.changed && out.refused.is_empty());
        assert_eq!(idle, theirs);
    }

    #[test]
    fn a_foreign_token_splitting_our_used_space_is_refused() {
        let a = peer(1);
        let ours = Ring::init_with_id(net("10.9.0.0/24"), a, 7).unwrap();
        let mut space = Space::new();
        space.claim(&ours, a, net("10.9.0.200/24")).unwrap();
        let mut theirs = ours.clone();
        theirs.entries.push(Entry {
            token: token("10.9.0.128"),
            peer: peer(2),
            version: 1,
            free: 0,
        });
        let mut r = ours.clone();
        let out = r.merge(&theirs, a, &space).unwrap();
        assert_eq!(
            out.refused,
            vec![Refused {
                token: "10.9.0.128".parse().unwrap(),
                claimed_by: peer(2),
                version: 1
            }]
        );
        assert!(!out.changed);
        assert_eq!(r, ours);
        // In a part we do not use, it is taken.
        theirs.entries[1].token = token("10.9.0.240");
        let out = r.merge(&theirs, a, &space).unwrap();
        assert!(out.changed && out.refused.is_empty());
    }

    #[test]
    fn rings_round_trip_through_json_with_readable_tokens() {
        let mut r = Ring::init_with_id(net(DEFAULT), peer(1), 0xfeed).unwrap();
        r.donate(peer(1), peer(2), net(DEFAULT), &Space::new())
            .unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"10.40.0.0\""), "{json}");
        assert!(json.contains("02:00:00:00:00:02"), "{json}");
        let back: Ring = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        back.validate().unwrap();
    }
}
