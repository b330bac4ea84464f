//! Configuring a container's end of its port from inside the container's
//! network namespace. A netlink socket belongs to the namespace of the thread
//! that opens it, so each operation runs on a short-lived thread that enters
//! the namespace first and is discarded afterwards.

use std::fs::File;

use ipnet::Ipv4Net;
use nix::sched::{CloneFlags, setns};

use super::{Netlink, NetlinkError};
use crate::config::CONTAINER_IFNAME;

/// How the container's interface must end up.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// The name the veth end has when it arrives in the namespace.
    pub arrived_as: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub cidrs: Vec<Ipv4Net>,
}

/// Renames the arrived veth end to `ethwe`, gives it its MAC, MTU and
/// addresses, and brings it (and loopback) up.
pub async fn configure_guest(pid: u32, config: GuestConfig) -> Result<(), NetlinkError> {
    in_netns_of(pid, move |nl| async move {
        nl.rename(&config.arrived_as, CONTAINER_IFNAME, config.mac, config.mtu)
            .await?;

        for cidr in &config.cidrs {
            nl.add_address(CONTAINER_IFNAME, *cidr).await?;
        }
        nl.set_up(CONTAINER_IFNAME).await?;
        nl.set_up("lo").await
    })
    .await
}

/// Adds addresses to an already configured `ethwe`.
pub async fn add_guest_addresses(pid: u32, cidrs: Vec<Ipv4Net>) -> Result<(), NetlinkError> {
    in_netns_of(pid, move |nl| async move {
        for cidr in &cidrs {
            nl.add_address(CONTAINER_IFNAME, *cidr).await?;
        }
        Ok(())
    })
    .await
}

/// Routes the agent's DNS address out of `ethwe`, whatever the container's
/// subnets: the bridge answers for it (see `dns`).
pub async fn add_guest_dns_route(pid: u32, addr: std::net::Ipv4Addr) -> Result<(), NetlinkError> {
    in_netns_of(pid, move |nl| async move {
        nl.replace_host_route(CONTAINER_IFNAME, addr).await
    })
    .await
}

async fn in_netns_of<F, Fut>(pid: u32, work: F) -> Result<(), NetlinkError>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), NetlinkError>>,
{
    let netns_err = move |reason: String| NetlinkError::Netns { pid, reason };
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| netns_err(e.to_string()))?;
    let thread = std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
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
