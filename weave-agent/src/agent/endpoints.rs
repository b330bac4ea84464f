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
use crate::netlink::{GuestConfig, NetnsRef, add_guest_addresses, configure_guest};
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
    fn find(&self, container: &str) -> Option<usize> {
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
        });
        self.save()?;
        tracing::info!(container = %guest.name, addrs = ?cidrs, "attached");
        Ok(())
    }

    pub(super) async fn detach(&mut self, docker: &str, container: &str) -> anyhow::Result<Reply> {
        let i = if let Some(i) = self.find(container) {
            i
        } else {
            // Not ours by id or name; ask Docker, for a clear answer.
            let info = Docker::connect(docker).await?.inspect(container).await?;
            self.find(&info.id)
                .ok_or_else(|| anyhow!("container {container} is not attached to weave"))?
        };
        self.forget_endpoint(i).await?;
        Ok(Reply::Detached)
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
            crate::docker::DockerEvent::Connected { name, endpoints } => {
                self.name_docker_endpoints(&name, &endpoints);
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
    /// exists, and remove ports that no record explains (they would bypass
    /// isolation).
    pub(super) async fn restore(&mut self, saved: Vec<EndpointRecord>) -> anyhow::Result<()> {
        for record in saved {
            if self.netlink.index_of(&record.host_ifname).await?.is_none() {
                tracing::info!(container = %record.container_name, "container gone while the agent was down");
                continue;
            }
            self.classifier.attach_endpoint(
                &record.host_ifname,
                &classifier_entry(record.mac, &record.cidrs),
            )?;
            self.netlink
                .set_master(&record.host_ifname, self.bridge_index)
                .await?;
            for cidr in &record.cidrs {
                self.ipam.mark(*cidr);
            }
            self.endpoints.push(record);
        }
        for (_, name) in self
            .netlink
            .links_with_prefix(CONTAINER_PORT_PREFIX)
            .await?
        {
            if !self.endpoints.iter().any(|e| e.host_ifname == name) {
                tracing::warn!(port = %name, bridge = BRIDGE, "removing a container port weave has no record of");
                self.netlink.delete(&name).await?;
            }
        }
        Ok(())
    }
}

fn check_count(n: usize) -> anyhow::Result<()> {
    if n > MAX_ENDPOINT_ADDRS {
        bail!("at most {MAX_ENDPOINT_ADDRS} addresses per container");
    }
    Ok(())
}
