//! The data plane's counters: workers count a batch in plain integers and
//! add it to the shared atomics once; every kind of drop is logged the first
//! time it happens (then only at debug level), so bad input on the wire
//! cannot flood the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::overlay::forwarding::OverlayStats;
use crate::overlay::neighbour_traffic::NeighbourTable;

/// Why a frame or packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    UnknownSender,
    NoRoute,
    Oversize,
    Spoofed,
    SendFailed,
    Unauthenticated,
    Replayed,
    /// Too big for the path to its next hop, and neither fragmented nor
    /// answered (see `wire::too_big`).
    PathMtu,
}

impl DropReason {
    const COUNT: usize = 9;

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSender => "unknown sender",
            Self::NoRoute => "no route",
            Self::Oversize => "oversize",
            Self::Spoofed => "spoofed",
            Self::SendFailed => "send failed",
            Self::Unauthenticated => "unauthenticated",
            Self::Replayed => "replayed",
            Self::PathMtu => "too big for the path",
        }
    }
}

/// One batch's counts, kept by one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub sent: u64,
    pub received: u64,
    pub relayed: u64,
    /// Frames from peers that entered the bridge merged into super-frames.
    pub coalesced: u64,
    /// TCP super-frames from the bridge the agent cut into segments.
    pub segmented: u64,
    /// UDP GSO datagrams the kernel refused (see `gso`).
    pub gso_refused: u64,
    /// Fragments sent of frames too big for their path.
    pub path_mtu_fragments: u64,
    /// ICMP "fragmentation needed" sent back into the bridge.
    pub path_mtu_icmp: u64,
    dropped: [u64; DropReason::COUNT],
}

impl Counts {
    pub(super) const fn drop(&mut self, reason: DropReason, n: u64) {
        self.dropped[reason as usize] += n;
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    relayed: AtomicU64,
    coalesced: AtomicU64,
    segmented: AtomicU64,
    gso_refused: AtomicU64,
    path_mtu_fragments: AtomicU64,
    path_mtu_icmp: AtomicU64,
    dropped: [AtomicU64; DropReason::COUNT],
    logged: [AtomicBool; DropReason::COUNT],
    /// The same traffic by neighbour.
    pub(super) neighbours: NeighbourTable,
}

impl Counters {
    pub(super) fn add(&self, counts: &Counts) {
        let add = |counter: &AtomicU64, n: u64| {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        };
        add(&self.sent, counts.sent);
        add(&self.received, counts.received);
        add(&self.relayed, counts.relayed);
        add(&self.coalesced, counts.coalesced);
        add(&self.segmented, counts.segmented);
        add(&self.gso_refused, counts.gso_refused);
        add(&self.path_mtu_fragments, counts.path_mtu_fragments);
        add(&self.path_mtu_icmp, counts.path_mtu_icmp);
        for (counter, &n) in self.dropped.iter().zip(&counts.dropped) {
            add(counter, n);
        }
    }

    /// True the first time it is called for `reason`: log that one.
    pub(super) fn first(&self, reason: DropReason) -> bool {
        let flag = &self.logged[reason as usize];
        !flag.load(Relaxed) && !flag.swap(true, Relaxed)
    }

    /// The counters of the engine called `dataplane`.
    pub(super) fn snapshot(&self, dataplane: &str) -> OverlayStats {
        let dropped = |r: DropReason| self.dropped[r as usize].load(Relaxed);
        OverlayStats {
            frames_sent: self.sent.load(Relaxed),
            frames_received: self.received.load(Relaxed),
            frames_relayed: self.relayed.load(Relaxed),
            frames_coalesced: self.coalesced.load(Relaxed),
            frames_segmented: self.segmented.load(Relaxed),
            gso_refused: self.gso_refused.load(Relaxed),
            dropped_malformed: dropped(DropReason::Malformed),
            dropped_unknown_sender: dropped(DropReason::UnknownSender),
            dropped_no_route: dropped(DropReason::NoRoute),
            dropped_oversize: dropped(DropReason::Oversize),
            dropped_spoofed: dropped(DropReason::Spoofed),
            dropped_send_failed: dropped(DropReason::SendFailed),
            dropped_unauthenticated: dropped(DropReason::Unauthenticated),
            dropped_replayed: dropped(DropReason::Replayed),
            dropped_path_mtu: dropped(DropReason::PathMtu),
            path_mtu_fragments: self.path_mtu_fragments.load(Relaxed),
            path_mtu_icmp: self.path_mtu_icmp.load(Relaxed),
            // Counted by the kernel: the data plane adds it (see `sys::socket_drops`).
            dropped_overflow: 0,
            // Counted by fastdp's map writer, which adds it.
            fastdp_map_failures: 0,
            // Kept with the MAC tables: the engine adds it.
            macs_not_learnt: 0,
            neighbours: self.neighbours.snapshot(dataplane),
        }
    }
}

/// Counts a drop in `counts`; logs it at warn level the first time this
/// reason is seen, at debug level afterwards.
macro_rules! dropped {
    ($counters:expr, $counts:expr, $reason:expr, $($field:tt)*) => {{
        let reason: $crate::overlay::counters::DropReason = $reason;
        $counts.drop(reason, 1);
        if $counters.first(reason) {
            tracing::warn!(
                reason = reason.as_str(), $($field)*
                "overlay dropped a packet (further drops of this kind are only counted)"
            );
        } else {
            tracing::debug!(reason = reason.as_str(), $($field)* "overlay dropped a packet");
        }
    }};
}
pub(crate) use dropped;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_add_up_and_each_reason_is_first_once() {
        let counters = Counters::default();
        let mut counts = Counts {
            sent: 3,
            ..Counts::default()
        };
        counts.drop(DropReason::Spoofed, 2);
        counters.add(&counts);
        counters.add(&counts);
        let stats = counters.snapshot("plain");
        assert_eq!(stats.frames_sent, 6);
        assert_eq!(stats.dropped_spoofed, 4);
        assert_eq!(stats.dropped_malformed, 0);
        assert!(counters.first(DropReason::Oversize));
        assert!(!counters.first(DropReason::Oversize));
        assert!(counters.first(DropReason::NoRoute));
    }
}
