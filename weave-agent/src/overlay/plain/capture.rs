//! Bridge to peers: frames captured on the datapath port, wrapped in VXLAN
//! and sent where their plan says (sealed for each next hop in password
//! mode, through scratch slots).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use super::Shared;
use crate::overlay::carry::{Carrier, Tally, carry_out};
use crate::overlay::counters::DropReason;
use crate::overlay::engine::BATCH;
use crate::overlay::forwarding::ShortId;
use crate::overlay::mmsg::{Batch, RecvBatch, SendOutcome, SendQueue};
use crate::overlay::routes::RoutesReader;
use crate::overlay::seal_slots::SealSlots;
use crate::overlay::sys;
use crate::overlay::verdict::{FromBridge, from_bridge};
use crate::overlay::vxlan;

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
        if !shared.receive(&mut frames, shared.datapath.as_fd(), "datapath") {
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
        let mut out = ToPeers {
            frames: &frames,
            batch: queue.batch(core.udp.as_fd()),
            slots: &mut slots,
        };
        carry_out(&verdicts, routes, &mut out, &mut tally);
        let mut sent = tally.sends(out.finish());
        let sealed = slots.send(
            |i| frames.get(i).data,
            routes,
            &mut queue,
            core.udp.as_fd(),
            &mut tally,
        );
        sent += tally.sends(sealed);
        tally.counts.sent += sent;
    }
}

/// Where a captured frame goes: straight into the send batch, or through
/// a seal slot.
struct ToPeers<'q, 'd> {
    frames: &'d RecvBatch,
    batch: Batch<'q, 'd>,
    slots: &'q mut SealSlots,
}

impl ToPeers<'_, '_> {
    fn finish(self) -> SendOutcome {
        self.batch.finish()
    }
}

impl Carrier for ToPeers<'_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.frames.get(frame).len
    }

    fn deliver(&mut self, _frame: usize) {
        debug_assert!(false, "a frame from the bridge planned back into it");
    }

    fn send_clear(&mut self, frame: usize, vni: u32, to: &SocketAddr) {
        let data = self.frames.get(frame).data;
        self.batch.push(Some(vxlan::header(vni)), data, Some(to));
    }

    fn seal(
        &mut self,
        frame: usize,
        vni: u32,
        hop: ShortId,
        to: SocketAddr,
        _sole: bool,
    ) -> Result<(), DropReason> {
        self.slots.push(frame, vni, hop, to);
        Ok(())
    }
}
