//! When periodic control work falls due: at multiples of its period on the
//! wall clock, the same instants on every peer (with synchronised clocks).
//!
//! An idle agent's cost is its wake-ups, not its work: a heartbeat to each
//! of 99 peers and one from each, each on its own phase, wake it hundreds
//! of times a second, and on a machine that runs many agents (or on a
//! battery) that is what the mesh costs. Aligned, an agent sends all its
//! heartbeats in one wake-up and, since its peers send theirs at the same
//! instant, receives them in a few. The burst is a datagram or a small TCP
//! frame per peer, too little to congest anything; clocks that are off by
//! milliseconds only spread it a little, and clocks that are far off make
//! it what it was without alignment.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The next multiple of `period` on the wall clock after `wall`, as an
/// instant on tokio's clock measured from `now` (when `wall` was read).
fn next_after(wall: SystemTime, now: Instant, period: Duration) -> Instant {
    let period_ns = period.as_nanos().max(1);
    let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_period = since_epoch.as_nanos() % period_ns;
    // Less than `period`: fits a u64 of nanoseconds for any period in use.
    let wait = u64::try_from(period_ns - into_period).unwrap_or(u64::MAX);
    now + Duration::from_nanos(wait)
}

/// When the work of period `period` is next due.
pub fn next(period: Duration) -> Instant {
    next_after(SystemTime::now(), Instant::now(), period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_the_next_multiple_of_the_period_on_the_wall_clock() {
        let period = Duration::from_secs(5);
        let now = Instant::now();
        let at =
            |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
        // 1_000_000_000 is a multiple of 5 s.
        assert_eq!(
            next_after(at(1_000_000_000, 1), now, period),
            now + Duration::from_millis(4_999)
        );
        assert_eq!(
            next_after(at(1_000_000_003, 500), now, period),
            now + Duration::from_millis(1_500)
        );
        // On the boundary: the next one, a whole period later.
        assert_eq!(next_after(at(1_000_000_005, 0), now, period), now + period);
        // Two peers that read their clocks apart still fall due together.
        let a = next_after(at(1_000_000_001, 0), now, period);
        let b = next_after(at(1_000_000_002, 0), now + Duration::from_secs(1), period);
        assert_eq!(a, b);
    }
}
