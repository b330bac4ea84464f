//! Bridge to peers: frames the datapath program redirected into the `AF_XDP`
//! socket, tagged with their destination peer, wrapped in VXLAN and sent
//! where their plan says, straight from the UMEM; consecutive frames of one
//! size for one peer leave as one UDP GSO datagram (`gso`). In password mode
//! a frame with a single next hop is sealed in place in its chunk
//! (`sealed`), one flooded to several through seal slots.

use std::ops::Range;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Instant;

use weave_common::datapath::{META_LEN, meta_dest};

use super::Shared;
use super::sealed::seal_in_place;
use super::umem::{BridgeRx, Frame, Memory};
use crate::overlay::counters::DropReason;
use crate::overlay::decide::macs::MacJournal;
use crate::overlay::decide::routes::RoutesReader;
use crate::overlay::decide::verdict::{FromBridge, from_bridge_tagged};
use crate::overlay::engine::carry::{
    Carrier, Onward, Tally, carry_out, for_each_sole_seal, send_sealed,
};
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::engine::{BATCH, STOP_CHECK};
use crate::overlay::forwarding::ShortId;
use crate::overlay::sys::gso::{GsoBatch, GsoQueue};
use crate::overlay::sys::mmsg::SendQueue;
use crate::overlay::sys::wait_readable;
use crate::overlay::wire::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

/// Password mode: where a frame sealed in place lies in its chunk, or why it
/// was dropped; `None` for a frame not sealed in place.
type SealedInPlace = Option<Result<Range<usize>, DropReason>>;

pub(super) fn run(shared: &Shared, mut half: BridgeRx) {
    let core = &shared.core;
    let mem = Arc::clone(&half.mem);
    let mut frames: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut tags: Vec<Option<ShortId>> = Vec::with_capacity(BATCH);
    let mut queue = GsoQueue::new(SEND_QUEUE, core.udp_family);
    let mut verdicts: Vec<FromBridge> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&core.routes);
    let mut changes = MacJournal::default();
    let mut in_place: Vec<SealedInPlace> = Vec::with_capacity(BATCH);
    // Password mode: floods, sealed for each child in scratch slots.
    let mut slots = SealSlots::new(core.max_frame);
    let mut slot_queue = SendQueue::new(SEND_QUEUE, core.udp_family);
    while !core.stopping() {
        if half.rx.available() == 0 && !wait_readable(mem.borrowed_fd(), STOP_CHECK) {
            continue;
        }
        half.receive(BATCH as u32, &mut frames);
        if frames.is_empty() {
            continue;
        }
        let now = Instant::now();
        let routes = reader.refresh(&core.routes);
        tags.clear();
        tags.extend(
            frames
                .iter_mut()
                .map(|f| take_tag(mem.chunk_mut(&mut f.chunk), f.start)),
        );
        if tags.iter().any(Option::is_none) {
            untagged(shared);
        }
        core.decide(
            frames.len(),
            now,
            &mut verdicts,
            Some(&mut changes),
            |macs, i| {
                from_bridge_tagged(
                    mem.frame(&frames[i]),
                    core.max_frame,
                    tags[i],
                    routes,
                    macs,
                    now,
                )
            },
        );
        in_place.clear();
        in_place.resize(frames.len(), None);
        for_each_sole_seal(&verdicts, routes, |i, onward| {
            let f = &mut frames[i];
            let sealed = routes
                .keys(onward.hop)
                .ok_or(DropReason::NoRoute)
                .and_then(|keys| {
                    seal_in_place(
                        mem.chunk_mut(&mut f.chunk),
                        f.start,
                        f.len,
                        onward.vni,
                        keys,
                    )
                });
            in_place[i] = Some(sealed);
        });
        let mut tally = Tally::new(&core.counters, "to peers");
        let mut batch = queue.batch(core.udp.as_fd());
        let mut out = ToPeers {
            mem: &mem,
            frames: &frames,
            in_place: &in_place,
            batch: &mut batch,
        };
        carry_out(&verdicts, routes, &mut out, &mut slots, &mut tally);
        let mut sent = tally.sends(batch.finish());
        let frame_of = |i: usize| mem.frame(&frames[i]);
        let sealing = (&mut slot_queue, core.udp.as_fd());
        sent += send_sealed(&mut slots, frame_of, routes, sealing, &mut tally);
        tally.counts.sent += sent;
        // Every frame of the batch is done with: back to the kernel.
        half.give_back(&mut frames);
        drop(tally);
        shared.mirror(&mut changes);
    }
}

/// Where a frame from the bridge goes: into the GSO batch straight from the
/// UMEM (sealed in place first in password mode, or through a seal slot
/// when it goes to several hops).
struct ToPeers<'b, 'q, 'd> {
    mem: &'d Memory,
    frames: &'d [Frame],
    in_place: &'d [SealedInPlace],
    batch: &'b mut GsoBatch<'q, 'd>,
}

impl Carrier for ToPeers<'_, '_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.frames[frame].len
    }

    fn send_clear(&mut self, frame: usize, onward: &Onward) {
        let data = self.mem.frame(&self.frames[frame]);
        self.batch.push(vxlan::header(onward.vni), data, &onward.to);
    }

    fn seal_in_place(&mut self, frame: usize, onward: &Onward) -> Option<Result<(), DropReason>> {
        let sealed = self.in_place[frame].clone()?.map(|range| {
            let chunk = self.mem.chunk(&self.frames[frame].chunk);
            // Sealed packets of one size still share a GSO datagram.
            let (header, rest) = chunk[range].split_at(vxlan::HEADER_LEN);
            let header = header.try_into().unwrap_or_default();
            self.batch.push(header, rest, &onward.to);
        });
        Some(sealed)
    }
}

/// The destination the datapath program wrote in front of the frame at
/// `start` of `chunk`, if it wrote one; clears it, so that a stale tag can
/// never be read for a later frame of the same chunk.
fn take_tag(chunk: &mut [u8], start: usize) -> Option<ShortId> {
    let word = chunk.get_mut(start.checked_sub(META_LEN)?..start)?;
    let tag = u32::from_ne_bytes(word.try_into().ok()?);
    word.fill(0);
    meta_dest(tag).map(ShortId)
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
