//! IP address management. For now single-host: the agent hands out addresses
//! from the allocation range and tracks every address in use on this host.
//! Cross-host ownership (the ring) is a later piece and plugs in here.

mod allocator;
mod request;

pub use allocator::{Allocator, IpamError};
pub use request::{AddrRequest, AddrRequestError, looks_like_address, parse_addr_requests};

/// Weave's default allocation range: 10.32.0.0 to 10.47.255.255.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";
