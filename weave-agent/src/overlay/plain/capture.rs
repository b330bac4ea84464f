//! Bridge to peers: frames captured on the datapath port, wrapped in VXLAN
//! and sent where their plan says (sealed for each next hop in password
//! mode, through scratch slots).

use std::os::fd::AsFd as _;
use std::time::Instant;

use super::Shared;
use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::RoutesReader;
use crate::overlay::decide::verdict::{FromBridge, from_bridge};
use crate::overlay::engine::BATCH;
use crate::overlay::engine::carry::{Carrier, Onward, Tally, carry_out, send_sealed};
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::sys;
use crate::overlay::sys::mmsg::{Batch, RecvBatch, SendQueue};
use crate::overlay::wire::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared) {
    let core = &shared.core;
    let mut frames = RecvBatch::new(BATCH, core.max_frame);
    let mut queue = SendQueue::new(SEND_QUEUE, core.udp_family);
    let mut verdicts: Vec<FromBridge> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&core.routes);
    let mut slots = SealSlots::new(core.max_frame);
    while !core.stopping() {
        if !super::receive(&mut frames, shared.datapath.as_fd(), "datapath") {
            continue;
        }
        let now = Instant::now();
        let routes = reader.refresh(&core.routes);
        core.decide(frames.len(), now, &mut verdicts, None, |macs, i| {
            let frame = frames.get(i);
            if sys::packet_type(frame.addr) == sys::PACKET_OUTGOING {
                // Sent by this host (a kernel without
                // PACKET_IGNORE_OUTGOING shows them): not for peers.
                FromBridge::Local
            } else if frame.truncated {
                FromBridge::Drop(DropReason::Oversize)
            } else {
                from_bridge(frame.data, core.max_frame, routes, macs, now)
            }
        });
        let mut tally = Tally::new(&core.counters, "to peers");
        let mut batch = queue.batch(core.udp.as_fd());
        let mut out = ToPeers {
            frames: &frames,
            batch: &mut batch,
        };
        carry_out(&verdicts, routes, &mut out, &mut slots, &mut tally);
        let mut sent = tally.sends(batch.finish());
        let sealing = (&mut queue, core.udp.as_fd());
        sent += send_sealed(
            &mut slots,
            |i| frames.get(i).data,
            routes,
            sealing,
            core.bridge(),
            &mut tally,
        );
        tally.counts.sent += sent;
    }
}

/// Captured frames go straight into the send batch (sealed ones through
/// seal slots: the capture buffers have no room around a frame).
struct ToPeers<'b, 'q, 'd> {
    frames: &'d RecvBatch,
    batch: &'b mut Batch<'q, 'd>,
}

impl Carrier for ToPeers<'_, '_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.frames.get(frame).len
    }

    fn send_clear(&mut self, frame: usize, onward: &Onward) {
        let data = self.frames.get(frame).data;
        let header = vxlan::header(onward.vni);
        self.batch.push(Some(header), data, Some(&onward.to));
    }
}
