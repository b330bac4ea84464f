//! The names every peer knows: a CRDT of DNS entries, merged from the
//! gossip of every peer and from this peer's own containers.
//!
//! An entry is identified by (name, address, container, origin peer). Only
//! its origin peer changes it, and every change carries a higher version
//! (a millisecond clock, never below the last version it wrote, so a peer
//! restarted with no memory still outranks what it wrote before). Merging
//! keeps the higher version per identity; on a tie a tombstone wins, so
//! `merge` is commutative, associative and idempotent, and a removed name
//! stays removed when a partition heals: the live copy the other side kept
//! has a lower version than the tombstone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::peer_name::PeerName;

/// Most entries a table holds (live and tombstones); more from gossip are
/// refused and counted, so a peer cannot make us grow without bound.
pub const MAX_ENTRIES: usize = 65_536;
/// Most entries in one gossip message.
pub const MAX_GOSSIP_ENTRIES: usize = 8_192;
/// Longest DNS name (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_NAME: usize = 253;
/// Tombstones older than this are forgotten (milliseconds): long enough for
/// every partition the mesh heals in practice.
pub const TOMBSTONE_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// What identifies an entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    /// Fully qualified, lower case, with the trailing dot.
    pub name: String,
    pub addr: Ipv4Addr,
    pub container: String,
    pub origin: PeerName,
}

/// One entry as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub key: EntryKey,
    pub version: u64,
    #[serde(default)]
    pub tombstone: bool,
}

impl Entry {
    /// Whether `self` wins over `other` (same key).
    const fn beats(&self, other: &Self) -> bool {
        self.version > other.version
            || (self.version == other.version && self.tombstone && !other.tombstone)
    }
}

/// A gossip message: entries, whole table or changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsGossip {
    pub entries: Vec<Entry>,
}

/// Why an entry from a peer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{0:?} is not a valid DNS name")]
    BadName(String),
    #[error("the entry claims to come from us")]
    Ours,
    #[error("the table is full ({MAX_ENTRIES} entries)")]
    Full,
    #[error("too many entries in one message ({0})")]
    TooMany(usize),
    #[error("container id of {0} bytes")]
    BadContainer(usize),
}

/// Whether `name` is a fully qualified DNS name as we store it: lower case,
/// trailing dot, labels of 1..=63 letters, digits, `-` or `_`.
pub fn valid_name(name: &str) -> bool {
    let Some(body) = name.strip_suffix('.') else {
        return false;
    };
    !body.is_empty()
        && name.len() <= MAX_NAME + 1
        && body.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// Turns a container name (or a `dns-add` host name) into the FQDN of its
/// entry: `web` becomes `web.weave.local.`, `web.weave.local` stays; a name
/// in another domain is refused (we would answer for names we do not own).
pub fn fqdn(name: &str, domain: &str) -> Result<String, EntryError> {
    let lower = name.trim_start_matches('/').to_ascii_lowercase();
    let dotted = if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    };
    let full = if dotted.ends_with(&format!(".{domain}")) {
        dotted
    } else if dotted.trim_end_matches('.').contains('.') {
        return Err(EntryError::BadName(name.to_owned()));
    } else {
        format!("{dotted}{domain}")
    };
    if valid_name(&full) {
        Ok(full)
    } else {
        Err(EntryError::BadName(name.to_owned()))
    }
}

/// A local entry: what this peer's containers should be known as.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Local {
    pub name: String,
    pub addr: Ipv4Addr,
    pub container: String,
}

/// The table of one peer.
#[derive(Clone, Debug)]
pub struct Records {
    me: PeerName,
    entries: BTreeMap<EntryKey, Entry>,
    /// The last version this peer wrote.
    clock: u64,
}

impl Records {
    pub const fn new(me: PeerName) -> Self {
        Self {
            me,
            entries: BTreeMap::new(),
            clock: 0,
        }
    }

    fn tick(&mut self, now_ms: u64) -> u64 {
        self.clock = now_ms.max(self.clock + 1);
        self.clock
    }

    /// Makes our own entries match `wanted` (this peer's containers now):
    /// new ones go live, ones no longer wanted become tombstones, including
    /// live ones of ours that peers remembered from before a restart.
    /// Returns the entries that changed, to gossip.
    pub fn reconcile(&mut self, wanted: &[Local], now_ms: u64) -> Vec<Entry> {
        let mut changed = Vec::new();
        let wanted_keys: Vec<EntryKey> = wanted
            .iter()
            .map(|l| EntryKey {
                name: l.name.clone(),
                addr: l.addr,
                container: l.container.clone(),
                origin: self.me,
            })
            .collect();
        for key in &wanted_keys {
            let live = self.entries.get(key).is_some_and(|e| !e.tombstone);
            if !live {
                let version = self.tick(now_ms);
                let entry = Entry {
                    key: key.clone(),
                    version,
                    tombstone: false,
                };
                self.entries.insert(key.clone(), entry.clone());
                changed.push(entry);
            }
        }
        let stale: Vec<EntryKey> = self
            .entries
            .values()
            .filter(|e| e.key.origin == self.me && !e.tombstone && !wanted_keys.contains(&e.key))
            .map(|e| e.key.clone())
            .collect();
        for key in stale {
            let version = self.tick(now_ms);
            let entry = Entry {
                key: key.clone(),
                version,
                tombstone: true,
            };
            self.entries.insert(key, entry.clone());
            changed.push(entry);
        }
        changed
    }

    /// Merges entries from a peer; returns those that changed our table (to
    /// pass on) and the refusals.
    pub fn merge(&mut self, gossip: &DnsGossip) -> (Vec<Entry>, Vec<EntryError>) {
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        if gossip.entries.len() > MAX_GOSSIP_ENTRIES {
            return (changed, vec![EntryError::TooMany(gossip.entries.len())]);
        }
        for entry in &gossip.entries {
            if let Err(e) = Self::check(entry) {
                refused.push(e);
                continue;
            }
            if entry.key.origin == self.me {
                // Ours from a previous run: keep our clock above it, so our
                // next word on it wins; `reconcile` decides what it is.
                self.clock = self.clock.max(entry.version);
                if self.entries.get(&entry.key).is_none_or(|e| entry.beats(e)) {
                    self.entries.insert(entry.key.clone(), entry.clone());
                }
                continue;
            }
            match self.entries.get(&entry.key) {
                Some(e) if !entry.beats(e) => {}
                None if self.entries.len() >= MAX_ENTRIES => refused.push(EntryError::Full),
                _ => {
                    self.entries.insert(entry.key.clone(), entry.clone());
                    changed.push(entry.clone());
                }
            }
        }
        (changed, refused)
    }

    fn check(entry: &Entry) -> Result<(), EntryError> {
        if !valid_name(&entry.key.name) {
            return Err(EntryError::BadName(
                entry.key.name.chars().take(64).collect(),
            ));
        }
        if entry.key.container.len() > 128 {
            return Err(EntryError::BadContainer(entry.key.container.len()));
        }
        Ok(())
    }

    /// Forgets tombstones older than [`TOMBSTONE_LIFETIME_MS`].
    pub fn expire(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| {
            !e.tombstone || now_ms.saturating_sub(e.version) < TOMBSTONE_LIFETIME_MS
        });
    }

    /// The peers other than us that entries come from.
    pub fn origins(&self) -> std::collections::BTreeSet<PeerName> {
        self.entries
            .keys()
            .map(|k| k.origin)
            .filter(|o| *o != self.me)
            .collect()
    }

    /// Forgets every entry of `origin` (a peer gone from the mesh: its
    /// containers are unreachable; if it comes back it gossips them again).
    pub fn forget_origin(&mut self, origin: PeerName) {
        if origin != self.me {
            self.entries.retain(|k, _| k.origin != origin);
        }
    }

    /// The whole table, to gossip as repair.
    pub fn all(&self) -> Vec<Entry> {
        self.entries.values().cloned().collect()
    }

    /// The live entries.
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| !e.tombstone)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub const fn me(&self) -> PeerName {
        self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u64) -> PeerName {
        format!("00:00:00:00:00:{n:02x}")
            .parse()
            .expect("peer name")
    }

    fn local(name: &str, last: u8, container: &str) -> Local {
        Local {
            name: format!("{name}.weave.local."),
            addr: Ipv4Addr::new(10, 0, 0, last),
            container: container.into(),
        }
    }

    fn names(r: &Records) -> Vec<(String, Ipv4Addr)> {
        r.live().map(|e| (e.key.name.clone(), e.key.addr)).collect()
    }

    #[test]
    fn names_become_fully_qualified_in_the_domain_only() {
        let d = "weave.local.";
        assert_eq!(fqdn("web", d).unwrap(), "web.weave.local.");
        assert_eq!(fqdn("/Web", d).unwrap(), "web.weave.local.");
        assert_eq!(fqdn("web.weave.local", d).unwrap(), "web.weave.local.");
        assert_eq!(fqdn("a.weave.local.", d).unwrap(), "a.weave.local.");
        assert!(fqdn("web.example.com", d).is_err());
        assert!(fqdn("we b", d).is_err());
        assert!(fqdn("", d).is_err());
        assert!(fqdn(&"a".repeat(64), d).is_err());
    }

    #[test]
    fn reconcile_announces_and_tombstones() {
        let mut r = Records::new(peer(1));
        let changed = r.reconcile(&[local("web", 1, "c1")], 100);
        assert_eq!(changed.len(), 1);
        assert!(r.reconcile(&[local("web", 1, "c1")], 101).is_empty());
        let changed = r.reconcile(&[], 102);
        assert!(changed[0].tombstone);
        assert!(names(&r).is_empty());
    }

    #[test]
    fn a_tombstone_is_not_resurrected_by_an_old_live_copy() {
        let mut a = Records::new(peer(1));
        let mut b = Records::new(peer(2));
        let live = a.reconcile(&[local("web", 1, "c1")], 100);
        b.merge(&DnsGossip {
            entries: live.clone(),
        });
        let dead = a.reconcile(&[], 200);
        // The partition heals: B gossips the old live copy, A the tombstone.
        a.merge(&DnsGossip { entries: b.all() });
        b.merge(&DnsGossip { entries: dead });
        assert!(names(&a).is_empty());
        assert!(names(&b).is_empty());
        // Idempotent and commutative: again and in the other order.
        b.merge(&DnsGossip { entries: live });
        assert!(names(&b).is_empty());
    }

    #[test]
    fn a_restarted_peer_tombstones_what_it_forgot_and_revives_what_it_has() {
        let mut a = Records::new(peer(1));
        let mut b = Records::new(peer(2));
        b.merge(&DnsGossip {
            entries: a.reconcile(&[local("web", 1, "c1"), local("db", 2, "c2")], 1000),
        });
        // A restarts with an older clock (it went backwards) and only c1.
        let mut a2 = Records::new(peer(1));
        a2.reconcile(&[local("web", 1, "c1")], 10);
        a2.merge(&DnsGossip { entries: b.all() });
        let changed = a2.reconcile(&[local("web", 1, "c1")], 11);
        b.merge(&DnsGossip { entries: changed });
        assert_eq!(
            names(&b),
            vec![("web.weave.local.".into(), Ipv4Addr::new(10, 0, 0, 1))]
        );
        drop(a);
    }

    #[test]
    fn a_gone_peers_entries_are_forgotten_and_ours_kept() {
        let mut a = Records::new(peer(1));
        let mut b = Records::new(peer(2));
        a.reconcile(&[local("web", 1, "c1")], 100);
        a.merge(&DnsGossip {
            entries: b.reconcile(&[local("db", 2, "c2")], 100),
        });
        assert_eq!(a.origins().into_iter().collect::<Vec<_>>(), [peer(2)]);
        a.forget_origin(peer(2));
        a.forget_origin(peer(1));
        assert_eq!(names(&a).len(), 1);
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut r = Records::new(peer(1));
        let bad = Entry {
            key: EntryKey {
                name: "no dots".into(),
                addr: Ipv4Addr::LOCALHOST,
                container: "c".into(),
                origin: peer(2),
            },
            version: 1,
            tombstone: false,
        };
        let (changed, refused) = r.merge(&DnsGossip { entries: vec![bad] });
        assert!(changed.is_empty());
        assert_eq!(refused.len(), 1);
    }
}
