//! Carrying out plans: the one loop every engine runs over a batch of
//! verdicts. It asks [`plan`] what to do with each frame and hands each
//! action to the engine's [`Carrier`], which knows where the frame lies and
//! how it leaves (a capture socket's buffer, a UMEM chunk); frames sealed
//! for several hops, and frames too big for a hop's path, go through
//! [`SealSlots`]; drops are counted and logged here, so no engine can forget
//! one.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use crate::overlay::counters::{Counters, Counts, DropReason, dropped};
use crate::overlay::decide::plan::{Action, Verdict, plan};
use crate::overlay::decide::routes::Routes;
use crate::overlay::decide::verdict::FromPeer;
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::forwarding::ShortId;
use crate::overlay::neighbour_traffic::TrafficTally;
use crate::overlay::sys::mmsg::{SendOutcome, SendQueue};

/// One send of a frame: under VXLAN header `vni`, to neighbour `hop` at `to`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Onward {
    pub vni: u32,
    pub hop: ShortId,
    pub to: SocketAddr,
}

/// How one engine carries out actions on frame number `frame` of its batch.
pub(crate) trait Carrier {
    /// The frame's length, for the log of a drop.
    fn len(&self, frame: usize) -> usize;
    /// The inner Ethernet frame's length, for the traffic by neighbour:
    /// the frame itself, unless the carrier holds it in a packet.
    fn inner_len(&self, frame: usize) -> usize {
        self.len(frame)
    }
    /// Who sent the frame, for the log of a drop (frames from peers).
    fn sender(&self, _frame: usize) -> Option<SocketAddr> {
        None
    }
    /// Into this host's bridge. Frames from the bridge are never planned
    /// back into it, so carriers of those need not implement it.
    fn deliver(&mut self, _frame: usize) {
        debug_assert!(false, "a frame from the bridge planned back into it");
    }
    /// In clear.
    fn send_clear(&mut self, frame: usize, onward: &Onward);
    /// Sealed where the frame lies, for the frame's only use; `None` when
    /// this engine cannot (the frame then goes through a seal slot).
    fn seal_in_place(&mut self, _frame: usize, _onward: &Onward) -> Option<Result<(), DropReason>> {
        None
    }
}

/// Carries out the plan of every verdict of a batch (verdict `i` is frame
/// `i`'s). Frames to be sealed but not in place are queued in `slots`, for
/// [`send_sealed`] once the carrier's own sends are done.
pub(crate) fn carry_out<V: Copy + Into<Verdict>>(
    verdicts: &[V],
    routes: &Routes,
    carrier: &mut impl Carrier,
    slots: &mut SealSlots,
    tally: &mut Tally<'_>,
) {
    for (frame, &verdict) in verdicts.iter().enumerate() {
        let verdict: Verdict = verdict.into();
        match verdict {
            Verdict::FromPeer(
                FromPeer::Deliver { sender, .. } | FromPeer::Relay { sender, .. },
            ) => tally.traffic.received(sender, carrier.inner_len(frame)),
            Verdict::FromPeer(FromPeer::Drop(_)) => {
                // A neighbour's drops are shown with it; a stranger's only
                // in the totals.
                if let Some(neighbour) = carrier.sender(frame).and_then(|a| routes.neighbour_at(&a))
                {
                    tally.traffic.dropped(neighbour);
                }
            }
            Verdict::FromBridge(_) => {}
        }
        let plan = plan(verdict, carrier.inner_len(frame), routes);
        // Sealing in place only matters with a password.
        let sole = routes.encrypted() && plan.uses() == 1;
        for action in plan {
            let hop = match action {
                Action::SendClear { hop, .. }
                | Action::Seal { hop, .. }
                | Action::TooBig { hop, .. } => Some(hop),
                Action::Deliver | Action::Drop(_) => None,
            };
            let done = match action {
                Action::Deliver => {
                    carrier.deliver(frame);
                    Ok(())
                }
                Action::SendClear { vni, hop, to } => {
                    carrier.send_clear(frame, &Onward { vni, hop, to });
                    Ok(())
                }
                Action::Seal { vni, hop, to } => {
                    let onward = Onward { vni, hop, to };
                    let in_place = sole.then(|| carrier.seal_in_place(frame, &onward));
                    in_place.flatten().unwrap_or_else(|| {
                        slots.push(frame, &onward);
                        Ok(())
                    })
                }
                Action::TooBig {
                    vni,
                    hop,
                    to,
                    limit,
                } => {
                    slots.push_too_big(frame, &Onward { vni, hop, to }, limit);
                    Ok(())
                }
                Action::Drop(reason) => Err(reason),
            };
            match (done, hop) {
                (Err(reason), _) => {
                    tally.dropped(reason, carrier.len(frame), carrier.sender(frame))
                }
                (Ok(()), Some(hop)) => tally.traffic.sent(hop, carrier.inner_len(frame)),
                (Ok(()), None) => {}
            }
        }
    }
}

/// Password mode, for an engine that seals frames where they lie: calls
/// `seal(frame, onward)` for each frame whose plan is one seal (the frame's
/// only use), before [`carry_out`], which then asks the carrier's
/// `seal_in_place` for what became of it. Two passes, so that the frames
/// are written before any frame of the batch is borrowed for sending.
/// `inner_len(frames, frame)` is what the carrier's `inner_len` will say;
/// both callbacks get `frames`, the engine's batch, to read and write.
pub(crate) fn for_each_sole_seal<V: Copy + Into<Verdict>, F: ?Sized>(
    verdicts: &[V],
    routes: &Routes,
    frames: &mut F,
    inner_len: impl Fn(&F, usize) -> usize,
    mut seal: impl FnMut(&mut F, usize, &Onward),
) {
    if !routes.encrypted() {
        return;
    }
    for (frame, &verdict) in verdicts.iter().enumerate() {
        let plan = plan(verdict, inner_len(frames, frame), routes);
        if plan.uses() != 1 {
            continue;
        }
        for action in plan {
            if let Action::Seal { vni, hop, to } = action {
                seal(frames, frame, &Onward { vni, hop, to });
            }
        }
    }
}

/// Seals and sends what [`carry_out`] queued in `slots` (`frame_of` gives
/// the inner frame of frame `n` of the batch), and fragments or answers
/// what was too big for its path (answers go into the bridge through
/// `bridge`); returns how many frames went to peers.
pub(crate) fn send_sealed<'f>(
    slots: &mut SealSlots,
    frame_of: impl Fn(usize) -> &'f [u8],
    routes: &Routes,
    (queue, fd): (&mut SendQueue, BorrowedFd<'_>),
    bridge: Option<BorrowedFd<'_>>,
    tally: &mut Tally<'_>,
) -> u64 {
    let outcome = slots.send(&frame_of, routes, queue, fd, tally);
    let sent = tally.sends(outcome);
    let outcome = slots.send_too_big(&frame_of, routes, (queue, fd), bridge, tally);
    sent + tally.sends(outcome)
}

/// One batch's counts in one direction, added to the shared counters when
/// dropped at the end of the batch.
pub(crate) struct Tally<'a> {
    counters: &'a Counters,
    pub counts: Counts,
    /// The same batch by neighbour.
    pub traffic: TrafficTally<'a>,
    direction: &'static str,
}

impl<'a> Tally<'a> {
    pub(crate) fn new(counters: &'a Counters, direction: &'static str) -> Self {
        Tally {
            counters,
            counts: Counts::default(),
            traffic: TrafficTally::new(&counters.neighbours),
            direction,
        }
    }

    /// Counts a drop; logs it at warn level the first time this reason is
    /// seen, at debug level afterwards.
    pub(crate) fn dropped(&mut self, reason: DropReason, len: usize, from: Option<SocketAddr>) {
        dropped!(
            self.counters,
            self.counts,
            reason,
            direction = self.direction,
            len = len,
            from = ?from,
        );
    }

    /// Counts what a send did: every failed frame is a drop. Returns how
    /// many went.
    pub(crate) fn sends(&mut self, outcome: SendOutcome) -> u64 {
        self.counts.gso_refused += outcome.gso_refused;
        if let Some(error) = outcome.first_error {
            self.counts
                .drop(DropReason::SendFailed, outcome.failed.saturating_sub(1));
            dropped!(
                self.counters,
                self.counts,
                DropReason::SendFailed,
                direction = self.direction,
                error = %error,
            );
        } else if outcome.failed > 0 {
            self.counts.drop(DropReason::SendFailed, outcome.failed);
        }
        outcome.sent
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.counters.add(&self.counts);
    }
}
