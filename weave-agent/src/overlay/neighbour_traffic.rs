//! What a userspace engine carried to and from each neighbour, for the
//! per-peer rates of the status page and metrics. One slot per possible
//! short id (12 bits), allocated once: counting never allocates, and a
//! peer's slot is found by index, not by hashing.
//!
//! Workers count a batch in a [`TrafficTally`], which adds runs of frames
//! for one neighbour to the shared atomics when the neighbour changes (and
//! at the end of the batch): a batch of frames for one peer costs a couple
//! of atomic additions, not one per frame.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::overlay::forwarding::{NeighbourTraffic, ShortId};

/// Short ids are 12 bits.
const SLOTS: usize = 1 << 12;

#[derive(Debug, Default)]
struct Slot {
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    received_frames: AtomicU64,
    received_bytes: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct NeighbourTable {
    slots: Box<[Slot]>,
}

impl Default for NeighbourTable {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl NeighbourTable {
    fn add(&self, run: &Run) {
        let Some(slot) = self.slots.get(usize::from(run.peer.0)) else {
            return;
        };
        let (frames, bytes) = match run.way {
            Way::Sent => (&slot.sent_frames, Some(&slot.sent_bytes)),
            Way::Received => (&slot.received_frames, Some(&slot.received_bytes)),
            Way::Dropped => (&slot.dropped, None),
        };
        frames.fetch_add(run.frames, Relaxed);
        if let Some(bytes) = bytes {
            bytes.fetch_add(run.bytes, Relaxed);
        }
    }

    /// Every neighbour with something counted, labelled `dataplane`.
    pub(crate) fn snapshot(&self, dataplane: &str) -> Vec<NeighbourTraffic> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                let t = NeighbourTraffic {
                    peer: ShortId(id as u16),
                    dataplane: dataplane.to_string(),
                    sent_frames: s.sent_frames.load(Relaxed),
                    sent_bytes: s.sent_bytes.load(Relaxed),
                    received_frames: s.received_frames.load(Relaxed),
                    received_bytes: s.received_bytes.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                };
                (t.sent_frames + t.received_frames + t.dropped > 0).then_some(t)
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Sent,
    Received,
    Dropped,
}

/// Consecutive frames of one way for one neighbour.
#[derive(Clone, Copy, Debug)]
struct Run {
    peer: ShortId,
    way: Way,
    frames: u64,
    bytes: u64,
}

/// One batch's traffic; added to the table as runs end and when dropped.
pub(crate) struct TrafficTally<'a> {
    table: &'a NeighbourTable,
    run: Option<Run>,
}

impl<'a> TrafficTally<'a> {
    pub(crate) const fn new(table: &'a NeighbourTable) -> Self {
        Self { table, run: None }
    }

    pub(crate) fn sent(&mut self, peer: ShortId, bytes: usize) {
        self.count(peer, Way::Sent, bytes);
    }

    pub(crate) fn received(&mut self, peer: ShortId, bytes: usize) {
        self.count(peer, Way::Received, bytes);
    }

    pub(crate) fn dropped(&mut self, peer: ShortId) {
        self.count(peer, Way::Dropped, 0);
    }

    fn count(&mut self, peer: ShortId, way: Way, bytes: usize) {
        match &mut self.run {
            Some(run) if run.peer == peer && run.way == way => {
                run.frames += 1;
                run.bytes += bytes as u64;
            }
            other => {
                if let Some(done) = other.replace(Run {
                    peer,
                    way,
                    frames: 1,
                    bytes: bytes as u64,
                }) {
                    self.table.add(&done);
                }
            }
        }
    }
}

impl Drop for TrafficTally<'_> {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            self.table.add(&run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_add_up_per_neighbour_and_way() {
        let table = NeighbourTable::default();
        {
            let mut tally = TrafficTally::new(&table);
            tally.sent(ShortId(7), 100);
            tally.sent(ShortId(7), 50);
            tally.received(ShortId(7), 60);
            tally.sent(ShortId(9), 10);
            tally.dropped(ShortId(9));
            tally.sent(ShortId(7), 1);
        }
        let snap = table.snapshot("xdp");
        assert_eq!(snap.len(), 2);
        let seven = &snap[0];
        assert_eq!(
            (seven.peer, seven.sent_frames, seven.sent_bytes),
            (ShortId(7), 3, 151)
        );
        assert_eq!((seven.received_frames, seven.received_bytes), (1, 60));
        assert_eq!(seven.dataplane, "xdp");
        let nine = &snap[1];
        assert_eq!(
            (nine.sent_frames, nine.sent_bytes, nine.dropped),
            (1, 10, 1)
        );
    }

    #[test]
    fn an_out_of_range_id_is_ignored_not_a_panic() {
        let table = NeighbourTable::default();
        TrafficTally::new(&table).sent(ShortId(0xffff), 1);
        assert!(table.snapshot("plain").is_empty());
    }
}
