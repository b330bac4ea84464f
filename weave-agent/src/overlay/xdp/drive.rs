//! Who runs the two directions, and when a worker sleeps.
//!
//! Two worker threads, each home to one direction (`weave-xsk-out`: bridge
//! to peers, `weave-xsk-in`: peers to bridge), run to completion: a worker
//! runs its own direction batch after batch while it has work, then takes
//! the other direction's work too if that direction is free (its home
//! worker asleep or about to be), and sleeps only when both are empty. Each
//! direction sits behind a mutex, so that it never runs on two threads at
//! once; a worker only ever *tries* the other's (and never waits for it
//! while holding its own), so they cannot deadlock.
//!
//! A wake-up costs 60-70 us on a VM whose idle vCPUs halt, and a ping used
//! to cross several: the request from a peer woke `weave-xsk-in`, its
//! reply in the RX ring then woke `weave-xsk-out`. Now the worker that
//! fed the bridge looks at the RX ring at once after the TX kick (in copy
//! mode the kick runs the bridge and the container's stack inside
//! `sendto`, so the reply is often already there) and carries it out
//! itself. Before sleeping a worker spins for a short adaptive budget
//! (`spin`), checking both sockets with a `poll` that does not wait; an
//! idle agent's budget is zero.
//!
//! Busy polling (`weave launch --busy-poll`, for hosts with a core to
//! spare) takes the wake-ups out altogether: one worker, `weave-xsk-poll`,
//! runs both directions and, out of work, checks both sockets again
//! without ever sleeping. It costs that core whether or not traffic flows.
//! One worker rather than two spinning ones: two would take two cores, and
//! the one that feeds the bridge already looks at the other direction.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use super::Shared;
use super::from_peers::PeersToBridge;
use super::to_peers::BridgeToPeers;
use crate::overlay::engine::spin::SpinPolicy;
use crate::overlay::engine::{Core, STOP_CHECK, Workers};
use crate::overlay::error::OverlayError;
use crate::overlay::sys;

/// One direction of the data plane, run one batch at a time by whichever
/// worker holds it.
trait Direction: Send {
    /// Carries one batch without waiting; false when there was no work.
    fn run_batch(&mut self) -> bool;

    /// Whether the last batch put frames into the bridge, whose replies
    /// may already wait in the other direction.
    fn fed_the_bridge(&self) -> bool {
        false
    }
}

impl Direction for BridgeToPeers {
    fn run_batch(&mut self) -> bool {
        Self::run_batch(self)
    }
}

impl Direction for PeersToBridge {
    fn run_batch(&mut self) -> bool {
        Self::run_batch(self)
    }

    fn fed_the_bridge(&self) -> bool {
        Self::fed_the_bridge(self)
    }
}

/// The two directions, shared by both workers.
struct Directions {
    shared: Arc<Shared>,
    to_peers: Mutex<BridgeToPeers>,
    to_bridge: Mutex<PeersToBridge>,
}

/// How the forwarding workers wait for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Polling {
    /// Two workers, each sleeping in `poll` after a short adaptive spin.
    Sleeping,
    /// One worker that never sleeps.
    Busy,
}

/// Starts the forwarding workers.
pub(super) fn spawn(
    workers: &Workers,
    polling: Polling,
    shared: Arc<Shared>,
    to_peers: BridgeToPeers,
    to_bridge: PeersToBridge,
) -> Result<(), OverlayError> {
    let directions = Arc::new(Directions {
        shared,
        to_peers: Mutex::new(to_peers),
        to_bridge: Mutex::new(to_bridge),
    });
    if polling == Polling::Busy {
        return workers.spawn("weave-xsk-poll", move || {
            let d = &directions;
            let fds = [d.shared.mem.borrowed_fd(), d.shared.core.udp.as_fd()];
            while !d.shared.core.stopping() {
                let worked = run_if_free(&d.to_peers, &d.shared.core)
                    | run_if_free(&d.to_bridge, &d.shared.core);
                if !worked {
                    spin_until_readable(&fds, STOP_CHECK);
                }
            }
        });
    }
    let out = Arc::clone(&directions);
    workers.spawn("weave-xsk-out", move || {
        let (xsk, udp) = (out.shared.mem.borrowed_fd(), out.shared.core.udp.as_fd());
        work(&out.shared, &out.to_peers, &out.to_bridge, xsk, udp);
    })?;
    let inbound = directions;
    workers.spawn("weave-xsk-in", move || {
        let (xsk, udp) = (
            inbound.shared.mem.borrowed_fd(),
            inbound.shared.core.udp.as_fd(),
        );
        work(
            &inbound.shared,
            &inbound.to_bridge,
            &inbound.to_peers,
            udp,
            xsk,
        );
    })
}

/// A worker's loop: `home` to completion (with a look at `away` after each
/// batch that fed the bridge), then `away` if it is free, then a spin on
/// both sockets, then a sleep on `home_fd` (the other worker sleeps on the
/// other one).
fn work<H: Direction, A: Direction>(
    shared: &Shared,
    home: &Mutex<H>,
    away: &Mutex<A>,
    home_fd: BorrowedFd<'_>,
    away_fd: BorrowedFd<'_>,
) {
    let core = &shared.core;
    let mut spin = SpinPolicy::default();
    // How the worker came to this pass, judged by whether the pass found
    // work (readiness alone may be the other worker's to take).
    let mut came = Came::Working;
    while !core.stopping() {
        let mut worked = false;
        {
            let mut home = lock(home);
            while !core.stopping() && home.run_batch() {
                worked = true;
                if home.fed_the_bridge() {
                    worked |= run_if_free(away, core);
                }
            }
        }
        worked |= run_if_free(away, core);
        match came {
            Came::Working => {}
            Came::Spinning => spin.spun(worked),
            Came::Sleeping(slept) => spin.slept(slept, worked),
        }
        if worked {
            came = Came::Working;
            continue;
        }
        let budget = spin.budget();
        if !budget.is_zero() && spin_until_readable(&[home_fd, away_fd], budget) {
            came = Came::Spinning;
            continue;
        }
        if !budget.is_zero() {
            spin.spun(false);
        }
        let asleep = Instant::now();
        sys::wait_readable(home_fd, STOP_CHECK);
        came = Came::Sleeping(asleep.elapsed());
    }
}

/// What a worker did before a pass over the directions.
#[derive(Clone, Copy)]
enum Came {
    Working,
    Spinning,
    Sleeping(Duration),
}

/// Runs `direction` to completion if no other worker holds it; whether it
/// had work.
fn run_if_free<D: Direction>(direction: &Mutex<D>, core: &Core) -> bool {
    let mut direction = match direction.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return false,
    };
    let mut worked = false;
    while !core.stopping() && direction.run_batch() {
        worked = true;
    }
    worked
}

/// Waits for one's own direction: the other worker may hold it for a batch.
fn lock<D>(direction: &Mutex<D>) -> MutexGuard<'_, D> {
    direction.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks `fds` without sleeping until one is readable or `budget` has
/// passed; whether one was.
fn spin_until_readable(fds: &[BorrowedFd<'_>], budget: Duration) -> bool {
    let until = Instant::now() + budget;
    loop {
        if sys::any_readable(fds) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::hint::spin_loop();
    }
}
