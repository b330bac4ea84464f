//! Pure wire formats: what travels between peers (`vxlan`, `seal`,
//! `heartbeat` with its path MTU probes), how TCP segments from peers merge
//! back into super-frames (`coalesce`), how a container's TSO super-frame
//! is cut into segments that fit the MTU (`segment`) and a container's
//! partial checksum completed (`partial_checksum`), and what becomes of a
//! frame too big for the path to a peer (`too_big`).

pub(crate) mod checksum;
pub mod cipher;
pub mod coalesce;
pub(crate) mod headers;
pub mod heartbeat;
pub mod partial_checksum;
pub mod seal;
pub mod segment;
pub mod too_big;
pub mod vxlan;
