//! Attaching containers to the bridge and detaching them: `run`, `attach`,
//! `detach`, and keeping the records true across restarts and deaths.

use anyhow::{Context as _, anyhow, bail};
use ipnet::Ipv4Net;
use weave_common::{Endpoint, EndpointAddr, MAX_ENDPOINT_ADDRS};

use super::Agent;
use crate::api::Reply;
use crate::config::{BRIDGE, CONTAINER_IFNAME, CONTAINER_PORT_PREFIX, GUEST_TMP_PREFIX};
use crate::docker::{ContainerInfo, Docker, DockerError};
use crate::docker_args::ContainerSpec;
use crate::ipam::AddrRequest;
use crate::mac::Mac;
use crate::netlink::{
    GuestConfig, NetnsRef, add_guest_addresses, announce_guest_addresses, configure_guest,
    del_guest_addresses,
};
use crate::state::{CniRecord, EndpointRecord};

/// What gets a port on the bridge: a Docker container (its namespace named
/// by its init's PID, `ethwe` inside) or a pod the CNI plugin asked for (its
/// namespace by path, the runtime's interface name inside). Both go through
/// [`Agent::plumb`], so a pod gets the same port, addresses and isolation.
pub(super) struct Guest {
    pub(super) id: String,
    pub(super) name: String,
    /// 0 for a pod or a Docker network's endpoint.
    pub(super) pid: u32,
    /// None for a Docker network's endpoint: its container end stays in the
    /// host's namespace under its temporary name, for Docker to move in and
    /// configure (libnetwork's remote driver protocol).
    pub(super) netns: Option<NetnsRef>,
    /// The MAC Docker chose for the endpoint; otherwise a random one.
    pub(super) mac: Option<Mac>,
    /// The Docker network of a Docker network's endpoint.
    pub(super) docker_network: Option<String>,
    /// Ends the host port's name (`vethwepl<suffix>`, at most 15 bytes).
    pub(super) port_suffix: String,
    pub(super) cni: Option<CniRecord>,
    /// The host name a container was given (`-h`), if any.
    pub(super) hostname: Option<String>,
}

impl Guest {
    fn docker(info: &ContainerInfo) -> Self {
        Self {
            id: info.id.clone(),
            name: info.name.clone(),
            pid: info.pid,
            netns: Some(NetnsRef::Pid(info.pid)),
            mac: None,
            docker_network: None,
            port_suffix: info.pid.to_string(),
            cni: None,
            hostname: Some(info.hostname.clone()).filter(|h| !h.is_empty()),
        }
    }

    fn ifname(&self) -> &str {
        self.cni.as_ref().map_or(CONTAINER_IFNAME, |c| &c.ifname)
    }
}

/// The map value the eBPF classifier checks frames of this container against.
pub(super) fn classifier_entry(mac: Mac, cidrs: &[Ipv4Net]) -> Endpoint {
    let mut ep = Endpoint {
        mac: mac.0,
        addr_count: cidrs.len().min(MAX_ENDPOINT_ADDRS) as u16,
        ..Default::default()
    };
    for (slot, cidr) in ep.addrs.iter_mut().zip(cidrs) {
        *slot = EndpointAddr::new(u32::from(cidr.addr()), cidr.prefix_len());
    }
    ep
}

impl Agent {
    pub(super) fn find(&self, container: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| {
            e.container_id == container
                || e.container_name == container
                || (container.len() >= 4 && e.container_id.starts_with(container))
        })
    }

    /// `weave run`: reserve the addresses first, so that a request that cannot
    /// be served creates no container at all.
    pub(super) async fn run(
        &mut self,
        docker: &str,
        spec: Box<ContainerSpec>,
        addrs: Vec<AddrRequest>,
    ) -> anyhow::Result<Reply> {
        check_count(addrs.len())?;
        let cidrs = self.allocate_addresses(&addrs).await?;
        let result = async {
            let docker = Docker::connect(docker).await?;
            let id = docker.create_and_start(&spec).await?;
            let plumbed = match docker.inspect(&id).await {
                Ok(info) if info.pid != 0 => self.plumb(&Guest::docker(&info), &cidrs).await,
                Ok(info) => Err(DockerError::NotRunning(info.name).into()),
                Err(e) => Err(e.into()),
            };
            if plumbed.is_err() {
                docker.remove(&id).await;
            }
            plumbed.map(|()| id)
        }
        .await;
        match result {
            Ok(container_id) => Ok(Reply::Attached {
                container_id,
                cidrs,
            }),
            Err(e) => {
                self.release(&cidrs).await;
                Err(e)
            }
        }
    }

    /// `weave attach`: a container already attached gets the extra addresses.
    pub(super) async fn attach(
        &mut self,
        docker: &str,
        container: &str,
        addrs: Vec<AddrRequest>,
    ) -> anyhow::Result<Reply> {
        let info = Docker::connect(docker).await?.inspect(container).await?;
        if info.pid == 0 {
            return Err(DockerError::NotRunning(container.to_string()).into());
        }
        if let Some(i) = self
            .endpoints
            .iter()
            .position(|e| e.container_id == info.id)
        {
            return self.add_addresses(i, addrs).await;
        }
        check_count(addrs.len())?;
        let cidrs = self.allocate_addresses(&addrs).await?;
        if let Err(e) = self.plumb(&Guest::docker(&info), &cidrs).await {
            self.release(&cidrs).await;
            return Err(e);
        }
        Ok(Reply::Attached {
            container_id: info.id,
            cidrs,
        })
    }

    async fn add_addresses(&mut self, i: usize, addrs: Vec<AddrRequest>) -> anyhow::Result<Reply> {
        let record = self.endpoints[i].clone();
        check_count(record.cidrs.len() + addrs.len())?;
        let new = self.allocate_addresses(&addrs).await?;
        let mut all = record.cidrs.clone();
        all.extend(&new);
        let result = async {
            // The classifier learns the addresses before the container uses them.
            self.classifier
                .attach_endpoint(&record.host_ifname, &classifier_entry(record.mac, &all))?;
            add_guest_addresses(&record.netns(), record.guest_ifname(), new.clone()).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            self.release(&new).await;
            let _ = self.classifier.attach_endpoint(
                &record.host_ifname,
                &classifier_entry(record.mac, &record.cidrs),
            );
            return Err(e);
        }
        self.endpoints[i].cidrs = all;
        self.save()?;
        announce(&record.netns(), record.guest_ifname(), &new).await;
        Ok(Reply::Attached {
            container_id: record.container_id,
            cidrs: new,
        })
    }

    /// Creates the guest's port: `vethwepl<suffix>` on the bridge, and inside
    /// the guest's namespace `ethwe` (a Docker container) or the runtime's
    /// interface name (a CNI pod). The classifier is attached before the
    /// host side comes up.
    pub(super) async fn plumb(&mut self, guest: &Guest, cidrs: &[Ipv4Net]) -> anyhow::Result<()> {
        let host = format!("{CONTAINER_PORT_PREFIX}{}", guest.port_suffix);
        let tmp = format!("{GUEST_TMP_PREFIX}{}", guest.port_suffix);
        if self.endpoints.iter().any(|e| e.host_ifname == host) {
            bail!("port {host} is taken by another container");
        }
        // Left over from a container that had this PID (or port name) before.
        self.netlink.delete(&host).await?;
        self.netlink.delete(&tmp).await?;
        let mac = guest.mac.unwrap_or_else(Mac::random_local);
        let result = async {
            self.netlink.create_veth(&host, &tmp, self.mtu).await?;
            self.netlink.set_master(&host, self.bridge_index).await?;
            if let Some(netns) = &guest.netns {
                self.netlink.move_to_netns(&tmp, netns).await?;
                configure_guest(
                    netns,
                    GuestConfig {
                        arrived_as: tmp.clone(),
                        ifname: guest.ifname().to_owned(),
                        mac: mac.0,
                        mtu: self.mtu,
                        cidrs: cidrs.to_vec(),
                    },
                )
                .await?;
            }
            self.classifier
                .attach_endpoint(&host, &classifier_entry(mac, cidrs))?;
            self.netlink.set_up(&host).await?;
            anyhow::Ok(())
        }
        .await;
        if result.is_ok()
            && let Some(netns) = &guest.netns
        {
            // The bridge drops the port's frames until the kernel has seen
            // it come up (asynchronously, in microseconds to milliseconds):
            // an announcement sent before would reach nobody.
            let deadline = tokio::time::Instant::now() + PORT_UP_WAIT;
            while !self.netlink.is_running(&host).await.unwrap_or(true)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(PORT_UP_POLL).await;
            }
            announce(netns, guest.ifname(), cidrs).await;
        }
        if let Err(e) = result {
            let _ = self.classifier.detach_endpoint(&host);
            // The temporary end may be stranded in the guest's namespace
            // under its own name: deleting the host end takes it along.
            let _ = self.netlink.delete(&host).await;
            return Err(e).with_context(|| format!("attaching container {}", guest.name));
        }
        self.endpoints.push(EndpointRecord {
            container_id: guest.id.clone(),
            container_name: guest.name.clone(),
            pid: guest.pid,
            host_ifname: host,
            mac,
            cidrs: cidrs.to_vec(),
            cni: guest.cni.clone(),
            docker_network: guest.docker_network.clone(),
            hostname: guest.hostname.clone(),
        });
        self.save()?;
        tracing::info!(container = %guest.name, addrs = ?cidrs, "attached");
        Ok(())
    }

    /// `weave detach [ADDR...] CONTAINER`: frees the addresses given (all
    /// when none); the port goes when no address is left, as in Weave.
    pub(super) async fn detach(
        &mut self,
        docker: &str,
        container: &str,
        addrs: &[AddrRequest],
    ) -> anyhow::Result<Reply> {
        let i = if let Some(i) = self.find(container) {
            i
        } else {
            // Not ours by id or name; ask Docker, for a clear answer.
            let info = Docker::connect(docker).await?.inspect(container).await?;
            self.find(&info.id)
                .ok_or_else(|| anyhow!("container {container} is not attached to weave"))?
        };
        let record = &self.endpoints[i];
        let freed = if addrs.is_empty() {
            record.cidrs.clone()
        } else {
            addresses_to_free(&record.cidrs, addrs, self.ipam.default_subnet)
                .map_err(|e| anyhow!("container {container} {e}"))?
        };
        if freed.len() == record.cidrs.len() {
            self.forget_endpoint(i).await?;
        } else {
            self.remove_addresses(i, &freed).await?;
        }
        Ok(Reply::Detached { cidrs: freed })
    }

    /// Takes `freed` (some of its addresses) from a container: out of its
    /// interface, then out of what the classifier lets it use, then back
    /// to the allocator.
    async fn remove_addresses(&mut self, i: usize, freed: &[Ipv4Net]) -> anyhow::Result<()> {
        let record = self.endpoints[i].clone();
        let kept: Vec<Ipv4Net> = record
            .cidrs
            .iter()
            .filter(|c| !freed.contains(c))
            .copied()
            .collect();
        del_guest_addresses(&record.netns(), record.guest_ifname(), freed.to_vec()).await?;
        self.classifier
            .attach_endpoint(&record.host_ifname, &classifier_entry(record.mac, &kept))?;
        if record.docker_network.is_none() {
            self.release(freed).await;
        }
        self.endpoints[i].cidrs = kept;
        self.save()?;
        tracing::info!(container = %record.container_name, addrs = ?freed, "detached addresses");
        Ok(())
    }

    /// Removes a container's port (deleting the host end deletes `ethwe`)
    /// and frees its addresses.
    pub(super) async fn forget_endpoint(&mut self, i: usize) -> anyhow::Result<()> {
        let record = self.endpoints[i].clone();
        self.classifier.detach_endpoint(&record.host_ifname)?;
        self.netlink.delete(&record.host_ifname).await?;
        // A Docker network's addresses are released by Docker, through
        // the IPAM driver (or are not the ring's).
        if record.docker_network.is_none() {
            self.release(&record.cidrs).await;
        }
        self.endpoints.remove(i);
        self.save()?;
        tracing::info!(container = %record.container_name, "detached");
        Ok(())
    }

    pub async fn docker_event(&mut self, event: crate::docker::DockerEvent) {
        match event {
            crate::docker::DockerEvent::Died(id) => self.container_died(&id).await,
            crate::docker::DockerEvent::Connected {
                name,
                endpoints,
                pid,
            } => {
                let new = self.name_docker_endpoints(&name, &endpoints);
                self.announce_docker_endpoints(&new, pid).await;
            }
        }
    }

    /// Docker says a container died: if it is ours, its port goes and its
    /// addresses come back.
    pub async fn container_died(&mut self, container_id: &str) {
        let Some(i) = self
            .endpoints
            .iter()
            .position(|e| e.container_id == container_id)
        else {
            return;
        };
        tracing::info!(container = %self.endpoints[i].container_name, "container died");
        if let Err(e) = self.forget_endpoint(i).await {
            tracing::warn!(error = %e, "forgetting a dead container");
        }
    }

    /// A container that died took its veth pair with it: forget it.
    pub(super) async fn prune_dead(&mut self) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.endpoints.len() {
            let host = &self.endpoints[i].host_ifname;
            if self.netlink.index_of(host).await?.is_none() {
                tracing::info!(container = %self.endpoints[i].container_name, "container gone");
                self.forget_endpoint(i).await?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// After a restart: re-attach the classifier to every port that still
    /// exists; a port no record explains is a Docker container's whose
    /// record was lost (rebuilt from the kernel, see `adopt`), or else is
    /// removed (it would bypass isolation). Every address restored is
    /// marked in use, and re-claimed when the ring does not give it to us.
    pub(super) async fn restore(&mut self, saved: Vec<EndpointRecord>) -> anyhow::Result<()> {
        for record in saved {
            if self.netlink.index_of(&record.host_ifname).await?.is_none() {
                tracing::info!(container = %record.container_name, "container gone while the agent was down");
                continue;
            }
            self.reattach(record).await?;
        }
        for (index, name) in self
            .netlink
            .links_with_prefix(CONTAINER_PORT_PREFIX)
            .await?
        {
            if self.endpoints.iter().any(|e| e.host_ifname == name) {
                continue;
            }
            match self.adopt(&name, index).await {
                Ok(record) => {
                    tracing::warn!(port = %name, container = %record.describe(), addrs = ?record.cidrs, "a container port weave had no record of: keeping its addresses");
                    self.reattach(record).await?;
                }
                Err(why) => {
                    tracing::warn!(port = %name, bridge = BRIDGE, %why, "removing a container port weave has no record of");
                    self.netlink.delete(&name).await?;
                }
            }
        }
        Ok(())
    }

    /// A restored port: classified, on the bridge, its addresses in use.
    async fn reattach(&mut self, record: EndpointRecord) -> anyhow::Result<()> {
        self.classifier.attach_endpoint(
            &record.host_ifname,
            &classifier_entry(record.mac, &record.cidrs),
        )?;
        self.netlink
            .set_master(&record.host_ifname, self.bridge_index)
            .await?;
        let holder = record.describe();
        for cidr in &record.cidrs {
            self.ipam.mark(*cidr, &holder);
        }
        self.endpoints.push(record);
        Ok(())
    }
}

/// The container's addresses (`held`, in attach order) that `requests`
/// name, in the order named, each once: an address exactly, a `net:` subnet
/// (or `net:default`) every address in it, as Weave's lookup does. Naming
/// what the container does not hold is an error (the text follows "container
/// NAME").
fn addresses_to_free(
    held: &[Ipv4Net],
    requests: &[AddrRequest],
    default_subnet: Ipv4Net,
) -> Result<Vec<Ipv4Net>, String> {
    let mut freed: Vec<Ipv4Net> = Vec::new();
    for request in requests {
        let found: Vec<Ipv4Net> = match request {
            AddrRequest::Explicit(net) => held
                .iter()
                .filter(|c| c.addr() == net.addr())
                .copied()
                .collect(),
            AddrRequest::Subnet(subnet) => held
                .iter()
                .filter(|c| subnet.contains(&c.addr()))
                .copied()
                .collect(),
            AddrRequest::Default => held
                .iter()
                .filter(|c| default_subnet.contains(&c.addr()))
                .copied()
                .collect(),
        };
        if found.is_empty() {
            return Err(match request {
                AddrRequest::Explicit(net) => format!("does not hold {net}"),
                AddrRequest::Subnet(subnet) => format!("has no address in {subnet}"),
                AddrRequest::Default => {
                    format!("has no address in the default subnet {default_subnet}")
                }
            });
        }
        for net in found {
            if !freed.contains(&net) {
                freed.push(net);
            }
        }
    }
    Ok(freed)
}

/// How long a new port may take to be forwarded by the bridge before its
/// container announces its addresses anyway, and how often to look.
const PORT_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const PORT_UP_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Gratuitous ARP for addresses just given (see `netlink::garp`): a failure
/// only delays the neighbours' learning until their entries expire, so it
/// is logged, not fatal.
async fn announce(netns: &NetnsRef, ifname: &str, cidrs: &[Ipv4Net]) {
    if let Err(e) = announce_guest_addresses(netns, ifname, cidrs).await {
        tracing::warn!(error = %e, "announcing a container's addresses");
    }
}

fn check_count(n: usize) -> anyhow::Result<()> {
    if n > MAX_ENDPOINT_ADDRS {
        bail!("at most {MAX_ENDPOINT_ADDRS} addresses per container");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<Ipv4Net> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn detach_frees_exactly_what_is_named_in_the_order_named() {
        let held = nets(&["10.32.0.1/12", "10.2.0.5/16", "10.2.0.6/16", "10.0.1.1/24"]);
        let default = "10.32.0.0/12".parse().unwrap();
        let free = |reqs: &[AddrRequest]| addresses_to_free(&held, reqs, default);
        assert_eq!(
            free(&[
                AddrRequest::Explicit("10.0.1.1/24".parse().unwrap()),
                AddrRequest::Subnet("10.2.0.0/16".parse().unwrap()),
                AddrRequest::Explicit("10.2.0.5/16".parse().unwrap()),
            ]),
            Ok(nets(&["10.0.1.1/24", "10.2.0.5/16", "10.2.0.6/16"]))
        );
        assert_eq!(free(&[AddrRequest::Default]), Ok(nets(&["10.32.0.1/12"])));
        assert_eq!(
            free(&[AddrRequest::Explicit("10.32.0.9/12".parse().unwrap())]),
            Err("does not hold 10.32.0.9/12".into())
        );
        assert_eq!(
            free(&[AddrRequest::Subnet("10.3.0.0/16".parse().unwrap())]),
            Err("has no address in 10.3.0.0/16".into())
        );
    }
}
