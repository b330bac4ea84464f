//! Shared between the eBPF programs (`no_std`, BPF target) and the agent.
//!
//! Everything here is plain data with a fixed `#[repr(C)]` layout, plus the
//! isolation rules as pure functions, so that the decisions the kernel makes
//! can be unit-tested on the host without loading anything.
#![no_std]

pub mod datapath;
pub mod endpoint;
pub mod fastdp;
pub mod frame;
pub mod isolation;
pub mod stats;

pub use endpoint::{Endpoint, EndpointAddr, MAX_ENDPOINT_ADDRS};
pub use isolation::Verdict;
pub use stats::Counter;

/// Names of the maps and programs in the eBPF object, used by the loader.
pub mod names {
    pub const ENDPOINTS_MAP: &str = "ENDPOINTS";
    pub const COUNTERS_MAP: &str = "COUNTERS";
    pub const FROM_CONTAINER_PROG: &str = "weave_from_container";
    pub const TO_CONTAINER_PROG: &str = "weave_to_container";
    pub const DATAPATH_PROG: &str = "weave_datapath";
    /// The same program without `xdp.frags`, for kernels before 5.18.
    pub const DATAPATH_SINGLE_BUFFER_PROG: &str = "weave_datapath_single_buffer";
    pub const XSKS_MAP: &str = "XSKS";
    pub const PEER_MACS_MAP: &str = "PEER_MACS";
    pub const FASTDP_ENCAP_PROG: &str = "weave_fastdp_encap";
    pub const FASTDP_DECAP_PROG: &str = "weave_fastdp_decap";
    pub const FASTDP_PROBE_PROG: &str = "weave_fastdp_probe";
    pub const FASTDP_CONFIG_MAP: &str = "FASTDP_CONFIG";
    pub const FASTDP_PEERS_MAP: &str = "FASTDP_PEERS";
    pub const FASTDP_SENDERS_MAP: &str = "FASTDP_SENDERS";
    pub const FASTDP_SEEN_MAP: &str = "FASTDP_SEEN";
    pub const FASTDP_LEARNT_MAP: &str = "FASTDP_LEARNT";
    pub const FASTDP_TRAFFIC_MAP: &str = "FASTDP_TRAFFIC";
    pub const LOCAL_MACS_MAP: &str = "LOCAL_MACS";
    pub const DNS_ADDR_MAP: &str = "DNS_ADDR";
    pub const EXPOSED_MAP: &str = "EXPOSED";
}

/// Most container ports one agent enforces isolation on.
pub const MAX_ENDPOINTS: u32 = 4096;
