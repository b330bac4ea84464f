//! The kernel's copy of the MACs learnt behind peers (`PEER_MACS`), which
//! the datapath program reads to tag each frame with its destination peer.
//!
//! The agent's own remote table (`Macs::remote`) stays the authority: the
//! workers journal what they learn and forget there, and the mirror applies
//! the journal after each batch (map writes happen only when a MAC is new or
//! moved, never per frame). What the journal cannot say (entries aged out,
//! peers gone, a journal that overflowed) a periodic [`PeerMacs::sync`]
//! repairs: a MAC left behind for a few seconds only sends frames to the
//! peer it was last seen behind, which is what they would do anyway.

use std::collections::HashMap as StdHashMap;
use std::time::Instant;

use aya::maps::{HashMap, MapData};
use weave_common::datapath::mac_key;

use crate::mac::Mac;
use crate::overlay::forwarding::ShortId;
use crate::overlay::mac_table::MacTable;
use crate::overlay::plain::verdict::MacJournal;

pub struct PeerMacs {
    map: HashMap<MapData, u64, u32>,
    /// Writes the kernel refused (map full): counted, logged once.
    failed: u64,
}

/// Changes taken out of the journal under the MAC lock, applied after it.
#[derive(Default)]
pub struct Pending {
    learnt: Vec<(Mac, ShortId)>,
    forgotten: Vec<Mac>,
    resync: bool,
}

impl Pending {
    /// Moves the journal's changes here (keeping both allocations).
    pub fn take_from(&mut self, journal: &mut MacJournal) {
        self.learnt.append(&mut journal.learnt);
        self.forgotten.append(&mut journal.forgotten);
        self.resync |= std::mem::take(&mut journal.overflowed);
    }

    pub fn is_empty(&self) -> bool {
        self.learnt.is_empty() && self.forgotten.is_empty() && !self.resync
    }

    /// Whether the whole map must be resynchronised (and forgets that it
    /// must: the caller does it).
    pub fn take_resync(&mut self) -> bool {
        std::mem::take(&mut self.resync)
    }
}

impl PeerMacs {
    pub fn new(map: HashMap<MapData, u64, u32>) -> Self {
        Self { map, failed: 0 }
    }

    /// Writes and removes what `pending` holds, and empties it.
    pub fn apply(&mut self, pending: &mut Pending) {
        for (mac, peer) in pending.learnt.drain(..) {
            self.write(mac, peer);
        }
        for mac in pending.forgotten.drain(..) {
            let _ = self.map.remove(&mac_key(mac.0));
        }
    }

    /// Makes the map equal to `live` (a snapshot of the remote table's live
    /// entries, taken under the MAC lock): removes what is absent or
    /// elsewhere there, writes what is missing. Not on the hot path: a
    /// system call per entry.
    pub fn sync(&mut self, live: &StdHashMap<u64, u32>) {
        let stale: Vec<u64> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, peer)| live.get(key) != Some(peer))
            .map(|(key, _)| key)
            .collect();
        for key in stale {
            let _ = self.map.remove(&key);
        }
        for (&key, &peer) in live {
            if self.map.get(&key, 0).ok() != Some(peer)
                && let Err(error) = self.map.insert(key, peer, 0)
            {
                self.refused(error);
            }
        }
    }

    /// The snapshot [`PeerMacs::sync`] takes.
    pub fn snapshot(remote: &MacTable<ShortId>, now: Instant) -> StdHashMap<u64, u32> {
        remote
            .live(now)
            .map(|(mac, peer)| (mac_key(mac.0), u32::from(peer.0)))
            .collect()
    }

    fn write(&mut self, mac: Mac, peer: ShortId) {
        if let Err(error) = self.map.insert(mac_key(mac.0), u32::from(peer.0), 0) {
            self.refused(error);
        }
    }

    fn refused(&mut self, error: aya::maps::MapError) {
        self.failed += 1;
        if self.failed == 1 {
            tracing::warn!(%error, "cannot write a MAC into PEER_MACS (further failures only counted): its frames flood");
        }
    }
}
