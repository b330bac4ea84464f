//! Link operations in the agent's own network namespace (or whichever one the
//! calling thread is in when the handle is created).

use std::net::IpAddr;
use std::os::fd::AsRawFd as _;

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

use super::{NetlinkError, NetnsRef};
use crate::config::BRIDGE;

const ENODEV: i32 = 19;

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn op(op: &'static str, iface: &str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let iface = iface.to_string();
    move |source| NetlinkError::Op { op, iface, source }
}

fn is_no_device(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -ENODEV)
}

fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace; its
    /// connection task runs on the current tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of `name`, or None when there is no such link.
    pub async fn index_of(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        match self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
        {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(op("looking up", name)(e)),
        }
    }

    pub async fn require(&self, name: &str) -> Result<u32, NetlinkError> {
        self.index_of(name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Names of all links whose name starts with `prefix`, with their indexes.
    pub async fn links_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(u32, String)>, NetlinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(op("listing", "links"))? {
            if let Some(name) = link_name(&msg).filter(|n| n.starts_with(prefix)) {
                out.push((msg.header.index, name.to_string()));
            }
        }
        Ok(out)
    }

    /// Creates the bridge unless it exists; sets its MTU either way. Left
    /// down: the caller brings it up once isolation is in place.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32, NetlinkError> {
        if self.index_of(name).await?.is_none() {
            let msg = LinkBridge::new(name).down().mtu(mtu).build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(op("creating bridge", name))?;
        }
        let index = self.require(name).await?;
        // A bridge whose address was never set takes the lowest of its
        // ports' and changes it as containers come and go; set, it stays
        // (the kernel's NET_ADDR_SET). The data planes know the bridge by
        // its MAC (fastdp's LOCAL_BRIDGE, the host's own frames), and an
        // exposed host's neighbours cache it.
        let mac = self
            .mac_of(name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))?;
        self.set(
            name,
            LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .address(mac.to_vec())
                .build(),
        )
        .await?;
        Ok(index)
    }

    /// Creates a veth pair `name` <-> `peer` with the given MTU, both down.
    pub async fn create_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<u32, NetlinkError> {
        let msg = LinkVeth::new(name, peer).mtu(mtu).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(op("creating veth", name))?;
        let peer_index = self.require(peer).await?;
        self.set(
            peer,
            LinkUnspec::new_with_index(peer_index).mtu(mtu).build(),
        )
        .await?;
        self.require(name).await
    }

    async fn set(&self, name: &str, msg: LinkMessage) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op("configuring", name))
    }

    pub async fn set_master(&self, name: &str, master: u32) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        self.set(
            name,
            LinkUnspec::new_with_index(index).controller(master).build(),
        )
        .await
    }

    pub async fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        self.set(name, LinkUnspec::new_with_index(index).up().build())
            .await
    }

    pub async fn set_down(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        self.set(name, LinkUnspec::new_with_index(index).down().build())
            .await
    }

    pub async fn is_up(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(self.flags_of(name).await?.contains(LinkFlags::Up))
    }

    /// Whether `name` is operationally up (`IFF_RUNNING`): the kernel sets it
    /// (in its link watch work) just before telling the bridge, which only
    /// then forwards the port's frames.
    pub async fn is_running(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(self.flags_of(name).await?.contains(LinkFlags::Running))
    }

    /// The flags of link `name` (none if it went away meanwhile).
    async fn flags_of(&self, name: &str) -> Result<LinkFlags, NetlinkError> {
        let index = self.require(name).await?;
        let msg = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(op("looking up", name))?;
        Ok(msg.map_or_else(LinkFlags::empty, |m| m.header.flags))
    }

    /// Renames, re-addresses and sets the MTU of a link that is down.
    pub async fn rename(
        &self,
        name: &str,
        new_name: &str,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<u32, NetlinkError> {
        let index = self.require(name).await?;
        let msg = LinkUnspec::new_with_index(index)
            .name(new_name.to_string())
            .address(mac.to_vec())
            .mtu(mtu)
            .build();
        self.set(name, msg).await?;
        Ok(index)
    }

    /// Moves a link into a container's network namespace.
    pub async fn move_to_netns(&self, name: &str, netns: &NetnsRef) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        // The file stays open until the kernel has answered.
        let ns = netns.open()?;
        self.set(
            name,
            LinkUnspec::new_with_index(index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .await
    }

    /// Deletes a link if it exists (a veth takes its peer with it).
    pub async fn delete(&self, name: &str) -> Result<(), NetlinkError> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Err(e) if is_no_device(&e) => Ok(()),
            r => r.map_err(op("deleting", name)),
        }
    }

    /// The interfaces that can carry traffic to other hosts: up, holding an
    /// IPv4 address, neither loopback nor weave's own. Names and MTUs.
    pub async fn underlays(&self) -> Result<Vec<(String, u32)>, NetlinkError> {
        let mut addressed = std::collections::HashSet::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(op("listing", "addresses"))? {
            if msg.header.family == AddressFamily::Inet {
                addressed.insert(msg.header.index);
            }
        }
        let mut found = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(op("listing", "links"))? {
            let Some(name) = link_name(&msg) else {
                continue;
            };
            let ours = name == "lo" || name == BRIDGE || name.starts_with("vethwe");
            if ours
                || !msg.header.flags.contains(LinkFlags::Up)
                || !addressed.contains(&msg.header.index)
            {
                continue;
            }
            let mtu = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            });
            if let Some(mtu) = mtu {
                found.push((name.to_owned(), mtu));
            }
        }
        Ok(found)
    }

    /// The smallest MTU among the [`Netlink::underlays`].
    pub async fn underlay_mtu(&self) -> Result<Option<u32>, NetlinkError> {
        Ok(self.underlays().await?.iter().map(|&(_, mtu)| mtu).min())
    }

    /// The link called `name`, `None` when there is none.
    async fn link_named(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Err(e) if is_no_device(&e) => Ok(None),
            found => found.map_err(op("reading", name)),
        }
    }

    /// The hardware address of `name`.
    pub async fn mac_of(&self, name: &str) -> Result<Option<[u8; 6]>, NetlinkError> {
        let Some(msg) = self.link_named(name).await? else {
            return Ok(None);
        };
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        }))
    }

    /// The index of `name`'s other end, for a veth (`IFLA_LINK`: an index in
    /// the namespace where that end lives).
    pub async fn peer_index_of(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let Some(msg) = self.link_named(name).await? else {
            return Ok(None);
        };
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        }))
    }

    /// The index of the link whose hardware address is `mac`, if any.
    pub async fn index_with_mac(&self, mac: [u8; 6]) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(op("listing", "links"))? {
            let has = msg
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Address(bytes) if bytes.as_slice() == mac));
            if has {
                return Ok(Some(msg.header.index));
            }
        }
        Ok(None)
    }

    /// The IPv4 addresses on `name` (none when it does not exist).
    pub async fn addresses_of(&self, name: &str) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(op("listing", "addresses"))? {
            if msg.header.family != AddressFamily::Inet || msg.header.index != index {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(a)) = attr
                    && let Ok(net) = Ipv4Net::new(*a, msg.header.prefix_len)
                {
                    found.push(net);
                }
            }
        }
        Ok(found)
    }

    pub async fn add_address(&self, name: &str, cidr: Ipv4Net) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(cidr.addr()), cidr.prefix_len())
            .execute()
            .await
            .map_err(op("adding an address to", name))
    }

    /// Adds `cidr` to `name` unless it is there already (`weave expose`
    /// again, or after an agent restart that found the bridge as it was).
    pub async fn ensure_address(&self, name: &str, cidr: Ipv4Net) -> Result<(), NetlinkError> {
        if self.addresses_of(name).await?.contains(&cidr) {
            return Ok(());
        }
        self.add_address(name, cidr).await
    }

    /// Removes `cidr` from `name`; nothing to do when it is not there.
    pub async fn remove_address(&self, name: &str, cidr: Ipv4Net) -> Result<(), NetlinkError> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(op("listing", "addresses"))? {
            let matches = msg.header.family == AddressFamily::Inet
                && msg.header.index == index
                && msg.header.prefix_len == cidr.prefix_len()
                && msg.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Address(IpAddr::V4(ip)) if *ip == cidr.addr())
                });
            if matches {
                return self
                    .handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(op("removing an address from", name));
            }
        }
        Ok(())
    }

    /// Adds `addr/32` to `name` unless it is there already (a restarted
    /// agent finds the one it added before).
    pub async fn ensure_host_address(
        &self,
        name: &str,
        addr: std::net::Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        const EEXIST: i32 = 17;
        let index = self.require(name).await?;
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), 32)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -EEXIST => Ok(()),
            other => other.map_err(op("adding an address to", name)),
        }
    }

    /// The default route through `gateway` out of `name`, replacing any.
    pub async fn replace_default_route(
        &self,
        name: &str,
        gateway: std::net::Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(std::net::Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.replace_route(route, "adding a default route through", name)
            .await
    }

    /// Routes `addr/32` straight out of `name` (on-link), replacing any
    /// route to it.
    pub async fn replace_host_route(
        &self,
        name: &str,
        addr: std::net::Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let index = self.require(name).await?;
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        self.replace_route(route, "adding a route through", name)
            .await
    }

    /// Adds `route`, replacing any to the same destination.
    async fn replace_route(
        &self,
        route: rtnetlink::packet_route::route::RouteMessage,
        what: &'static str,
        name: &str,
    ) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(op(what, name))
    }
}
