//! Password mode, for a frame that cannot be sealed where it lies: frames
//! going to peers are copied into scratch slots allocated once, sealed there
//! with the next hop's key (`overlay::seal`), and sent in batches. Each copy
//! is needed: a frame flooded to several neighbours is sealed under a
//! different key for each, and the plain engine's receive buffers have no
//! room around a frame for the seal.

use std::os::fd::BorrowedFd;

use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::Routes;
use crate::overlay::engine::carry::{Onward, Tally};
use crate::overlay::sys::mmsg::{SendOutcome, SendQueue};
use crate::overlay::wire::seal;
use crate::overlay::wire::vxlan;

/// Frames sealed between two `sendmmsg` calls.
const SLOTS: usize = 64;

pub(crate) struct SealSlots {
    slot: usize,
    scratch: Box<[u8]>,
    /// Frames waiting to be sealed: which one of the batch, and where to.
    pending: Vec<(usize, Onward)>,
}

impl SealSlots {
    /// Room for frames of up to `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        let slot = seal::FRAME_OFFSET + max_frame + seal::TAG_LEN;
        Self {
            slot,
            scratch: vec![0u8; SLOTS * slot].into_boxed_slice(),
            pending: Vec::with_capacity(SLOTS * 4),
        }
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
