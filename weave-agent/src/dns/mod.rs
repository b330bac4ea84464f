//! weaveDNS: every container attached with a name is known as
//! `NAME.weave.local.` on every peer.
//!
//! - `records`: the CRDT of entries that peers gossip (pure);
//! - `answer`: the query path, bytes in and bytes out (pure, fuzzed);
//! - `server`: sockets, forwarding to the upstream resolvers, bounds.
//!
//! The agent owns the records (`agent::dns`) and publishes a [`Zone`] to the
//! server through a watch channel; the server never touches agent state.

pub mod answer;
pub mod records;
pub mod server;

pub use answer::Zone;
pub use records::{DnsGossip, Entry};

/// Weave's domain.
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// Weave's TTL for its answers, in seconds.
pub const DEFAULT_TTL: u32 = 1;
/// Where the agent answers unless told otherwise: a link-local address on
/// the weave bridge. Every container gets a route to it out of `ethwe`, and
/// the isolation classifier lets exactly DNS (UDP and TCP port 53) to and
/// from it through, whatever the container's subnet.
pub const DEFAULT_LISTEN: &str = "169.254.53.53:53";
