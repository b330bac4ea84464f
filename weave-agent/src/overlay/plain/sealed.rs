//! Password mode on the plain path: frames going to peers are copied into
//! scratch slots allocated once, sealed there with the next hop's key
//! (`overlay::seal`), and sent in batches. Each copy is needed anyway: a
//! frame flooded to several neighbours is sealed under a different key for
//! each, and a relayed one is sealed again for its next hop.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use crate::overlay::counters::{Counters, Counts, DropReason, dropped};
use crate::overlay::forwarding::ShortId;
use crate::overlay::mmsg::{SendOutcome, SendQueue};
use crate::overlay::routes::Routes;
use crate::overlay::seal;
use crate::overlay::vxlan;

/// Frames sealed between two `sendmmsg` calls.
const SLOTS: usize = 64;

/// A frame waiting to be sealed: which one, its VNI, and the hop.
#[derive(Clone, Copy, Debug)]
struct Pending {
    frame: usize,
    vni: u32,
    hop: ShortId,
    to: SocketAddr,
}

pub(crate) struct Sealed {
    slot: usize,
    scratch: Box<[u8]>,
    pending: Vec<Pending>,
}

impl Sealed {
    /// Room for frames of up to `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        let slot = seal::FRAME_OFFSET + max_frame + seal::TAG_LEN;
        Sealed {
            slot,
            scratch: vec![0u8; SLOTS * slot].into_boxed_slice(),
            pending: Vec::with_capacity(SLOTS * 4),
        }
    }

    /// Queues frame number `frame` (of the caller's batch) for `hop`.
    pub(crate) fn push(&mut self, frame: usize, vni: u32, hop: ShortId, to: SocketAddr) {
        self.pending.push(Pending {
            frame,
            vni,
            hop,
            to,
        });
    }

    /// Seals and sends what was queued; `frame_of` gives frame `n` of the
    /// caller's batch (the inner Ethernet frame, in clear).
    pub(crate) fn send<'f>(
        &mut self,
        frame_of: impl Fn(usize) -> &'f [u8],
        routes: &Routes,
        queue: &mut SendQueue,
        fd: BorrowedFd<'_>,
        counters: &Counters,
        counts: &mut Counts,
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        for chunk in self.pending.chunks(SLOTS) {
            let mut batch = queue.batch(fd);
            for (p, slot) in chunk.iter().zip(self.scratch.chunks_mut(self.slot)) {
                let frame = frame_of(p.frame);
                let Some(keys) = routes.keys(p.hop) else {
                    dropped!(counters, counts, DropReason::NoRoute, direction = "to peers", hop = %p.hop, why = "no keys",);
                    continue;
                };
                let Some(room) = slot.get_mut(..seal::FRAME_OFFSET + frame.len() + seal::TAG_LEN)
                else {
                    dropped!(
                        counters,
                        counts,
                        DropReason::Oversize,
                        direction = "to peers",
                        len = frame.len(),
                    );
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
                        dropped!(counters, counts, DropReason::SendFailed, direction = "to peers", error = %error,);
                    }
                }
            }
            outcome.merge(batch.finish());
        }
        self.pending.clear();
        outcome
    }
}
