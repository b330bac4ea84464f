//! Bridge to peers: frames the datapath program redirected into the `AF_XDP`
//! socket, tagged with their destination peer (TCP super-frames cut into
//! segments first, `super_frames`), wrapped in VXLAN and sent
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
use super::super_frames;
use super::umem::{BridgeRx, Frame, Memory};
use crate::overlay::counters::DropReason;
use crate::overlay::decide::macs::MacJournal;
use crate::overlay::decide::routes::RoutesReader;
use crate::overlay::decide::verdict::{FromBridge, from_bridge_tagged};
use crate::overlay::engine::BATCH;
use crate::overlay::engine::carry::{
    Carrier, Onward, Tally, carry_out, for_each_sole_seal, send_sealed,
};
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::forwarding::ShortId;
use crate::overlay::sys::gso::{GsoBatch, GsoQueue};
use crate::overlay::sys::mmsg::SendQueue;
use crate::overlay::wire::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

/// Password mode: where a frame sealed in place lies in its chunk, or why it
/// was dropped; `None` for a frame not sealed in place.
type SealedInPlace = Option<Result<Range<usize>, DropReason>>;

/// The bridge-to-peers direction: the receiving half of the UMEM and the
/// buffers of its batches, allocated once. Run by whichever worker holds it
/// (see `drive`), one batch at a time.
pub(super) struct BridgeToPeers {
    shared: Arc<Shared>,
    half: BridgeRx,
    mem: Arc<Memory>,
    frames: Vec<Frame>,
    tags: Vec<Option<ShortId>>,
    queue: GsoQueue,
    verdicts: Vec<FromBridge>,
    reader: RoutesReader,
    changes: MacJournal,
    in_place: Vec<SealedInPlace>,
    /// Password mode: floods, sealed for each child in scratch slots.
    slots: SealSlots,
    slot_queue: SendQueue,
    cut_scratch: super_frames::Scratch,
}

impl BridgeToPeers {
    pub(super) fn new(shared: Arc<Shared>, half: BridgeRx) -> Self {
        let core = &shared.core;
        Self {
            frames: Vec::with_capacity(BATCH),
            tags: Vec::with_capacity(BATCH),
            queue: GsoQueue::new(SEND_QUEUE, core.udp_family),
            verdicts: Vec::with_capacity(BATCH),
            reader: RoutesReader::new(&core.routes),
            changes: MacJournal::default(),
            in_place: Vec::with_capacity(BATCH),
            slots: SealSlots::new(core.max_frame),
            slot_queue: SendQueue::new(SEND_QUEUE, core.udp_family),
            cut_scratch: super_frames::Scratch::default(),
            mem: Arc::clone(&half.mem),
            half,
            shared,
        }
    }

    /// Carries one batch from the RX ring to peers, without waiting; false
    /// when there was nothing to take (a read of the ring's producer index,
    /// no system call).
    pub(super) fn run_batch(&mut self) -> bool {
        let Self {
            shared,
            half,
            mem,
            frames,
            tags,
            queue,
            verdicts,
            reader,
            changes,
            in_place,
            slots,
            slot_queue,
            cut_scratch,
        } = self;
        let core = &shared.core;
        let mem = &**mem;
        if half.rx.available() == 0 {
            return false;
        }
        half.receive(BATCH as u32, frames);
        if frames.is_empty() {
            return false;
        }
        let mut tally = Tally::new(&core.counters, "to peers");
        super_frames::prepare(
            half,
            frames,
            cut_scratch,
            core.max_frame,
            &mut tally,
            &shared.no_frame,
        );
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
        // A super-frame's segments are decided once (MAC learnt, peer
        // looked up), by their first.
        let mut last = None;
        core.decide(frames.len(), now, verdicts, Some(changes), |macs, i| {
            if let Some(verdict) = last.filter(|_| cut_scratch.follows(i)) {
                return verdict;
            }
            let verdict = from_bridge_tagged(
                mem.frame(&frames[i]),
                core.max_frame,
                tags[i],
                routes,
                macs,
                now,
            );
            last = Some(verdict);
            verdict
        });
        in_place.clear();
        in_place.resize(frames.len(), None);
        let inner_len = |frames: &Vec<Frame>, i: usize| frames[i].len;
        for_each_sole_seal(verdicts, routes, frames, inner_len, |frames, i, onward| {
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
        let mut batch = queue.batch(core.udp.as_fd());
        let mut out = ToPeers {
            mem,
            frames,
            in_place,
            batch: &mut batch,
        };
        carry_out(verdicts, routes, &mut out, slots, &mut tally);
        let mut sent = tally.sends(batch.finish());
        let frame_of = |i: usize| mem.frame(&frames[i]);
        let sealing = (&mut *slot_queue, core.udp.as_fd());
        sent += send_sealed(slots, frame_of, routes, sealing, core.bridge(), &mut tally);
        tally.counts.sent += sent;
        // Every frame of the batch is done with: back to the kernel.
        half.give_back(frames);
        drop(tally);
        shared.mirror(changes);
        true
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
