//! The local control API: what the `weave` CLI asks the agent, over the
//! root-only Unix socket, one JSON line each way.

pub mod client;
pub mod server;

use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::docker_args::ContainerSpec;
use crate::ipam::AddrRequest;
use crate::mac::Mac;
use crate::plugin::call::{PluginAnswer, PluginCall};
use crate::status::Status;

/// Longest request line the agent accepts: bounds the memory one client can use.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Longest reply line the CLI accepts. Replies come from our own agent, but
/// the status snapshot lists every peer's connections, so it grows with the
/// square of the mesh: 1.3 MB of JSON at 100 peers, about 8 MB at 250.
pub const MAX_REPLY_BYTES: u64 = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// Is an agent there? Answered by the socket server itself with the
    /// peer's name ([`Reply::Message`]): cheaper than a status, which lists
    /// every peer's connections and waits for the mesh, busy with a storm of
    /// connections just after a launch into a big mesh.
    Ping,
    /// `weave ps`: every attached container, or those named.
    Ps {
        docker: String,
        containers: Vec<String>,
    },
    // Container requests carry the caller's Docker endpoint (DOCKER_HOST),
    // as Weave's CLI talked to whichever Docker its user's environment named.
    Run {
        docker: String,
        spec: Box<ContainerSpec>,
        addrs: Vec<AddrRequest>,
    },
    Attach {
        docker: String,
        container: String,
        addrs: Vec<AddrRequest>,
    },
    /// `weave detach`: the addresses given (all when none); the port goes
    /// with the last address.
    Detach {
        docker: String,
        container: String,
        addrs: Vec<AddrRequest>,
    },
    /// Add peers to the targets (`weave connect`), or make them the
    /// targets (`--replace`).
    Connect {
        peers: Vec<String>,
        replace: bool,
    },
    /// Remove peers from the targets (`weave forget`).
    Forget {
        peers: Vec<String>,
    },
    /// Take over the address space of a dead peer (`weave rmpeer`).
    RmPeer {
        peer: String,
    },
    /// Hand this peer's address space to another before `weave reset`.
    Leave,
    /// `weave prime`: wait until IP allocation is initialised (the peers
    /// agreed), proposing it if needed.
    Prime,
    /// `weave dns-add` (`add`) and `weave dns-remove`: a name for some or
    /// all (`ips` empty) of an attached container's addresses.
    DnsEdit {
        docker: String,
        container: String,
        ips: Vec<std::net::Ipv4Addr>,
        fqdn: Option<String>,
        add: bool,
    },
    /// `weave expose`: addresses for the host on the bridge, each in its
    /// subnet (allocated from the ring for `net:`), so the host reaches that
    /// subnet's containers on every host; an exposed subnet is exposed again
    /// with the same address.
    Expose {
        addrs: Vec<AddrRequest>,
    },
    /// `weave hide`: the host's addresses in these subnets go.
    Hide {
        addrs: Vec<AddrRequest>,
    },
    /// `weave dns-lookup`: the addresses of a name.
    DnsLookup {
        name: String,
    },
    Stop,
    /// CNI ADD (the `weave-net` plugin): a port into the pod's namespace,
    /// through the same path as `weave attach`.
    CniAdd {
        attachment: CniAttachment,
        netns: PathBuf,
        addrs: Vec<AddrRequest>,
    },
    /// CNI DEL: the port goes, the addresses come back; nothing to do when
    /// the attachment is unknown.
    CniDel {
        attachment: CniAttachment,
    },
    /// CNI CHECK: the attachment is recorded, in that namespace, with both
    /// ends of its port present and up.
    CniCheck {
        attachment: CniAttachment,
        netns: PathBuf,
    },
    /// CNI GC: every CNI attachment not in `valid` is removed.
    CniGc {
        valid: Vec<CniAttachment>,
    },
    /// A call of the Docker network or IPAM plugin that needs the agent.
    DockerPlugin(PluginCall),
}

/// A CNI attachment is identified by the pair (`CNI_CONTAINERID`, `CNI_IFNAME`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// A route in a pod: to `dst`, through `gw` (none: on-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    pub dst: Ipv4Net,
    pub gw: Option<std::net::Ipv4Addr>,
}

/// The resolver a pod is given: weaveDNS, searching its domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniDns {
    pub nameserver: std::net::Ipv4Addr,
    /// The domain without its final dot (`weave.local`).
    pub search: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Status(Box<Status>),
    Ps(Vec<PsEntry>),
    Attached {
        container_id: String,
        cidrs: Vec<Ipv4Net>,
    },
    /// The addresses freed.
    Detached {
        cidrs: Vec<Ipv4Net>,
    },
    /// A pod's port (CNI ADD): what the plugin's result reports.
    CniAttached {
        host_ifname: String,
        mac: Mac,
        mtu: u32,
        cidrs: Vec<Ipv4Net>,
        /// The routes the agent set in the pod, for the result.
        #[serde(default)]
        routes: Vec<CniRoute>,
        /// weaveDNS, for the pod's resolver (the runtime writes it).
        #[serde(default)]
        dns: Option<CniDns>,
    },
    /// CNI GC: the attachments removed.
    CniCollected(Vec<CniAttachment>),
    /// The agent's answer to a Docker plugin call.
    DockerPlugin(PluginAnswer),
    /// Done, nothing to report.
    Done,
    /// Done, with a line for the user.
    Message(String),
    Stopping,
}

/// What the agent answers: a reply, or a one-line error for the user.
pub type Response = Result<Reply, String>;

/// One line of `weave ps`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PsEntry {
    pub container_id: String,
    /// The name `weave ps` was given for it, printed instead of the id (as
    /// Weave does).
    pub asked_as: Option<String>,
    pub mac: Mac,
    pub cidrs: Vec<Ipv4Net>,
}

impl std::fmt::Display for PsEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Weave prints the first 12 characters of what names the container.
        let shown = self.asked_as.as_ref().unwrap_or(&self.container_id);
        let short: String = shown.chars().take(12).collect();
        write!(f, "{short} {}", self.mac)?;
        for cidr in &self.cidrs {
            write!(f, " {cidr}")?;
        }
        Ok(())
    }
}
