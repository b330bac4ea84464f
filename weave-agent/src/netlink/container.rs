//! Configuring a container's end of its port from inside the container's
//! network namespace. A netlink socket belongs to the namespace of the thread
//! that opens it, so each operation runs on a short-lived thread that enters
//! the namespace first and is discarded afterwards.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use nix::sched::{CloneFlags, setns};

use super::{Netlink, NetlinkError};

/// Which network namespace a container's end of its port lives in: a Docker
/// container's is named by its init's PID, a CNI pod's by the path the
/// runtime gives (`CNI_NETNS`, a bind mount under `/var/run/netns` or a
/// `/proc/<pid>/ns/net`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsRef {
    Pid(u32),
    Path(PathBuf),
}

impl NetnsRef {
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Self::Path(path) => path.clone(),
        }
    }

    /// Opens the namespace, for `setns` or a link's `IFLA_NET_NS_FD`.
    pub fn open(&self) -> Result<File, NetlinkError> {
        File::open(self.path()).map_err(|e| NetlinkError::Netns {
            netns: self.clone(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pid(pid) => write!(f, "the network namespace of process {pid}"),
            Self::Path(path) => write!(f, "network namespace {}", path.display()),
        }
    }
}

/// How the container's interface must end up.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// The name the veth end has when it arrives in the namespace.
    pub arrived_as: String,
    /// Its name once configured: `ethwe` for Docker containers, the
    /// runtime's `CNI_IFNAME` for pods.
    pub ifname: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub cidrs: Vec<Ipv4Net>,
}

/// Renames the arrived veth end to its final name, gives it its MAC, MTU
/// and addresses, and brings it (and loopback) up. Fails when an interface
/// of that name exists already (CNI requires it).
pub async fn configure_guest(netns: &NetnsRef, config: GuestConfig) -> Result<(), NetlinkError> {
    in_netns(netns, move |nl| async move {
        nl.rename(&config.arrived_as, &config.ifname, config.mac, config.mtu)
            .await?;

        for cidr in &config.cidrs {
            nl.add_address(&config.ifname, *cidr).await?;
        }
        nl.set_up(&config.ifname).await?;
        nl.set_up("lo").await
    })
    .await
}

/// Adds addresses to an already configured interface.
pub async fn add_guest_addresses(
    netns: &NetnsRef,
    ifname: &str,
    cidrs: Vec<Ipv4Net>,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    in_netns(netns, move |nl| async move {
        for cidr in &cidrs {
            nl.add_address(&ifname, *cidr).await?;
        }
        Ok(())
    })
    .await
}

/// Removes addresses from the guest's interface (a partial `weave detach`).
pub async fn del_guest_addresses(
    netns: &NetnsRef,
    ifname: &str,
    cidrs: Vec<Ipv4Net>,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    let inner = netns.clone();
    in_netns(netns, move |nl| async move {
        // Removing the first address of a subnet removes the others of that
        // subnet with it, unless they are promoted (this thread is in the
        // container's namespace, so this is the container's setting).
        let promote = format!("/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries");
        std::fs::write(&promote, "1").map_err(|e| NetlinkError::Netns {
            netns: inner,
            reason: format!("writing {promote}: {e}"),
        })?;
        for cidr in &cidrs {
            nl.remove_address(&ifname, *cidr).await?;
        }
        Ok(())
    })
    .await
}

/// The guest announces `cidrs` with gratuitous ARP (see `garp`). Called
/// once the host end is up: before, the frames would go nowhere.
pub async fn announce_guest_addresses(
    netns: &NetnsRef,
    ifname: &str,
    cidrs: &[Ipv4Net],
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    let addrs: Vec<_> = cidrs.iter().map(Ipv4Net::addr).collect();
    let inner = netns.clone();
    in_netns(netns, move |nl| async move {
        let index = nl.require(&ifname).await?;
        let mac = nl
            .mac_of(&ifname)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(ifname.clone()))?;
        super::garp::announce(index, mac, &addrs).map_err(|e| NetlinkError::Netns {
            netns: inner,
            reason: format!("announcing the addresses of {ifname}: {e}"),
        })
    })
    .await
}

/// [`announce_guest_addresses`] from the guest's interface with MAC `mac`,
/// whatever its name (a Docker network's endpoint, named by Docker).
pub async fn announce_by_mac(
    netns: &NetnsRef,
    mac: [u8; 6],
    cidrs: &[Ipv4Net],
) -> Result<(), NetlinkError> {
    let addrs: Vec<_> = cidrs.iter().map(Ipv4Net::addr).collect();
    let inner = netns.clone();
    in_netns(netns, move |nl| async move {
        let shown = crate::mac::Mac(mac).to_string();
        let index = nl
            .index_with_mac(mac)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(format!("with MAC {shown}")))?;
        super::garp::announce(index, mac, &addrs).map_err(|e| NetlinkError::Netns {
            netns: inner,
            reason: format!("announcing the addresses of the interface with MAC {shown}: {e}"),
        })
    })
    .await
}

/// How the guest's interface stands (CNI's CHECK): `None` when it is
/// missing, else whether it is up and its IPv4 addresses.
pub async fn guest_state(
    netns: &NetnsRef,
    ifname: &str,
) -> Result<Option<(bool, Vec<Ipv4Net>)>, NetlinkError> {
    let ifname = ifname.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(netns, move |nl| async move {
        let state = if nl.index_of(&ifname).await?.is_some() {
            Some((nl.is_up(&ifname).await?, nl.addresses_of(&ifname).await?))
        } else {
            None
        };
        let _ = tx.send(state);
        Ok(())
    })
    .await?;
    // The thread has finished: its answer is waiting.
    Ok(rx.try_recv().unwrap_or(None))
}

/// What the kernel shows of a guest's interface: enough to rebuild the
/// record of a port the agent lost (see `agent::adopt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLink {
    /// The index, in the host's namespace, of the veth end it is paired with.
    pub peer_index: Option<u32>,
    pub mac: [u8; 6],
    pub cidrs: Vec<Ipv4Net>,
}

/// The guest's interface `ifname` as the kernel shows it, `None` when the
/// namespace has none of that name (or it has no MAC).
pub async fn guest_link(netns: &NetnsRef, ifname: &str) -> Result<Option<GuestLink>, NetlinkError> {
    let ifname = ifname.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(netns, move |nl| async move {
        let link = match nl.mac_of(&ifname).await? {
            Some(mac) => Some(GuestLink {
                peer_index: nl.peer_index_of(&ifname).await?,
                mac,
                cidrs: nl.addresses_of(&ifname).await?,
            }),
            None => None,
        };
        let _ = tx.send(link);
        Ok(())
    })
    .await?;
    // The thread has finished: its answer is waiting.
    Ok(rx.try_recv().unwrap_or(None))
}

/// Routes the agent's DNS address out of `ethwe`, whatever the container's
/// subnets: the bridge answers for it (see `dns`).
pub async fn add_guest_dns_route(pid: u32, addr: std::net::Ipv4Addr) -> Result<(), NetlinkError> {
    in_netns(&NetnsRef::Pid(pid), move |nl| async move {
        nl.replace_host_route(crate::config::CONTAINER_IFNAME, addr)
            .await
    })
    .await
}

/// A pod's routes (CNI ADD): the DNS address out of `ifname` (on-link,
/// whatever the pod's subnet), and a default route through `gateway`, the
/// node's exposed address in the pod's subnet, when there is one.
pub async fn add_guest_routes(
    netns: &NetnsRef,
    ifname: &str,
    dns: Option<std::net::Ipv4Addr>,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    in_netns(netns, move |nl| async move {
        if let Some(dns) = dns {
            nl.replace_host_route(&ifname, dns).await?;
        }
        if let Some(gateway) = gateway {
            nl.replace_default_route(&ifname, gateway).await?;
        }
        Ok(())
    })
    .await
}

async fn in_netns<F, Fut>(netns: &NetnsRef, work: F) -> Result<(), NetlinkError>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), NetlinkError>>,
{
    let netns_err = |reason: String| NetlinkError::Netns {
        netns: netns.clone(),
        reason,
    };
    let ns = netns.open()?;
    let inner = netns.clone();
    let thread = std::thread::Builder::new()
        .name("netns".to_owned())
        .spawn(move || {
            let netns_err = |reason: String| NetlinkError::Netns {
                netns: inner.clone(),
                reason,
            };
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.to_string()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| netns_err(e.to_string()))?;
            runtime.block_on(async move { work(Netlink::connect()?).await })
        })
        .map_err(|e| netns_err(e.to_string()))?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| netns_err(e.to_string()))?
        .unwrap_or_else(|_| Err(netns_err("the namespace thread panicked".into())))
}
