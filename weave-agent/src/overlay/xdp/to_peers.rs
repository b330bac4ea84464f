//! Bridge to peers: frames the datapath program redirected into the AF_XDP
//! socket, tagged with their destination peer, wrapped in VXLAN and sent
//! where their plan says, straight from the UMEM; consecutive frames of one
//! size for one peer leave as one UDP GSO datagram (`gso`). In password mode
//! a frame with a single next hop is sealed in place in its chunk
//! (`sealed`), one flooded to several through seal slots.

use std::os::fd::AsFd;
use std::time::Instant;

use weave_common::datapath::{META_LEN, meta_dest};
use xdpilone::xdp::XdpDesc;

use super::sealed::seal_in_place;
use super::umem::{BridgeRx, Memory, chunk_of};
use super::{Shared, wait_readable};
use crate::overlay::carry::{Carrier, Onward, Tally, carry_out, send_sealed};
use crate::overlay::counters::DropReason;
use crate::overlay::engine::{BATCH, STOP_CHECK};
use crate::overlay::forwarding::ShortId;
use crate::overlay::gso::{GsoBatch, GsoQueue};
use crate::overlay::macs::MacJournal;
use crate::overlay::mmsg::SendQueue;
use crate::overlay::routes::{Routes, RoutesReader};
use crate::overlay::seal_slots::SealSlots;
use crate::overlay::verdict::{FromBridge, from_bridge_tagged};
use crate::overlay::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared, mut half: BridgeRx) {
    let core = &shared.core;
    let mem = half.mem.clone();
    let mut descs: Vec<XdpDesc> = Vec::with_capacity(BATCH);
    let mut queue = GsoQueue::new(SEND_QUEUE, core.udp_family);
    let mut verdicts: Vec<FromBridge> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&core.routes);
    let mut changes = MacJournal::default();
    // Password mode: floods, sealed for each child in scratch slots.
    let mut slots = SealSlots::new(core.max_frame);
    let mut slot_queue = SendQueue::new(SEND_QUEUE, core.udp_family);
    while !core.stopping() {
        if half.rx.available() == 0 && !wait_readable(mem.borrowed_fd(), STOP_CHECK) {
            continue;
        }
        descs.clear();
        {
            let mut ring = half.rx.receive(BATCH as u32);
            descs.extend(ring.by_ref());
            ring.release();
        }
        if descs.is_empty() {
            continue;
        }
        let now = Instant::now();
        let routes = reader.refresh(&core.routes);
        core.decide(
            descs.len(),
            now,
            &mut verdicts,
            Some(&mut changes),
            |macs, i| {
                let desc = &descs[i];
                // SAFETY: the frame came out of the RX ring and goes back to
                // the fill ring only after this batch.
                let Some(frame) = (unsafe { mem.frame(desc.addr, desc.len as usize) }) else {
                    return FromBridge::Drop(DropReason::Malformed);
                };
                let tag = take_tag(&mem, desc.addr).map(ShortId);
                if tag.is_none() {
                    untagged(shared);
                }
                from_bridge_tagged(frame, core.max_frame, tag, routes, macs, now)
            },
        );
        let mut tally = Tally::new(&core.counters, "to peers");
        let mut batch = queue.batch(core.udp.as_fd());
        let mut out = ToPeers {
            mem: &mem,
            descs: &descs,
            routes,
            batch: &mut batch,
        };
        carry_out(&verdicts, routes, &mut out, &mut slots, &mut tally);
        let mut sent = tally.sends(batch.finish());
        // SAFETY: as above; the frames go back only after this.
        let frame_of = |i: usize| unsafe { mem.frame(descs[i].addr, descs[i].len as usize) };
        let sealing = (&mut slot_queue, core.udp.as_fd());
        sent += send_sealed(
            &mut slots,
            |i| frame_of(i).unwrap_or_default(),
            routes,
            sealing,
            &mut tally,
        );
        tally.counts.sent += sent;
        // Every frame of the batch is done with: back to the kernel. A
        // reservation can be shorter than asked (it trusts a cached view of
        // the ring first), so repeat until every frame is back: a frame
        // left out would be lost to the fill ring for good.
        let mut rest = &descs[..];
        while !rest.is_empty() {
            let mut fill = half.fill.fill(rest.len() as u32);
            let n = fill.insert(rest.iter().map(|d| chunk_of(d.addr))) as usize;
            fill.commit();
            drop(fill);
            if n == 0 {
                // Cannot happen: the ring holds every receive frame.
                debug_assert!(false, "fill ring full");
                break;
            }
            rest = &rest[n..];
        }
        drop(tally);
        shared.mirror(&mut changes);
    }
}

/// Where a frame from the bridge goes: into the GSO batch straight from the
/// UMEM (sealed in place first in password mode, or through a seal slot
/// when it goes to several hops).
struct ToPeers<'b, 'q, 'd> {
    mem: &'d Memory,
    descs: &'d [XdpDesc],
    routes: &'d Routes,
    batch: &'b mut GsoBatch<'q, 'd>,
}

impl Carrier for ToPeers<'_, '_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.descs[frame].len as usize
    }

    fn send_clear(&mut self, frame: usize, onward: &Onward) {
        let desc = &self.descs[frame];
        // SAFETY: the frame is this worker's until it goes back to the fill
        // ring, after the batch is finished.
        if let Some(data) = unsafe { self.mem.frame(desc.addr, desc.len as usize) } {
            self.batch.push(vxlan::header(onward.vni), data, &onward.to);
        }
    }

    fn seal_in_place(&mut self, frame: usize, onward: &Onward) -> Option<Result<(), DropReason>> {
        let desc = &self.descs[frame];
        let sealed = self
            .routes
            .keys(onward.hop)
            .ok_or(DropReason::NoRoute)
            .and_then(|keys| {
                seal_in_place(self.mem, desc.addr, desc.len as usize, onward.vni, keys)
            })
            // SAFETY: as in `send_clear`; the sealed packet lies in the
            // frame's chunk, which nothing else in the batch refers to (its
            // only use).
            .and_then(|(at, len)| unsafe { self.mem.frame(at, len) }.ok_or(DropReason::Oversize))
            .map(|packet| {
                // Sealed packets of one size still share a GSO datagram.
                let (header, rest) = packet.split_at(vxlan::HEADER_LEN);
                let header = header.try_into().unwrap_or_default();
                self.batch.push(header, rest, &onward.to);
            });
        Some(sealed)
    }
}

/// The destination the datapath program wrote in front of the frame at
/// `addr`, if it wrote one; clears it, so that a stale tag can never be
/// read for a later frame of the same chunk.
fn take_tag(mem: &Memory, addr: u64) -> Option<u16> {
    let at = mem.at(addr.checked_sub(META_LEN as u64)?, META_LEN)?;
    if chunk_of(addr - META_LEN as u64) != chunk_of(addr) {
        return None;
    }
    // SAFETY: four bytes inside the chunk this worker owns until it goes
    // back to the fill ring (checked by `at` and just above).
    let word = unsafe {
        let word = at.cast::<u32>().read_unaligned();
        at.cast::<u32>().write_unaligned(0);
        word
    };
    meta_dest(word)
}

/// A frame reached the agent without a destination tag (no room for XDP
/// metadata, or a kernel whose copy mode drops it): the remote table is
/// consulted instead. Logged once, as it says something about the kernel.
fn untagged(shared: &Shared) {
    if !shared
        .untagged_seen
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "a frame reached the xdp data plane without a destination tag: looking destinations up in userspace"
        );
    }
}
