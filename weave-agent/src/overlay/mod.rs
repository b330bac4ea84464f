//! The data plane between hosts, behind one seam: the control plane (mesh/)
//! publishes a `ForwardingTable` and never learns whether frames travel
//! through a capture socket (plain) or AF_XDP (accelerated).
//!
//! Pure parts (VXLAN codec, MAC learning, resolved routes, verdicts, the
//! plan of actions for each frame) are unit-tested without sockets; `sys`,
//! `mmsg`, `gso`, `gro` and `inject` hold the system calls; `engine` is what
//! both engines share, `plain` and `xdp` what differs.

mod carry;
pub mod coalesce;
mod counters;
mod engine;
mod error;
mod forwarding;
mod gro;
mod gso;
mod inject;
pub mod mac_table;
pub mod macs;
mod mmsg;
pub mod plain;
pub mod plan;
pub mod routes;
pub mod seal;
mod seal_slots;
mod sys;
pub mod verdict;
pub mod vxlan;
pub mod xdp;

pub use counters::DropReason;
pub use engine::{MAX_MTU, MIN_MTU};
pub use error::OverlayError;
pub use forwarding::{ForwardingTable, NeighbourKeys, Overlay, OverlayStats, ShortId};
pub use plain::{DEFAULT_DATA_PORT, PlainConfig, PlainOverlay};
pub use xdp::{XdpConfig, XdpOverlay};
