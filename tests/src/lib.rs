//! Simulated hosts for the integration tests and the demo.
//!
//! A [`Host`] is a network namespace with its own dockerd (own socket, data
//! root, exec root and pidfile under a per-host temporary directory), a local
//! busybox image, and helpers that run the `weave` binary and the docker CLI
//! against that host only. A [`Lan`] is a namespace holding a bridge that
//! hosts plug into (`eth0` in each host), with faults made on the LAN side:
//! cut a host off, block two hosts from each other, capture what crosses. A
//! [`Cluster`] is several hosts on one LAN, created side by side.
//!
//! Every piece is a guard whose `Drop` removes what it created, also when a
//! test panics. Names start with a unique prefix (`wvt<pid>-<test>-<host>`),
//! and leftovers of processes that died without cleaning up (SIGKILL, Ctrl-C
//! of `cargo test`) are swept when the next host is created.
//!
//! Plain std + anyhow on purpose: the tests are synchronous and talk to the
//! system through its own tools (`ip`, `nsenter`, `dockerd`, `docker`, `nft`,
//! `tcpdump`), which the product itself must not shell out to.
//!
//! Modules: [`poll`] (deadlines, Ctrl-C), `prereq` (root, programs),
//! `command` (running tools), `cleanup` (guards' and sweep's primitives),
//! `netns`, `dockerd`, `image` (busybox), `host`, `lan` (LAN, faults,
//! captures), `cluster`, [`convergence`] (launch, wait for the mesh),
//! [`program_tests`] (the eBPF program suites' private namespaces),
//! `snapshot` (`weave status --json` as weave-agent's `Status`: what tests
//! read), [`report`] (the text of `weave ps` and of `weave status`, as the
//! demo shows it), [`traffic`] (a listener, a SHA-1-checked TCP stream
//! between containers), [`swarm`] (the managed plugin installed, one swarm
//! of the hosts' dockerds, a service's tasks), [`wire`] (reading VXLAN off a
//! LAN capture).

use std::time::Duration;

mod cleanup;
mod cluster;
mod command;
mod container_net;
pub mod convergence;
mod dockerd;
mod host;
mod image;
mod lan;
mod netns;
pub mod poll;
mod prereq;
#[cfg(feature = "agent-status")]
pub mod program_tests;
pub mod report;
#[cfg(feature = "agent-status")]
pub mod snapshot;
pub mod swarm;
pub mod traffic;
pub mod weave_image;
pub mod wire;

pub use cleanup::{alive, host_dir, purge, sweep_stale};
pub use cluster::{Cluster, LAN_NET, LAN_PREFIX_LEN};
pub use command::{Output, check, run};
pub use container_net::arp_request;
pub use dockerd::Dockerd;
pub use host::{Host, no_address_twice, test_dataplane};
pub use image::import_busybox;
pub use lan::{Capture, LAN_BRIDGE, LAN_IFNAME, LAN_MTU, Lan, LanPort, parse_cidr};
pub use netns::{
    BpfLink, Link, LinkStats, Netns, bpf_links_held_by, in_netns, parse_link_stats, parse_links,
};
pub use poll::{interrupt, interrupted, wait_for, wait_until};
pub use prereq::{docker_cli, find_program, is_root, require_root, weave_bin, workspace_root};

/// The image every simulated host imports from Debian's busybox-static.
pub const IMAGE: &str = "weave-test-busybox:latest";
/// Where `ip netns add` puts its namespaces; `nsenter --net=` takes these paths.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of everything the tests create; `wvt<pid>-...` is swept once `<pid>` is gone.
pub const TEST_PREFIX: &str = "wvt";

/// How long one command (a `weave` or `docker` call) may take before it is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a dockerd may take to answer after it was started.
pub const DOCKERD_START_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a positive connectivity check may take to succeed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);
