//! The weave agent and its command-line tool.
//!
//! Pure logic (address requests and allocation, `docker run` arguments, peer
//! names, the status report) lives apart from the I/O that owns sockets,
//! netlink, Docker and eBPF, so it can be unit-tested without any of them.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cni;
pub mod config;
pub mod dns;
pub mod docker;
pub mod docker_args;
pub mod ebpf;
pub mod gateway;
pub mod http;
pub mod ipam;
pub mod kube;
pub mod mac;
pub mod mesh;
pub mod netlink;
pub mod overlay;
pub mod peer_name;
pub mod plugin;
pub mod report;
pub mod state;
pub mod status;
