//! Carrying out plans: the one loop every engine runs over a batch of
//! verdicts. It asks [`plan`] what to do with each frame and hands each
//! action to the engine's [`Carrier`], which knows where the frame lies and
//! how it leaves (a capture socket's buffer, a UMEM chunk); drops are
//! counted and logged here, so no engine can forget one.

use std::net::SocketAddr;

use super::counters::{Counters, Counts, DropReason, dropped};
use super::forwarding::ShortId;
use super::mmsg::SendOutcome;
use super::plan::{Action, Verdict, plan};
use super::routes::Routes;

/// How one engine carries out actions on frame number `frame` of its batch.
pub trait Carrier {
    /// The frame's length, for the log of a drop.
    fn len(&self, frame: usize) -> usize;
    /// Who sent the frame, for the log of a drop (frames from peers).
    fn sender(&self, _frame: usize) -> Option<SocketAddr> {
        None
    }
    /// Into this host's bridge.
    fn deliver(&mut self, frame: usize);
    /// In clear, under VXLAN header `vni`, to `to`.
    fn send_clear(&mut self, frame: usize, vni: u32, to: &SocketAddr);
    /// Sealed for neighbour `hop` under VXLAN header `vni`, to `to`. `sole`:
    /// this is the frame's only use, so it may be sealed in place.
    fn seal(
        &mut self,
        frame: usize,
        vni: u32,
        hop: ShortId,
        to: SocketAddr,
        sole: bool,
    ) -> Result<(), DropReason>;
}

/// Carries out the plan of every verdict of a batch (verdict `i` is frame
/// `i`'s).
pub fn carry_out<V: Copy + Into<Verdict>>(
    verdicts: &[V],
    routes: &Routes,
    carrier: &mut impl Carrier,
    tally: &mut Tally<'_>,
) {
    for (frame, &verdict) in verdicts.iter().enumerate() {
        let plan = plan(verdict, routes);
        // Sealing in place only matters with a password.
        let sole = routes.encrypted() && plan.uses() == 1;
        for action in plan {
            let done = match action {
                Action::Deliver => {
                    carrier.deliver(frame);
                    Ok(())
                }
                Action::SendClear { vni, to, .. } => {
                    carrier.send_clear(frame, vni, &to);
                    Ok(())
                }
                Action::Seal { vni, hop, to } => carrier.seal(frame, vni, hop, to, sole),
                Action::Drop(reason) => Err(reason),
            };
            if let Err(reason) = done {
                tally.dropped(reason, carrier.len(frame), carrier.sender(frame));
            }
        }
    }
}

/// One batch's counts in one direction, added to the shared counters at
/// the end of the batch.
pub struct Tally<'a> {
    counters: &'a Counters,
    pub counts: Counts,
    direction: &'static str,
}

impl<'a> Tally<'a> {
    pub fn new(counters: &'a Counters, direction: &'static str) -> Self {
        Tally {
            counters,
            counts: Counts::default(),
            direction,
        }
    }

    /// Counts a drop; logs it at warn level the first time this reason is
    /// seen, at debug level afterwards.
    pub fn dropped(&mut self, reason: DropReason, len: usize, from: Option<SocketAddr>) {
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
    pub fn sends(&mut self, outcome: SendOutcome) -> u64 {
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
