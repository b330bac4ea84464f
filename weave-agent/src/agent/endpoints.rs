//! Attaching containers to the bridge and detaching them: `run`, `attach`,
//! `detach`, and keeping the records true across restarts and deaths.

use anyhow::{Context as _, anyhow, bail};
use ipnet::Ipv4Net;
use weave_common::{Endpoint, EndpointAddr, MAX_ENDPOINT_ADDRS};

use super::Agent;
use crate::api::Reply;
use crate::config::{BRIDGE, CONTAINER_PORT_PREFIX, GUEST_TMP_PREFIX};
use crate::docker::{ContainerInfo, Docker, DockerError};
use crate::docker_args::ContainerSpec;
use crate::ipam::AddrRequest;
use crate::mac::Mac;
use crate::netlink::{GuestConfig, add_guest_addresses, configure_guest};
use crate::state::EndpointRecord;

/// The map value the eBPF classifier checks frames of this container against.
fn classifier_entry(mac: Mac, cidrs: &[Ipv4Net]) -> Endpoint {
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
                Ok(info) if info.pid != 0 => self.plumb(&info, &cidrs).await,
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
        if let Err(e) = self.plumb(&info, &cidrs).await {
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
            add_guest_addresses(record.pid, new.clone()).await?;
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

    /// Creates the container's port: `vethwepl<pid>` on the bridge, `ethwe`
    /// inside. The classifier is attached before the host side comes up.
    async fn plumb(&mut self, info: &ContainerInfo, cidrs: &[Ipv4Net]) -> anyhow::Result<()> {
        let host = format!("{CONTAINER_PORT_PREFIX}{}", info.pid);
        let guest = format!("{GUEST_TMP_PREFIX}{}", info.pid);
        // Left over from a container that had this PID before.
        self.netlink.delete(&host).await?;
        self.netlink.delete(&guest).await?;
        let mac = Mac::random_local();
        let result = async {
            self.netlink.create_veth(&host, &guest, self.mtu).await?;
            self.netlink.set_master(&host, self.bridge_index).await?;
            self.netlink.move_to_netns_of(&guest, info.pid).await?;
            configure_guest(
                info.pid,
                GuestConfig {
                    arrived_as: guest.clone(),
                    mac: mac.0,
                    mtu: self.mtu,
                    cidrs: cidrs.to_vec(),
                },
            )
            .await?;
            self.classifier
                .attach_endpoint(&host, &classifier_entry(mac, cidrs))?;
            self.netlink.set_up(&host).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = self.classifier.detach_endpoint(&host);
            let _ = self.netlink.delete(&host).await;
            return Err(e).with_context(|| format!("attaching container {}", info.name));
        }
        self.endpoints.push(EndpointRecord {
            container_id: info.id.clone(),
            container_name: info.name.clone(),
            pid: info.pid,
            host_ifname: host,
            mac,
            cidrs: cidrs.to_vec(),
        });
        self.save()?;
        tracing::info!(container = %info.name, addrs = ?cidrs, "attached");
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
    async fn forget_endpoint(&mut self, i: usize) -> anyhow::Result<()> {
        let record = self.endpoints[i].clone();
        self.classifier.detach_endpoint(&record.host_ifname)?;
        self.netlink.delete(&record.host_ifname).await?;
        self.release(&record.cidrs).await;
        self.endpoints.remove(i);
        self.save()?;
        tracing::info!(container = %record.container_name, "detached");
        Ok(())
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
