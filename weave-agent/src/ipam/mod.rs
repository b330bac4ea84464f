//! IP address management.
//!
//! The pure core, without I/O: the [`Ring`] says which peer owns which part
//! of the allocation range (a CRDT gossiped between peers), and each peer's
//! [`Space`] says which of the addresses it owns it has handed out. The agent
//! drives them (`agent/ipam.rs`): it claims or asks for space on the ring,
//! gossips the ring through the mesh, and allocates from its own space. The
//! [`Allocator`] covers only addresses outside the allocation range, which
//! are this host's alone. Who starts the ring is agreed by [`Consensus`].

mod addr_range;
mod allocator;
mod consensus;
mod message;
mod request;
mod ring;
#[cfg(test)]
mod sim_tests;
mod space;
#[cfg(test)]
pub(crate) mod test_support;

pub use addr_range::AddrRange;
pub use allocator::{Allocator, IpamError};
pub use consensus::{Consensus, ConsensusMessage, MAX_PROPOSAL_PEERS, Proposal};
pub use message::{BadPacket, IpamMessage, IpamPacket, MAX_HOPS, MAX_REASON};
pub use request::{
    AddrRequest, AddrRequestError, looks_like_address, parse_addr_requests, split_addr_args,
};
pub use ring::{
    Entry, MAX_ENTRIES, Malformed, Refused, Ring, RingError, RingIdentity, RingMerge, Share,
    TRANSFER_VERSION_BUMP, random_ring_id,
};
pub use space::{Space, SpaceError};

/// Weave's default allocation range: 10.32.0.0 to 10.47.255.255.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";
