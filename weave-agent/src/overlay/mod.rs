//! The data plane between hosts, behind one seam: the control plane (mesh/)
//! publishes a `ForwardingTable` and never learns whether frames travel
//! through a capture socket (plain) or AF_XDP (accelerated).
//!
//! Pure parts (VXLAN codec, MAC learning, resolved routes, verdicts) are
//! unit-tested without sockets; `sys` and `mmsg` hold the system calls.

pub mod coalesce;
mod counters;
mod error;
mod forwarding;
mod gro;
mod gso;
mod inject;
pub mod mac_table;
mod mmsg;
pub mod plain;
pub mod routes;
pub mod seal;
mod sys;
pub mod vxlan;
pub mod xdp;

pub use error::OverlayError;
pub use forwarding::{ForwardingTable, NeighbourKeys, Overlay, OverlayStats, ShortId};
pub use plain::{DEFAULT_DATA_PORT, PlainConfig, PlainOverlay};
pub use xdp::{XdpConfig, XdpOverlay};
