//! Path MTU discovery on one connection, as Weave's sleeve did it: the
//! underlay between two peers may take smaller packets than the overlay MTU
//! makes (a tunnel, a smaller link on the way) and drop larger ones without
//! a word (no ICMP comes back, or a firewall eats it). Each side probes its
//! way to the other with padded, authenticated datagrams on the data port
//! (`overlay::heartbeat`); the largest one acknowledged is the largest
//! datagram the data plane sends there, and frames that would make bigger
//! ones are fragmented or refused with ICMP (`overlay::too_big`).
//!
//! The search: the full size counts as passing until a probe of it fails,
//! so a healthy path loses nothing while it is checked. A probe fails when
//! no acknowledgement came within [`ACK_WAIT`] although heartbeats kept
//! arriving (the path was up: the size was wrong); a failure that would
//! lower the size in use needs [`TRIES`] in a row, so one lost probe does
//! not cut a good path short. After the full size failed, a binary search
//! between [`FLOOR`] and it settles within [`STEP`] bytes in about seven
//! probes; settled below the full size, the full size (has the path grown
//! back?), the size in use (has it shrunk further?) and the smallest size
//! that failed (has it grown partway? then the search runs again above it)
//! are probed in turn every [`RECHECK`]; a path that takes the full size is probed every
//! [`RECHECK_FULL`] (a big datagram: its cost is counted per peer at rest).
//! A pure state machine: the router tells it what arrived and asks it what
//! to probe, once a heartbeat interval.

use std::time::{Duration, Instant};

/// The smallest datagram probed: what any IPv4 path carries (576 bytes,
/// less the outer IPv4 and UDP headers).
pub const FLOOR: usize = 576 - 20 - 8;
/// The search stops when the largest size that passed and the smallest
/// that failed are this close.
pub const STEP: usize = 8;
/// How long an acknowledgement may take: both sides read probes and
/// acknowledgements as they arrive, so this is the round trip plus what a
/// loaded machine makes the two agents wait for a CPU, with room to spare;
/// it is checked at heartbeat rounds (probes are sent there too).
pub const ACK_WAIT: Duration = Duration::from_millis(2500);
/// Failures in a row before the size in use is lowered.
pub const TRIES: u8 = 2;
/// How often a path settled below the full size is probed again.
pub const RECHECK: Duration = Duration::from_secs(5);
/// How often a path that takes the full size is probed again.
pub const RECHECK_FULL: Duration = Duration::from_secs(30);

/// One connection's path, as far as probes tell.
#[derive(Debug)]
pub struct PathMtu {
    /// The largest datagram the data plane sends on this connection.
    max: usize,
    /// The largest datagram believed to pass (assumed `max` at first).
    good: usize,
    /// The smallest datagram seen not to pass, since.
    bad: Option<usize>,
    outstanding: Option<Probe>,
    next_id: u64,
    next_recheck: Option<Instant>,
    /// Settled below `max`: what the next recheck probes.
    recheck: Recheck,
}

/// The sizes a path settled below the full size is probed at, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recheck {
    /// The full size: has the path grown back?
    Full,
    /// The size in use: has it shrunk further?
    InUse,
    /// The smallest size that failed: has the path grown partway?
    Edge,
}

impl Recheck {
    const fn next(self) -> Self {
        match self {
            Self::Full => Self::InUse,
            Self::InUse => Self::Edge,
            Self::Edge => Self::Full,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    id: u64,
    size: usize,
    sent: Instant,
    /// A heartbeat came since it was sent: the path was up.
    heard_since: bool,
    /// Failures of this size in a row before this one.
    failures: u8,
}

impl PathMtu {
    /// For a connection whose data plane sends datagrams of up to `max`
    /// bytes (UDP payload).
    pub const fn new(max: usize) -> Self {
        Self {
            max,
            good: max,
            bad: None,
            outstanding: None,
            next_id: 1,
            next_recheck: None,
            recheck: Recheck::Full,
        }
    }

    /// The largest datagram to send on the connection.
    pub const fn limit(&self) -> usize {
        self.good
    }

    /// Whether the path takes less than the data plane's full size.
    pub const fn limited(&self) -> bool {
        self.good < self.max
    }

    /// A heartbeat from the peer arrived.
    pub const fn heard(&mut self) {
        if let Some(p) = &mut self.outstanding {
            p.heard_since = true;
        }
    }

    /// The peer acknowledged probe `id` of `size` bytes (an acknowledgement
    /// of anything but the probe outstanding is ignored).
    pub fn acked(&mut self, id: u64, size: usize, now: Instant) {
        let Some(p) = self.outstanding.filter(|p| p.id == id && p.size == size) else {
            return;
        };
        self.outstanding = None;
        self.good = self.good.max(size);
        if self.bad.is_some_and(|bad| bad <= size) {
            // The path grew back.
            self.bad = None;
        }
        if p.size < self.max && self.bad.is_none() {
            // What passed is below the full size and nothing failed since:
            // see at once whether the rest passes too.
            self.next_recheck = Some(now);
            self.recheck = Recheck::Full;
        }
    }

    /// What to probe now, if anything: (id, size).
    pub fn next_probe(&mut self, now: Instant) -> Option<(u64, usize)> {
        if let Some(p) = self.outstanding {
            if now.saturating_duration_since(p.sent) < ACK_WAIT {
                return None;
            }
            if !p.heard_since {
                // The path was silent: says nothing about the size.
                return Some(self.send(p.size, p.failures, now));
            }
            let lowers = p.size <= self.good;
            if lowers && p.failures + 1 < TRIES {
                return Some(self.send(p.size, p.failures + 1, now));
            }
            self.outstanding = None;
            self.failed(p.size);
        }
        if let Some(bad) = self.bad
            && bad > self.good + STEP
        {
            return Some(self.send(self.good + (bad - self.good) / 2, 0, now));
        }
        let due = self.next_recheck.is_none_or(|at| now >= at);
        if !due {
            return None;
        }
        let every = if self.limited() {
            RECHECK
        } else {
            RECHECK_FULL
        };
        self.next_recheck = Some(now + every);
        let size = match (self.limited(), self.recheck) {
            (false, _) | (true, Recheck::Full) => self.max,
            (true, Recheck::InUse) => self.good,
            (true, Recheck::Edge) => self.bad.unwrap_or(self.max),
        };
        self.recheck = self.recheck.next();
        Some(self.send(size, 0, now))
    }

    fn failed(&mut self, size: usize) {
        self.bad = Some(self.bad.map_or(size, |bad| bad.min(size)));
        if size <= self.good {
            // What was in use no longer passes: search from the floor.
            self.good = FLOOR.min(size.saturating_sub(1)).min(self.max);
        }
    }

    const fn send(&mut self, size: usize, failures: u8, now: Instant) -> (u64, usize) {
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding = Some(Probe {
            id,
            size,
            sent: now,
            heard_since: false,
            failures,
        });
        (id, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1398;

    /// Runs rounds one second apart against a path that passes datagrams
    /// of up to `passes` bytes (heartbeats always); returns the time taken
    /// until the limit stays put for a minute, and the limit.
    fn settle(m: &mut PathMtu, passes: usize, start: Instant) -> (Duration, usize) {
        let mut now = start;
        let mut last_change = start;
        let mut limit = m.limit();
        let mut pending: Option<(u64, usize)> = None;
        while now.duration_since(last_change) < Duration::from_mins(1) {
            now += Duration::from_secs(1);
            // Acknowledgements of last round's probe arrive by this one.
            if let Some((id, size)) = pending.take() {
                m.acked(id, size, now);
            }
            m.heard();
            if let Some((id, size)) = m.next_probe(now)
                && size <= passes
            {
                pending = Some((id, size));
            }
            if m.limit() != limit {
                limit = m.limit();
                last_change = now;
            }
            assert!(
                now.duration_since(start) < Duration::from_mins(10),
                "never settles"
            );
        }
        (last_change.duration_since(start), m.limit())
    }

    #[test]
    fn a_healthy_path_keeps_the_full_size() {
        let mut m = PathMtu::new(MAX);
        let (_, limit) = settle(&mut m, MAX, Instant::now());
        assert_eq!(limit, MAX);
        assert!(!m.limited());
    }

    #[test]
    fn a_smaller_path_is_found_within_a_step_in_under_a_minute_and_then_regrown() {
        let mut m = PathMtu::new(MAX);
        let t0 = Instant::now();
        let (took, limit) = settle(&mut m, 672, t0);
        assert!((672 - STEP..=672).contains(&limit), "{limit}");
        assert!(took < Duration::from_secs(45), "{took:?}");
        assert!(m.limited());
        // The path grows back: the full size passes again at a recheck.
        let (took, limit) = settle(&mut m, MAX, t0 + Duration::from_mins(5));
        assert_eq!(limit, MAX);
        assert!(took < Duration::from_secs(15), "{took:?}");
    }

    #[test]
    fn a_path_that_grows_partway_is_searched_again() {
        let mut m = PathMtu::new(MAX);
        let t0 = Instant::now();
        settle(&mut m, 700, t0);
        let (took, limit) = settle(&mut m, 1000, t0 + Duration::from_mins(5));
        assert!((1000 - STEP..=1000).contains(&limit), "{limit}");
        assert!(took < Duration::from_mins(1), "{took:?}");
    }

    #[test]
    fn a_path_that_shrinks_again_is_searched_again() {
        let mut m = PathMtu::new(MAX);
        let t0 = Instant::now();
        settle(&mut m, 1000, t0);
        let (_, limit) = settle(&mut m, 700, t0 + Duration::from_mins(5));
        assert!((700 - STEP..=700).contains(&limit), "{limit}");
    }

    #[test]
    fn silence_and_one_lost_probe_do_not_lower_the_size() {
        let mut m = PathMtu::new(MAX);
        let t0 = Instant::now();
        let (id, size) = m.next_probe(t0).unwrap();
        assert_eq!(size, MAX);
        // No heartbeat either: the path is down, not too small.
        let (id2, size2) = m.next_probe(t0 + Duration::from_secs(3)).unwrap();
        assert_eq!((size2, m.limit()), (MAX, MAX));
        assert_ne!(id, id2);
        // One failure with heartbeats: tried again, still in use.
        m.heard();
        let (_, size3) = m.next_probe(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!((size3, m.limit()), (MAX, MAX));
        // A stale acknowledgement changes nothing.
        m.acked(id, size, t0 + Duration::from_secs(7));
        m.heard();
        let (_, size4) = m.next_probe(t0 + Duration::from_secs(9)).unwrap();
        assert!(size4 < MAX, "second failure: searching");
        assert_eq!(m.limit(), FLOOR);
    }
}
