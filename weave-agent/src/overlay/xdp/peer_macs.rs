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
//!
//! The agent is the map's only writer, so it keeps its own copy of what it
//! wrote (`written`): a resync compares in memory and makes a system call
//! only for what differs, instead of reading the whole map back.

use std::collections::HashMap as StdHashMap;
use std::time::Instant;

use aya::maps::{HashMap, MapData};
use weave_common::datapath::mac_key;

use crate::overlay::decide::mac_table::MacTable;
use crate::overlay::decide::macs::MacJournal;
use crate::overlay::forwarding::ShortId;

pub(super) struct PeerMacs {
    map: HashMap<MapData, u64, u32>,
    /// What the map holds: what this agent wrote and did not remove.
    written: StdHashMap<u64, u32>,
    /// Writes the kernel refused (map full): counted, logged once.
    failed: u64,
}

impl PeerMacs {
    /// The mirror over `map`, which it empties first (a map pinned or
    /// reused from an earlier agent may hold entries nobody keeps track of).
    pub(super) fn emptied(mut map: HashMap<MapData, u64, u32>) -> Self {
        let keys: Vec<u64> = map.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = map.remove(&key);
        }
        Self {
            map,
            written: StdHashMap::new(),
            failed: 0,
        }
    }

    /// Writes and removes what `changes` holds, and empties it.
    pub(super) fn apply(&mut self, changes: &mut MacJournal) {
        for (mac, peer) in changes.learnt.drain(..) {
            self.write(mac_key(mac.0), u32::from(peer.0));
        }
        for mac in changes.forgotten.drain(..) {
            self.remove(mac_key(mac.0));
        }
    }

    /// Makes the map equal to `live` (a snapshot of the remote table's live
    /// entries, taken under the MAC lock).
    pub(crate) fn sync(&mut self, live: &StdHashMap<u64, u32>) {
        let (stale, missing) = differences(&self.written, live);
        for key in stale {
            self.remove(key);
        }
        for (key, peer) in missing {
            self.write(key, peer);
        }
    }

    /// The snapshot [`PeerMacs::sync`] takes.
    pub(super) fn snapshot(remote: &MacTable<ShortId>, now: Instant) -> StdHashMap<u64, u32> {
        remote
            .live(now)
            .map(|(mac, peer)| (mac_key(mac.0), u32::from(peer.0)))
            .collect()
    }

    fn write(&mut self, key: u64, peer: u32) {
        if self.written.get(&key) == Some(&peer) {
            return;
        }
        match self.map.insert(key, peer, 0) {
            Ok(()) => {
                self.written.insert(key, peer);
            }
            Err(error) => {
                // Whatever the map held for it is gone or stale: forget it.
                self.remove(key);
                self.failed += 1;
                if self.failed == 1 {
                    tracing::warn!(%error, "cannot write a MAC into PEER_MACS (further failures only counted): its frames flood");
                }
            }
        }
    }

    fn remove(&mut self, key: u64) {
        if self.written.remove(&key).is_some() {
            let _ = self.map.remove(&key);
        }
    }
}

/// What makes `written` equal to `live`: the keys to remove (absent from
/// `live`, or there with another peer) and the entries to write (absent
/// from `written`, or there with another peer). In memory: a resync costs
/// system calls only for these.
fn differences(
    written: &StdHashMap<u64, u32>,
    live: &StdHashMap<u64, u32>,
) -> (Vec<u64>, Vec<(u64, u32)>) {
    let stale = written
        .iter()
        .filter(|&(key, peer)| live.get(key) != Some(peer))
        .map(|(key, _)| *key)
        .collect();
    let missing = live
        .iter()
        .filter(|&(key, peer)| written.get(key) != Some(peer))
        .map(|(key, peer)| (*key, *peer))
        .collect();
    (stale, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_of_an_unchanged_table_touches_nothing_and_a_change_only_itself() {
        let live: StdHashMap<u64, u32> = (0..8192).map(|k| (k, (k % 7) as u32)).collect();
        let (stale, missing) = differences(&live, &live);
        assert!(stale.is_empty() && missing.is_empty());
        let mut changed = live.clone();
        changed.remove(&1);
        changed.insert(2, 99);
        changed.insert(10_000, 1);
        let (mut stale, mut missing) = differences(&live, &changed);
        stale.sort_unstable();
        missing.sort_unstable();
        assert_eq!(stale, vec![1, 2]);
        assert_eq!(missing, vec![(2, 99), (10_000, 1)]);
    }
}
