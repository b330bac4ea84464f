//! MAC learning: where each Ethernet address was last seen. Bounded (the
//! oldest entry makes room for a new one) and aged (an entry not seen for
//! `max_age` is as good as absent), so nothing a peer sends can grow it.
//!
//! Pure: time is passed in, so the tests control it. The data plane keeps two
//! tables: MACs behind peers (`MacTable<ShortId>`) and MACs on this host's
//! bridge (`MacTable<()>`), so that frames from peers can never evict the
//! local entries that stop them from claiming a local address.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::mac::Mac;
use crate::overlay::forwarding::{ForwardingTable, ShortId};

/// Entries a table holds at most.
pub const DEFAULT_CAPACITY: usize = 8192;
/// How long an entry lives without being seen again.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_mins(5);
/// A live entry is re-stamped at most this often, so a stream of frames from
/// one address costs one hash lookup per frame, not a reordering.
const RESTAMP_AFTER: Duration = Duration::from_secs(1);

/// What [`MacTable::learn`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learnt<T> {
    /// The address was unknown (or had expired).
    New,
    /// Known there already; its age was reset.
    Refreshed,
    /// Known there already and seen less than a second ago: nothing changed.
    Unchanged,
    /// Known somewhere else before.
    Moved { from: T },
}

#[derive(Clone, Debug)]
struct Entry<T> {
    at: T,
    seen: Instant,
    stamp: u64,
}

#[derive(Clone, Debug)]
pub struct MacTable<T = ShortId> {
    capacity: usize,
    max_age: Duration,
    entries: HashMap<Mac, Entry<T>>,
    /// Entries by age: a stamp that grows with every (re)learning -> address.
    by_age: BTreeMap<u64, Mac>,
    next_stamp: u64,
}

impl<T: Copy + PartialEq> Default for MacTable<T> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl<T: Copy + PartialEq> MacTable<T> {
    /// A table of at most `capacity` (at least 1) entries living `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            entries: HashMap::with_capacity(capacity.max(1)),
            by_age: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `mac` lives, unless unknown or expired at `now`.
    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<T> {
        self.entries
            .get(mac)
            .filter(|e| self.alive(e, now))
            .map(|e| e.at)
    }

    /// Records that `mac` was seen at `at` at time `now`; when the table is
    /// full, the entry seen longest ago goes.
    pub fn learn(&mut self, mac: Mac, at: T, now: Instant) -> Learnt<T> {
        let stamp = self.next_stamp;
        let max_age = self.max_age;
        if let Some(entry) = self.entries.get_mut(&mac) {
            let age = now.saturating_duration_since(entry.seen);
            let outcome = if age >= max_age {
                Learnt::New
            } else if entry.at != at {
                Learnt::Moved { from: entry.at }
            } else if age < RESTAMP_AFTER {
                return Learnt::Unchanged;
            } else {
                Learnt::Refreshed
            };
            self.by_age.remove(&entry.stamp);
            *entry = Entry {
                at,
                seen: now,
                stamp,
            };
            self.by_age.insert(stamp, mac);
            self.next_stamp += 1;
            return outcome;
        }
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            mac,
            Entry {
                at,
                seen: now,
                stamp,
            },
        );
        self.by_age.insert(stamp, mac);
        self.next_stamp += 1;
        Learnt::New
    }

    /// Forgets one address; returns where it was.
    pub fn forget(&mut self, mac: &Mac) -> Option<T> {
        let entry = self.entries.remove(mac)?;
        self.by_age.remove(&entry.stamp);
        Some(entry.at)
    }

    /// Drops the entries that expired by `now`, oldest first, stopping at the
    /// first live one (times passed in by different threads may be slightly
    /// out of order: such an entry just goes at a later call). Cheap when
    /// nothing expired: call it once per batch.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some((&stamp, mac)) = self.by_age.first_key_value() {
            match self.entries.get(mac) {
                Some(e) if self.alive(e, now) => break,
                _ => {}
            }
            let mac = *mac;
            self.by_age.remove(&stamp);
            self.entries.remove(&mac);
            dropped += 1;
        }
        dropped
    }

    /// Every entry alive at `now`.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (Mac, T)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| self.alive(e, now))
            .map(|(mac, e)| (*mac, e.at))
    }

    /// Keeps only the entries for which `keep(mac, at)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Mac, T) -> bool) -> usize {
        let before = self.entries.len();
        let by_age = &mut self.by_age;
        self.entries.retain(|mac, e| {
            let kept = keep(mac, e.at);
            if !kept {
                by_age.remove(&e.stamp);
            }
            kept
        });
        before - self.entries.len()
    }

    fn alive(&self, entry: &Entry<T>, now: Instant) -> bool {
        now.saturating_duration_since(entry.seen) < self.max_age
    }
}

impl MacTable<ShortId> {
    /// Forgets every address behind `peer`; returns how many.
    pub fn forget_peer(&mut self, peer: ShortId) -> usize {
        self.retain(|_, at| at != peer)
    }

    /// Forgets every address behind a peer that `table` has no route to.
    pub fn retain_reachable(&mut self, table: &ForwardingTable) -> usize {
        self.retain(|_, at| at != table.me && table.next_hop.contains_key(&at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: ShortId = ShortId(1);
    const P2: ShortId = ShortId(2);

    fn mac(n: u32) -> Mac {
        let [a, b, c, d] = n.to_be_bytes();
        Mac([0x02, 0, a, b, c, d])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let t0 = Instant::now();
        let mut table = MacTable::default();
        assert_eq!(table.lookup(&mac(1), t0), None);
        assert_eq!(table.learn(mac(1), P1, t0), Learnt::New);
        assert_eq!(table.learn(mac(1), P1, t0), Learnt::Unchanged);
        assert_eq!(table.learn(mac(1), P1, t0 + secs(2)), Learnt::Refreshed);
        assert_eq!(
            table.learn(mac(1), P2, t0 + secs(2)),
            Learnt::Moved { from: P1 }
        );
        assert_eq!(table.lookup(&mac(1), t0 + secs(3)), Some(P2));
        assert_eq!(table.len(), 1);
        assert_eq!(table.forget(&mac(1)), Some(P2));
        assert!(table.is_empty());
        assert!(table.by_age.is_empty());
    }

    #[test]
    fn entries_age_out() {
        let t0 = Instant::now();
        let mut table = MacTable::new(16, secs(300));
        table.learn(mac(1), P1, t0);
        table.learn(mac(2), P1, t0 + secs(100));
        assert_eq!(table.lookup(&mac(1), t0 + secs(299)), Some(P1));
        assert_eq!(table.lookup(&mac(1), t0 + secs(300)), None);
        // Seen again before expiry: lives on.
        table.learn(mac(2), P1, t0 + secs(350));
        assert_eq!(table.expire(t0 + secs(301)), 1);
        assert_eq!(table.lookup(&mac(2), t0 + secs(600)), Some(P1));
        assert_eq!(table.expire(t0 + secs(651)), 1);
        assert!(table.is_empty() && table.by_age.is_empty());
        // An expired entry still present counts as new when learnt again.
        table.learn(mac(3), P1, t0);
        assert_eq!(table.learn(mac(3), P1, t0 + secs(400)), Learnt::New);
    }

    #[test]
    fn full_table_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut table = MacTable::new(3, secs(300));
        for n in 0..3 {
            table.learn(mac(n), P1, t0 + secs(u64::from(n) * 2));
        }
        // mac(0) is refreshed, so mac(1) is now the oldest.
        table.learn(mac(0), P1, t0 + secs(10));
        table.learn(mac(3), P2, t0 + secs(11));
        assert_eq!(table.len(), 3);
        assert_eq!(table.lookup(&mac(1), t0 + secs(11)), None);
        for n in [0, 2, 3] {
            assert!(table.lookup(&mac(n), t0 + secs(11)).is_some(), "{n}");
        }
    }

    #[test]
    fn stays_bounded_under_a_flood() {
        let t0 = Instant::now();
        let mut table = MacTable::new(8192, secs(300));
        for n in 0..100_000u32 {
            table.learn(mac(n), P1, t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(table.len(), 8192);
        assert_eq!(table.by_age.len(), 8192);
        assert_eq!(
            table.lookup(&mac(99_999), t0 + secs(100)),
            Some(P1),
            "the newest survives"
        );
    }

    #[test]
    fn forgets_peers() {
        let t0 = Instant::now();
        let mut table = MacTable::default();
        table.learn(mac(1), P1, t0);
        table.learn(mac(2), P2, t0);
        table.learn(mac(3), ShortId(3), t0);
        assert_eq!(table.forget_peer(P1), 1);
        let mut routes = ForwardingTable {
            me: ShortId(9),
            ..ForwardingTable::default()
        };
        routes.next_hop.insert(P2, P2);
        assert_eq!(table.retain_reachable(&routes), 1);
        assert_eq!(table.lookup(&mac(2), t0), Some(P2));
        assert_eq!(table.len(), 1);
        assert_eq!(table.by_age.len(), 1);
    }

    #[test]
    fn a_local_table_holds_unit() {
        let t0 = Instant::now();
        let mut local: MacTable<()> = MacTable::default();
        assert_eq!(local.learn(mac(1), (), t0), Learnt::New);
        assert_eq!(local.lookup(&mac(1), t0), Some(()));
    }
}
