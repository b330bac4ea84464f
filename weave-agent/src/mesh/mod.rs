//! The control plane: peers find each other over TCP (port 6783), gossip
//! who is connected to whom, and compute the routes the data plane follows.
//!
//! One file per concept, pure state machines apart from the I/O:
//! - `protocol`: the wire (handshake, frames, messages) and its decoder;
//! - `topology`: what every peer knows about every peer (a CRDT);
//! - `epidemic`: who passes a changed entry on to whom;
//! - `routes`: the forwarding table computed from a topology;
//! - `fastdp`: which connections use the in-kernel data path;
//! - `liveness`: whether a connection's data path (UDP) works, from heartbeats;
//! - `path_mtu`: how big a datagram that path takes, from probes;
//! - `beat`: when periodic heartbeats fall due (together, to wake less);
//! - `connection_maker`: which addresses to dial, and when;
//! - `connection`: one task per TCP connection;
//! - `router`: the actor tying them together, and its handle [`Mesh`];
//! - `status`: the snapshot for `weave status` and its renderings.
//!
//! Everything a peer sends goes through pure functions first, so each has a
//! one-line fuzz target and none may panic: `protocol::FrameDecoder`
//! (`feed` + `next_frame`), `protocol::decode`, `protocol::negotiate`,
//! `topology::Topology::merge` (any `TopologyUpdate`), and
//! `connection_maker::Target::parse` for what users type.

pub mod beat;
pub mod connection;
pub mod connection_maker;
pub mod epidemic;
pub mod fastdp;
pub mod liveness;
pub mod noise;
pub mod path_mtu;
pub mod protocol;
pub mod router;
pub mod routes;
pub mod status;
pub mod topology;

pub use connection_maker::{Backoff, BadTarget, Target};
pub use router::{DEFAULT_CONN_LIMIT, Mesh, MeshConfig, MeshError, Spread, Timing};
pub use status::{
    ConnectionState, ConnectionStatus, DataPathState, DataPathStatus, MeshCounters, MeshStatus,
    PeerConnectionStatus, PeerStatus, RouteStatus,
};
pub use topology::MAX_CONNECTIONS_PER_PEER;
