//! What the kernel's programs carried per neighbour (`FASTDP_TRAFFIC`, one
//! slot per short id per CPU), read for the status. Only the slots of
//! neighbours fastdp has ever carried for are read: one system call per
//! neighbour rather than per possible short id, and a neighbour that went
//! away keeps its figures, so totals never go down.

use std::collections::BTreeSet;

use aya::maps::{MapData, PerCpuArray};
use weave_common::fastdp::PeerTraffic;

use crate::overlay::forwarding::{NeighbourTraffic, ShortId};

pub(crate) struct TrafficReader {
    map: PerCpuArray<MapData, PeerTraffic>,
    carried: BTreeSet<ShortId>,
}

impl TrafficReader {
    pub(crate) const fn new(map: PerCpuArray<MapData, PeerTraffic>) -> Self {
        Self {
            map,
            carried: BTreeSet::new(),
        }
    }

    /// Neighbours the programs may now carry frames for.
    pub(crate) fn note(&mut self, carried: impl IntoIterator<Item = ShortId>) {
        self.carried.extend(carried);
    }

    /// Every noted neighbour with something counted, summed over CPUs.
    pub(crate) fn read(&self) -> Vec<NeighbourTraffic> {
        self.carried
            .iter()
            .filter_map(|&peer| {
                let per_cpu = self
                    .map
                    .get(&u32::from(peer.0), 0)
                    .inspect_err(|e| tracing::debug!(%peer, error = %e, "reading fastdp traffic"))
                    .ok()?;
                let sum = per_cpu
                    .iter()
                    .fold(PeerTraffic::default(), |a, t| a.plus(*t));
                (sum != PeerTraffic::default()).then(|| NeighbourTraffic {
                    peer,
                    dataplane: "fastdp".to_string(),
                    sent_frames: sum.sent_frames,
                    sent_bytes: sum.sent_bytes,
                    received_frames: sum.received_frames,
                    received_bytes: sum.received_bytes,
                    dropped: 0,
                })
            })
            .collect()
    }
}
