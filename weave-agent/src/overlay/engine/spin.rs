//! How long a worker that ran out of work keeps checking for more before it
//! goes to sleep in `poll`: a pure policy, no clock and no I/O.
//!
//! On a VM whose idle vCPUs halt, a thread woken from `poll` starts 60-70 us
//! after its packet arrived; a packet that arrives while the worker is still
//! awake costs nothing of the kind. Spinning is worth it only while packets
//! come close together (a request and its reply, a stream's ACKs), and costs
//! a core for nothing otherwise. So the budget adapts: it grows when a spin
//! found work, or when the worker was woken soon after it went to sleep
//! (a spin would have caught that packet), and halves down to zero each time
//! a spin found nothing. An idle agent does not spin at all; a busy one
//! never spins longer than [`MAX_SPIN`] before sleeping.

use std::time::Duration;

/// The longest spin, however busy the worker was: a bound on the CPU one
/// idle gap between packets can cost.
pub(crate) const MAX_SPIN: Duration = Duration::from_micros(50);
/// Where the budget starts once work came soon after sleeping, and below
/// which a shrinking budget becomes zero.
pub(crate) const MIN_SPIN: Duration = Duration::from_micros(5);
/// A worker woken this soon after it went to sleep would rather have spun:
/// twice the longest spin, as the wake-up itself comes late.
pub(crate) const SOON: Duration = Duration::from_micros(100);

/// The spin budget of one worker; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpinPolicy {
    budget: Duration,
}

impl SpinPolicy {
    /// How long to spin before the next sleep; zero: sleep at once.
    pub(crate) const fn budget(&self) -> Duration {
        self.budget
    }

    /// A spin ended: it found work (doubles the budget, up to
    /// [`MAX_SPIN`]) or it did not (halves it, down to zero).
    pub(crate) fn spun(&mut self, found_work: bool) {
        if found_work {
            self.grow();
        } else {
            self.budget /= 2;
            if self.budget < MIN_SPIN {
                self.budget = Duration::ZERO;
            }
        }
    }

    /// A sleep ended after `slept`, with work to do or not (timed out):
    /// work that came [`SOON`] after the worker went to sleep would have
    /// been caught by a spin, so the budget grows.
    pub(crate) fn slept(&mut self, slept: Duration, found_work: bool) {
        if found_work && slept <= SOON {
            self.grow();
        }
    }

    fn grow(&mut self) {
        self.budget = (self.budget * 2).clamp(MIN_SPIN, MAX_SPIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_never_spins() {
        let mut policy = SpinPolicy::default();
        assert_eq!(policy.budget(), Duration::ZERO);
        // Woken only by timeouts, or by work that came long after.
        policy.slept(Duration::from_millis(100), false);
        policy.slept(Duration::from_millis(3), true);
        assert_eq!(policy.budget(), Duration::ZERO);
    }

    #[test]
    fn work_soon_after_sleeping_starts_spinning() {
        let mut policy = SpinPolicy::default();
        policy.slept(Duration::from_micros(80), true);
        assert_eq!(policy.budget(), MIN_SPIN);
    }

    #[test]
    fn spins_that_find_work_grow_up_to_the_bound() {
        let mut policy = SpinPolicy::default();
        policy.slept(Duration::from_micros(10), true);
        let mut last = policy.budget();
        for _ in 0..20 {
            policy.spun(true);
            assert!(policy.budget() >= last, "never shrinks while finding work");
            assert!(policy.budget() <= MAX_SPIN, "bounded");
            last = policy.budget();
        }
        assert_eq!(policy.budget(), MAX_SPIN);
    }

    #[test]
    fn spins_that_find_nothing_shrink_to_zero() {
        let mut policy = SpinPolicy::default();
        for _ in 0..20 {
            policy.spun(true);
        }
        let mut spins = 0;
        while policy.budget() > Duration::ZERO {
            policy.spun(false);
            spins += 1;
            assert!(spins < 10, "reaches zero in a few fruitless spins");
        }
        // And stays there while nothing comes.
        policy.spun(false);
        policy.slept(Duration::from_millis(100), false);
        assert_eq!(policy.budget(), Duration::ZERO);
    }
}
