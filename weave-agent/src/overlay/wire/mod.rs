//! Pure wire formats: what travels between peers (`vxlan`, `seal`,
//! `heartbeat` with its path MTU probes), how TCP segments from peers merge
//! back into super-frames (`coalesce`), and what becomes of a frame too big
//! for the path to a peer (`too_big`).

pub(crate) mod checksum;
pub mod coalesce;
pub mod heartbeat;
pub mod seal;
pub mod too_big;
pub mod vxlan;
