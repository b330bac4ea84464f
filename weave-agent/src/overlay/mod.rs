//! The data plane between hosts, behind one seam: the control plane (mesh/)
//! publishes a `ForwardingTable` (`forwarding`) and never learns whether
//! frames travel through a capture socket (plain) or `AF_XDP` (xdp).
//!
//! The tree:
//! - `wire/`: pure wire formats: VXLAN, sealed frames, TCP segment
//!   coalescing. Bytes in, bytes out, no I/O.
//! - `decide/`: pure decisions: MAC learning, resolved routes, each frame's
//!   verdict and the plan of actions that follows from it (`plan`, the one
//!   place the forwarding rules live).
//! - `sys/`: system-call plumbing: socket options, batched sends and
//!   receives (`mmsg`), UDP GSO and GRO, the injection packet socket.
//! - `engine/`: what every engine shares: the UDP socket, tables, counters
//!   and workers, and the loop that carries plans out.
//! - `plain/`, `xdp/`: the two engines, which only say where frames come
//!   from and how they leave.
//! - `fastdp/`: in-kernel VXLAN between direct neighbours, wrapped around
//!   the xdp engine, which carries everything else.
//!
//! Everything in `wire/` and `decide/` is unit-tested without sockets and
//! fuzzed (`fuzz/`).

mod counters;
mod decide;
mod engine;
mod error;
pub mod fastdp;
mod forwarding;
mod neighbour_traffic;
pub mod plain;
pub(crate) mod sys;
mod wire;
pub mod xdp;

pub use counters::DropReason;
pub use decide::{mac_table, macs, plan, routes, verdict};
pub use engine::heartbeats::{Arrival as HeartbeatArrival, HeartbeatPort, PortCounters};
pub use engine::{MAX_MTU, MIN_MTU};
pub use error::OverlayError;
pub use fastdp::{FastdpOverlay, FastdpSettings};
pub use forwarding::{
    ForwardingTable, NeighbourKeys, NeighbourTraffic, Overlay, OverlayStats, ShortId,
};
pub use plain::{DEFAULT_DATA_PORT, PlainConfig, PlainOverlay};
pub use wire::cipher::{DataCipher, hardware_aes};
pub use wire::{cipher, coalesce, heartbeat, partial_checksum, seal, segment, too_big, vxlan};
pub use xdp::{XdpConfig, XdpOverlay};
