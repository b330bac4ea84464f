//! The checks behind every fuzz target, and their seed inputs.
//!
//! One module per target (`src/<target>.rs`: its check and its seeds), no
//! fuzzing dependency, on purpose: each target in `fuzz_targets/` is one line
//! over a function here, and the stable test `tests/tests/fuzz_corpus.rs`
//! includes this very library (`#[path]`) to replay `corpus/` and
//! `regressions/` through the same checks. So a check lives in one place,
//! and an input that once crashed a target is a plain `cargo test` failure
//! until fixed.
//!
//! A check returns when the input was handled as it should be and panics
//! (an assertion with context) when an invariant breaks. The seeds come
//! from the real encoders, so they follow the wire formats when those change
//! (the test fails on stale seed files and rewrites them with
//! `WEAVE_UPDATE_SEEDS=1`).
//!
//! Where one input has to describe more than bytes on the wire (chunk sizes,
//! a forwarding table, a sequence of packets), it is read through [`Bytes`],
//! whose reads never fail: missing bytes read as zero.

#![forbid(unsafe_code)]

mod dns_query;
mod gossip_merge;
mod http_route;
mod ipam_consensus;
mod ipam_merge;
mod mesh_frames;
mod mesh_handshake;
mod mesh_heartbeat;
mod noise_handshake;
mod overlay_verdict;
mod peer_target_parse;
mod sealed_open;
mod tcp_coalesce;
mod tcp_segment;
mod too_big_frame;
mod vxlan_parse;

pub use dns_query::dns_query;
pub use gossip_merge::gossip_merge;
pub use http_route::http_route;
pub use ipam_consensus::ipam_consensus;
pub use ipam_merge::ipam_merge;
pub use mesh_frames::mesh_frames;
pub use mesh_handshake::mesh_handshake;
pub use mesh_heartbeat::mesh_heartbeat;
pub use noise_handshake::noise_handshake;
pub use overlay_verdict::overlay_verdict;
pub use peer_target_parse::peer_target_parse;
pub use sealed_open::sealed_open;
pub use tcp_coalesce::tcp_coalesce;
pub use tcp_segment::tcp_segment;
pub use too_big_frame::too_big_frame;
pub use vxlan_parse::vxlan_parse;

/// A fuzz target: its name (also its file in `fuzz_targets/` and its
/// directories in `corpus/` and `regressions/`), its check, its seeds.
pub struct FuzzTarget {
    pub name: &'static str,
    pub check: fn(&[u8]),
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
}

pub const TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "dns_query",
        check: dns_query,
        seeds: dns_query::dns_seeds,
    },
    FuzzTarget {
        name: "vxlan_parse",
        check: vxlan_parse,
        seeds: vxlan_parse::vxlan_seeds,
    },
    FuzzTarget {
        name: "mesh_frames",
        check: mesh_frames,
        seeds: mesh_frames::frames_seeds,
    },
    FuzzTarget {
        name: "mesh_handshake",
        check: mesh_handshake,
        seeds: mesh_handshake::handshake_seeds,
    },
    FuzzTarget {
        name: "mesh_heartbeat",
        check: mesh_heartbeat,
        seeds: mesh_heartbeat::heartbeat_seeds,
    },
    FuzzTarget {
        name: "gossip_merge",
        check: gossip_merge,
        seeds: gossip_merge::gossip_seeds,
    },
    FuzzTarget {
        name: "ipam_consensus",
        check: ipam_consensus,
        seeds: ipam_consensus::consensus_seeds,
    },
    FuzzTarget {
        name: "ipam_merge",
        check: ipam_merge,
        seeds: ipam_merge::ipam_seeds,
    },
    FuzzTarget {
        name: "peer_target_parse",
        check: peer_target_parse,
        seeds: peer_target_parse::target_seeds,
    },
    FuzzTarget {
        name: "sealed_open",
        check: sealed_open,
        seeds: sealed_open::sealed_seeds,
    },
    FuzzTarget {
        name: "noise_handshake",
        check: noise_handshake,
        seeds: noise_handshake::noise_seeds,
    },
    FuzzTarget {
        name: "overlay_verdict",
        check: overlay_verdict,
        seeds: overlay_verdict::verdict_seeds,
    },
    FuzzTarget {
        name: "tcp_coalesce",
        check: tcp_coalesce,
        seeds: tcp_coalesce::coalesce_seeds,
    },
    FuzzTarget {
        name: "tcp_segment",
        check: tcp_segment,
        seeds: tcp_segment::segment_seeds,
    },
    FuzzTarget {
        name: "http_route",
        check: http_route,
        seeds: http_route::route_seeds,
    },
    FuzzTarget {
        name: "too_big_frame",
        check: too_big_frame,
        seeds: too_big_frame::too_big_seeds,
    },
];

/// A reader over fuzz input that never fails: past the end it reads zeros.
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub const fn new(data: &'a [u8]) -> Self {
        Bytes { rest: data }
    }

    pub const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub const fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.rest.len())
    }
}
