//! Pure decisions about frames: where MACs live (`mac_table`, `macs`), the
//! forwarding table resolved for the hot path (`routes`), each frame's
//! verdict (`verdict`) and the actions that follow from it (`plan`). No I/O:
//! time is passed in, so tests and fuzz targets control it.

pub mod mac_table;
pub mod macs;
pub mod plan;
pub mod routes;
pub mod verdict;
