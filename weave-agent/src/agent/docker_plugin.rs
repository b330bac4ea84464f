//! The agent's side of the Docker network and IPAM plugin (see
//! `crate::plugin`): Docker networks are subnets, their endpoints are ports
//! made by the same [`Agent::plumb`] as `weave attach`'s (so the classifier
//! isolates the networks from each other), and their addresses come from
//! the ring through the IPAM driver.

use anyhow::{anyhow, bail};
use ipnet::Ipv4Net;

use super::Agent;
use super::endpoints::Guest;
use crate::api::Reply;
use crate::config::GUEST_TMP_PREFIX;
use crate::ipam::AddrRequest;
use crate::netlink::announce_by_mac;
use crate::plugin::call::{PluginAnswer, PluginCall};

/// The host port of a Docker network's endpoint is `vethwepl` + this: a
/// `d` (never a PID, nor a pod's `c`) and the first 6 hex digits of the
/// endpoint ID, within the 15 bytes of an interface name.
fn port_suffix(endpoint_id: &str) -> String {
    let short: String = endpoint_id.chars().take(6).collect();
    format!("d{short}")
}

impl Agent {
    fn find_docker_endpoint(&self, endpoint_id: &str) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|e| e.docker_network.is_some() && e.container_id == endpoint_id)
    }

    fn docker_network(&self, network_id: &str) -> anyhow::Result<&[Ipv4Net]> {
        self.docker_networks
            .get(network_id)
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow!("network {network_id} is not a weave network on this host"))
    }

    pub(super) async fn docker_plugin(&mut self, call: PluginCall) -> anyhow::Result<Reply> {
        let answer = match call {
            PluginCall::CreateNetwork {
                network_id,
                subnets,
            } => self.create_docker_network(network_id, subnets)?,
            PluginCall::DeleteNetwork { network_id } => self.delete_docker_network(&network_id)?,
            PluginCall::CreateEndpoint {
                network_id,
                endpoint_id,
                cidr,
                mac,
            } => {
                let subnets = self.docker_network(&network_id)?;
                if !subnets.iter().any(|s| s.contains(&cidr.addr())) {
                    bail!("address {cidr} is not in network {network_id}'s subnets {subnets:?}");
                }
                if self.find_docker_endpoint(&endpoint_id).is_some() {
                    bail!("endpoint {endpoint_id} exists already");
                }
                let short: String = endpoint_id.chars().take(12).collect();
                let guest = Guest {
                    name: format!("docker:{short}"),
                    port_suffix: port_suffix(&endpoint_id),
                    id: endpoint_id,
                    pid: 0,
                    netns: None,
                    mac,
                    docker_network: Some(network_id),
                    cni: None,
                    hostname: None,
                };
                self.plumb(&guest, &[cidr]).await?;
                let record = self.endpoints.last().expect("plumb pushed the record");
                PluginAnswer::Mac(record.mac)
            }
            PluginCall::DeleteEndpoint { endpoint_id, .. } => {
                // Idempotent: Docker retries a removal that failed half-way.
                if let Some(i) = self.find_docker_endpoint(&endpoint_id) {
                    self.forget_endpoint(i).await?;
                }
                PluginAnswer::Done
            }
            PluginCall::Join {
                network_id,
                endpoint_id,
            } => {
                let i = self
                    .find_docker_endpoint(&endpoint_id)
                    .ok_or_else(|| anyhow!("endpoint {endpoint_id} is unknown to weave"))?;
                if self.endpoints[i].docker_network.as_deref() != Some(network_id.as_str()) {
                    bail!("endpoint {endpoint_id} is not in network {network_id}");
                }
                PluginAnswer::Joined {
                    src_name: format!("{GUEST_TMP_PREFIX}{}", port_suffix(&endpoint_id)),
                    dns: self.dns.as_ref().map(super::dns::PeerDns::address),
                }
            }
            PluginCall::RequestPool { pool, .. } => {
                let range = self.ipam.ring.range();
                let pool = pool.unwrap_or(self.ipam.default_subnet);
                if !range.contains(&pool) {
                    bail!(
                        "subnet {pool} is outside weave's allocation range {range}: \
                         give a subnet inside it, or launch weave with a --ipalloc-range that includes it"
                    );
                }
                PluginAnswer::Pool(pool)
            }
            // Swarm: the manager's allocator asked the manager's agent for
            // this address (with no address given); each node's Docker now
            // asks its own agent for that very address. The ring is not
            // asked twice: the node borrows it, and its release only
            // returns the borrow.
            PluginCall::RequestAddress {
                subnet,
                address: Some(address),
                global: true,
            } => {
                if !subnet.contains(&address) {
                    bail!("address {address} is not in the pool {subnet}");
                }
                *self.docker_borrowed.entry(address).or_default() += 1;
                PluginAnswer::Address(Ipv4Net::new(address, subnet.prefix_len())?)
            }
            PluginCall::RequestAddress {
                subnet, address, ..
            } => {
                let request = match address {
                    Some(a) => AddrRequest::Explicit(Ipv4Net::new(a, subnet.prefix_len())?),
                    None => AddrRequest::Subnet(subnet),
                };
                let cidrs = self.allocate_addresses(&[request]).await?;
                PluginAnswer::Address(cidrs[0])
            }
            PluginCall::ReleaseAddress {
                subnet,
                address,
                global,
            } => {
                let borrowed = global
                    && self.docker_borrowed.get_mut(&address).is_some_and(|n| {
                        *n -= 1;
                        true
                    });
                if borrowed {
                    self.docker_borrowed.retain(|_, n| *n > 0);
                } else {
                    self.release(&[Ipv4Net::new(address, subnet.prefix_len())?])
                        .await;
                }
                PluginAnswer::Done
            }
            // As `weave connect` and `weave forget` would.
            PluginCall::Discovered { address, new } => {
                let peer = address.to_string();
                tracing::info!(%peer, new, "Docker's node discovery");
                if new {
                    if !self.targets.contains(&peer) {
                        self.connect(vec![peer], false).await?;
                    }
                } else if self.targets.contains(&peer) {
                    self.forget(vec![peer]).await?;
                }
                PluginAnswer::Done
            }
        };
        Ok(Reply::DockerPlugin(answer))
    }

    /// Docker connected container `name` to networks through these
    /// endpoints: the plugin's endpoints among them take the container's
    /// name, so weaveDNS gives it (`dns_sync` follows every event). Docker
    /// never tells the driver which container an endpoint is for; its
    /// event stream does (as Weave's plugin learnt the name from Docker).
    /// Returns the indexes of the endpoints named now: those Docker has
    /// just put into a container.
    pub(super) fn name_docker_endpoints(&mut self, name: &str, endpoints: &[String]) -> Vec<usize> {
        let mut named = Vec::new();
        for id in endpoints {
            if let Some(i) = self.find_docker_endpoint(id)
                && self.endpoints[i].container_name != name
            {
                tracing::info!(endpoint = %id, container = %name, "docker endpoint named");
                self.endpoints[i].container_name = name.to_string();
                named.push(i);
            }
        }
        if !named.is_empty()
            && let Err(e) = self.save()
        {
            tracing::warn!(error = %e, "saving the endpoints' names");
        }
        named
    }

    /// The gratuitous ARP `weave attach` sends (see `netlink::garp`), for
    /// endpoints Docker has just moved into the namespace of process `pid`:
    /// their container end reaches the container only after `Join`
    /// returned, configured by Docker under a name Docker chose, so the
    /// port's own announcement cannot be sent by `plumb`; the connect
    /// event, seen once the container has started, is the first moment it
    /// can. The interface is found by its MAC, which the agent chose.
    pub(super) async fn announce_docker_endpoints(&self, endpoints: &[usize], pid: u32) {
        if pid == 0 {
            return;
        }
        for &i in endpoints {
            let record = &self.endpoints[i];
            let netns = crate::netlink::NetnsRef::Pid(pid);
            if let Err(e) = announce_by_mac(&netns, record.mac.0, &record.cidrs).await {
                tracing::warn!(endpoint = %record.container_id, error = %e, "announcing a docker endpoint's address");
            }
        }
    }

    fn create_docker_network(
        &mut self,
        network_id: String,
        subnets: Vec<Ipv4Net>,
    ) -> anyhow::Result<PluginAnswer> {
        if let Some(existing) = self.docker_networks.get(&network_id) {
            if *existing == subnets {
                return Ok(PluginAnswer::Done);
            }
            bail!("network {network_id} exists already with subnets {existing:?}");
        }
        if let Some((other, theirs, ours)) = overlap(&self.docker_networks, &subnets) {
            bail!("subnet {ours} overlaps subnet {theirs} of weave network {other}");
        }
        tracing::info!(network = %network_id, ?subnets, "docker network created");
        self.docker_networks.insert(network_id, subnets);
        self.save()?;
        Ok(PluginAnswer::Done)
    }

    fn delete_docker_network(&mut self, network_id: &str) -> anyhow::Result<PluginAnswer> {
        if let Some(e) = self
            .endpoints
            .iter()
            .find(|e| e.docker_network.as_deref() == Some(network_id))
        {
            bail!(
                "network {network_id} is in use by endpoint {}",
                e.container_id
            );
        }
        if self.docker_networks.remove(network_id).is_some() {
            tracing::info!(network = %network_id, "docker network deleted");
            self.save()?;
        }
        Ok(PluginAnswer::Done)
    }
}

/// The first subnet of `subnets` that overlaps one of another network's.
fn overlap<'a>(
    networks: &'a std::collections::BTreeMap<String, Vec<Ipv4Net>>,
    subnets: &[Ipv4Net],
) -> Option<(&'a str, Ipv4Net, Ipv4Net)> {
    networks.iter().find_map(|(id, theirs)| {
        theirs.iter().find_map(|t| {
            subnets
                .iter()
                .find(|s| s.contains(t) || t.contains(*s))
                .map(|s| (id.as_str(), *t, *s))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_and_never_look_like_a_pid_or_a_pod() {
        let s = port_suffix("0123456789abcdef");
        assert_eq!(s, "d012345");
        assert!(crate::config::CONTAINER_PORT_PREFIX.len() + s.len() <= 15);
        assert!(GUEST_TMP_PREFIX.len() + s.len() <= 15);
    }

    #[test]
    fn overlapping_subnets_are_found() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let networks = [("n1".to_string(), vec![net("10.5.0.0/24")])].into();
        assert!(overlap(&networks, &[net("10.6.0.0/24")]).is_none());
        assert_eq!(
            overlap(&networks, &[net("10.5.0.0/25")]),
            Some(("n1", net("10.5.0.0/24"), net("10.5.0.0/25")))
        );
        assert!(overlap(&networks, &[net("10.0.0.0/8")]).is_some());
    }
}
