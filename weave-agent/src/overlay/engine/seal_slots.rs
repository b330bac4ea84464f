//! Password mode, for a frame that cannot be sealed where it lies: frames
//! going to peers are copied into scratch slots allocated once, sealed there
//! with the next hop's key (`overlay::seal`), and sent in batches. Each copy
//! is needed: a frame flooded to several neighbours is sealed under a
//! different key for each, and the plain engine's receive buffers have no
//! room around a frame for the seal.
//!
//! Frames too big for the path to their hop (`mesh::path_mtu`) wait here
//! too, and go on the slow path once the batch is sent: fragmented (and
//! each fragment sealed in password mode), or answered with an ICMP
//! "fragmentation needed" into the bridge, or dropped (`wire::too_big`
//! says which). Only a path that shrank takes it, and only for its big
//! frames; a single datagram or frame per `sendmmsg` is fine there.

use std::os::fd::BorrowedFd;

use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::Routes;
use crate::overlay::engine::carry::{Onward, Tally};
use crate::overlay::sys::mmsg::{SendOutcome, SendQueue};
use crate::overlay::wire::seal;
use crate::overlay::wire::too_big::{self, Remedy};
use crate::overlay::wire::vxlan;

/// Frames sealed between two `sendmmsg` calls.
const SLOTS: usize = 64;

pub(crate) struct SealSlots {
    slot: usize,
    scratch: Box<[u8]>,
    /// Frames waiting to be sealed: which one of the batch, and where to.
    pending: Vec<(usize, Onward)>,
    /// Frames too big for their hop's path: which, where to, the limit.
    too_big: Vec<(usize, Onward, usize)>,
    /// Where a fragment is cut, then sealed (password mode).
    fragment: Box<[u8]>,
    sealed_fragment: Box<[u8]>,
    /// Where an ICMP answer is written, and its one-message queue.
    answer: [u8; too_big::MAX_FRAG_NEEDED],
    bridge_queue: SendQueue,
}

impl SealSlots {
    /// Room for frames of up to `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        let slot = seal::FRAME_OFFSET + max_frame + seal::TAG_LEN;
        Self {
            slot,
            scratch: vec![0u8; SLOTS * slot].into_boxed_slice(),
            pending: Vec::with_capacity(SLOTS * 4),
            too_big: Vec::new(),
            fragment: vec![0u8; max_frame].into_boxed_slice(),
            sealed_fragment: vec![0u8; slot].into_boxed_slice(),
            answer: [0; too_big::MAX_FRAG_NEEDED],
            // A packet socket's messages carry no address.
            bridge_queue: SendQueue::new(1, libc::AF_PACKET),
        }
    }

    /// Queues frame number `frame`, larger than `limit`, the largest frame
    /// the path to `onward.hop` takes.
    pub(crate) fn push_too_big(&mut self, frame: usize, onward: &Onward, limit: usize) {
        self.too_big.push((frame, *onward, limit));
    }

    /// Fragments (sealing each fragment in password mode) or answers what
    /// [`Self::push_too_big`] queued: fragments to the hop through `fd`,
    /// answers into the bridge through `bridge` (a packet socket on the
    /// datapath port; without one, such frames are dropped). Returns what
    /// went to peers.
    pub(crate) fn send_too_big<'f>(
        &mut self,
        frame_of: impl Fn(usize) -> &'f [u8],
        routes: &Routes,
        (queue, fd): (&mut SendQueue, BorrowedFd<'_>),
        bridge: Option<BorrowedFd<'_>>,
        tally: &mut Tally<'_>,
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let Self {
            too_big: pending,
            fragment,
            sealed_fragment,
            answer,
            bridge_queue,
            ..
        } = self;
        for (n, onward, limit) in pending.drain(..) {
            let frame = frame_of(n);
            match too_big::remedy(frame) {
                Remedy::Fragment => {
                    let keys = routes.keys(onward.hop);
                    let mut failed = false;
                    let cut = too_big::fragment(frame, limit, fragment, |piece| {
                        let mut batch = queue.batch(fd);
                        if !routes.encrypted() {
                            batch.push(Some(vxlan::header(onward.vni)), piece, Some(&onward.to));
                        } else if let Some(len) =
                            keys.and_then(|k| seal_into(sealed_fragment, k, onward.vni, piece))
                        {
                            batch.push(None, &sealed_fragment[..len], Some(&onward.to));
                        } else {
                            failed = true;
                        }
                        outcome.merge(batch.finish());
                    });
                    match cut {
                        Some(n) if !failed => tally.counts.path_mtu_fragments += n as u64,
                        _ => tally.dropped(DropReason::PathMtu, frame.len(), None),
                    }
                }
                Remedy::TellSender => {
                    let answered = bridge.zip(too_big::frag_needed(frame, limit, answer));
                    let Some((bridge, len)) = answered else {
                        tally.dropped(DropReason::PathMtu, frame.len(), None);
                        continue;
                    };
                    let mut batch = bridge_queue.batch(bridge);
                    batch.push(None, &answer[..len], None);
                    let into_bridge = batch.finish();
                    if into_bridge.sent == 1 {
                        tally.counts.path_mtu_icmp += 1;
                    } else {
                        tally.dropped(DropReason::PathMtu, frame.len(), None);
                    }
                }
                Remedy::Drop => tally.dropped(DropReason::PathMtu, frame.len(), None),
            }
        }
        outcome
    }

    /// Queues frame number `frame` (of the caller's batch) for `onward`.
    pub(crate) fn push(&mut self, frame: usize, onward: &Onward) {
        self.pending.push((frame, *onward));
    }

    /// Seals and sends what was queued; `frame_of` gives frame `n` of the
    /// caller's batch (the inner Ethernet frame, in clear).
    pub(crate) fn send<'f>(
        &mut self,
        frame_of: impl Fn(usize) -> &'f [u8],
        routes: &Routes,
        queue: &mut SendQueue,
        fd: BorrowedFd<'_>,
        tally: &mut Tally<'_>,
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        for chunk in self.pending.chunks(SLOTS) {
            let mut batch = queue.batch(fd);
            for ((n, p), slot) in chunk.iter().zip(self.scratch.chunks_mut(self.slot)) {
                let frame = frame_of(*n);
                let Some(keys) = routes.keys(p.hop) else {
                    tally.dropped(DropReason::NoRoute, frame.len(), None);
                    continue;
                };
                let Some(room) = slot.get_mut(..seal::FRAME_OFFSET + frame.len() + seal::TAG_LEN)
                else {
                    tally.dropped(DropReason::Oversize, frame.len(), None);
                    continue;
                };
                room[..vxlan::HEADER_LEN].copy_from_slice(&vxlan::header(p.vni));
                room[seal::FRAME_OFFSET..seal::FRAME_OFFSET + frame.len()].copy_from_slice(frame);
                match keys.send.seal(room, frame.len()) {
                    Ok(len) => {
                        let sealed: &[u8] = room;
                        batch.push(None, &sealed[..len], Some(&p.to));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "frame not sealed");
                        tally.dropped(DropReason::SendFailed, frame.len(), None);
                    }
                }
            }
            outcome.merge(batch.finish());
        }
        self.pending.clear();
        outcome
    }
}

/// Seals `frame` under VXLAN header `vni` with `keys` into `room`; the
/// sealed packet's length, `None` if it does not fit or the key is used up.
fn seal_into(room: &mut [u8], keys: &seal::PeerKeys, vni: u32, frame: &[u8]) -> Option<usize> {
    let room = room.get_mut(..seal::FRAME_OFFSET + frame.len() + seal::TAG_LEN)?;
    room[..vxlan::HEADER_LEN].copy_from_slice(&vxlan::header(vni));
    room[seal::FRAME_OFFSET..seal::FRAME_OFFSET + frame.len()].copy_from_slice(frame);
    keys.send.seal(room, frame.len()).ok()
}
