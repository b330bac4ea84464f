//! What the Docker plugin asks of the agent (the calls that need its ring,
//! bridge or records) and what the agent answers: carried through the
//! agent's request queue like the CLI's requests.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::Mac;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginCall {
    /// A Docker network with these IPv4 subnets.
    CreateNetwork {
        network_id: String,
        subnets: Vec<Ipv4Net>,
    },
    DeleteNetwork {
        network_id: String,
    },
    /// The endpoint's port on the bridge, its container end left in the
    /// host's namespace for Docker to move; `mac` is Docker's, if it chose.
    CreateEndpoint {
        network_id: String,
        endpoint_id: String,
        cidr: Ipv4Net,
        mac: Option<Mac>,
    },
    DeleteEndpoint {
        network_id: String,
        endpoint_id: String,
    },
    Join {
        network_id: String,
        endpoint_id: String,
    },
    /// A pool: the given subnet, or the default subnet; `global` in the
    /// global address space (Swarm's networks).
    RequestPool {
        pool: Option<Ipv4Net>,
        global: bool,
    },
    /// An address in `subnet` from the ring: `address`, or any free one.
    /// `global` when asked through the managed plugin (Swarm's networks):
    /// a given `address` is then one the swarm manager's allocator got
    /// already (on the manager's agent); the node uses it, and the ring is
    /// not asked again.
    RequestAddress {
        subnet: Ipv4Net,
        address: Option<Ipv4Addr>,
        global: bool,
    },
    ReleaseAddress {
        subnet: Ipv4Net,
        address: Ipv4Addr,
        global: bool,
    },
    /// libnetwork's node discovery (`DiscoverNew`, `DiscoverDelete`) of
    /// another node: its address becomes a connect target, as with `weave
    /// connect`, or is forgotten.
    Discovered {
        address: Ipv4Addr,
        new: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginAnswer {
    Done,
    /// The endpoint's MAC.
    Mac(Mac),
    /// The container end Docker moves into the container, and weaveDNS's
    /// address (when it is on) for a route through `ethwe`.
    Joined {
        src_name: String,
        dns: Option<Ipv4Addr>,
    },
    Pool(Ipv4Net),
    Address(Ipv4Net),
}
