//! Pure wire formats: what travels between peers (`vxlan`, `seal`,
//! `heartbeat`) and how TCP segments from peers merge back into
//! super-frames (`coalesce`).

pub mod coalesce;
pub mod heartbeat;
pub mod seal;
pub mod vxlan;
