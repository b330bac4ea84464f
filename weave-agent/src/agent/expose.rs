//! `weave expose` and `weave hide`: the host's own addresses on the bridge.
//!
//! As in Weave, an exposed host holds one address in each exposed subnet
//! on the `weave` bridge; the kernel's prefix route then sends the host's
//! traffic for that subnet over the bridge, to the containers of that subnet
//! on every host. Nothing else is needed for isolation: the classifiers on
//! the container ports judge the host's frames by their source address like
//! any container's, so the host reaches exactly the subnets it has an
//! address in (a hand-made route to another subnet over the bridge is
//! dropped at the far container's port). An address from `net:` is
//! allocated from the ring by this peer and held by it, as Weave held it
//! under the identity `weave:expose`: it is this host's, not a container's.
//!
//! An exposed host is also the gateway of its containers in those subnets
//! (a pod's default route): [`crate::gateway`] keeps the agent's nftables
//! table (masquerading, reply marks) in step with what is exposed.

use anyhow::{anyhow, bail};
use ipnet::Ipv4Net;

use super::Agent;
use crate::api::Reply;
use crate::config::BRIDGE;
use crate::ipam::AddrRequest;

/// The subnet a request names (`net:default` is the default subnet).
fn subnet_of(request: AddrRequest, default_subnet: Ipv4Net) -> Ipv4Net {
    match request {
        AddrRequest::Explicit(net) => net.trunc(),
        AddrRequest::Subnet(net) => net.trunc(),
        AddrRequest::Default => default_subnet.trunc(),
    }
}

/// The exposed address that already serves `request`, if any; an error
/// when the request clashes with what is exposed (the same address with
/// another prefix, or another address in a subnet exposed already: the host
/// has one address per subnet, as the bridge would otherwise pick either).
pub(super) fn already_exposed(
    exposed: &[Ipv4Net],
    request: AddrRequest,
    default_subnet: Ipv4Net,
) -> anyhow::Result<Option<Ipv4Net>> {
    let subnet = subnet_of(request, default_subnet);
    let same_subnet = exposed.iter().find(|e| e.trunc() == subnet).copied();
    match request {
        AddrRequest::Explicit(net) => {
            if let Some(e) = exposed
                .iter()
                .find(|e| e.addr() == net.addr() && **e != net)
            {
                bail!("{} is exposed already as {e}", net.addr());
            }
            match same_subnet {
                Some(e) if e == net => Ok(Some(e)),
                Some(e) => bail!("the host is exposed in {subnet} already, as {e}: hide it first"),
                None => Ok(None),
            }
        }
        AddrRequest::Subnet(_) | AddrRequest::Default => Ok(same_subnet),
    }
}

/// The exposed addresses `request` names for `weave hide`: an address
/// exactly, or whatever is exposed in a subnet.
pub(super) fn to_hide(
    exposed: &[Ipv4Net],
    request: AddrRequest,
    default_subnet: Ipv4Net,
) -> anyhow::Result<Vec<Ipv4Net>> {
    let found: Vec<Ipv4Net> = match request {
        AddrRequest::Explicit(net) => exposed.iter().filter(|e| **e == net).copied().collect(),
        AddrRequest::Subnet(_) | AddrRequest::Default => {
            let subnet = subnet_of(request, default_subnet);
            exposed
                .iter()
                .filter(|e| e.trunc() == subnet)
                .copied()
                .collect()
        }
    };
    if found.is_empty() {
        bail!("{request} is not exposed on this host");
    }
    Ok(found)
}

fn lines(cidrs: &[Ipv4Net]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Agent {
    /// `weave expose`: all of the requests or none.
    pub(super) async fn expose(&mut self, requests: Vec<AddrRequest>) -> anyhow::Result<Reply> {
        let default_subnet = self.ipam.default_subnet;
        let mut answer = Vec::with_capacity(requests.len());
        let mut wanted = Vec::new();
        for request in &requests {
            if let Some(cidr) = already_exposed(&self.exposed, *request, default_subnet)? {
                answer.push(cidr);
                continue;
            }
            let subnet = subnet_of(*request, default_subnet);
            if wanted
                .iter()
                .any(|r| subnet_of(*r, default_subnet) == subnet)
            {
                bail!("{subnet} is asked for twice: the host has one address per subnet");
            }
            wanted.push(*request);
        }
        let fresh = self.allocate_addresses(&wanted).await?;
        let result = async {
            for cidr in &fresh {
                self.netlink.ensure_address(BRIDGE, *cidr).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            for cidr in &fresh {
                let _ = self.netlink.remove_address(BRIDGE, *cidr).await;
            }
            self.release(&fresh).await;
            return Err(e.context("putting the host's address on the bridge"));
        }
        self.exposed.extend(&fresh);
        self.save()?;
        if !fresh.is_empty() {
            self.update_gateway().await;
            tracing::info!(addrs = ?fresh, "host exposed");
        }
        answer.extend(fresh);
        Ok(Reply::Message(lines(&answer)))
    }

    /// `weave hide`: the addresses leave the bridge and go back to the ring.
    pub(super) async fn hide(&mut self, requests: Vec<AddrRequest>) -> anyhow::Result<Reply> {
        let default_subnet = self.ipam.default_subnet;
        let mut gone = Vec::new();
        for request in requests {
            for cidr in to_hide(&self.exposed, request, default_subnet)? {
                if !gone.contains(&cidr) {
                    gone.push(cidr);
                }
            }
        }
        for cidr in &gone {
            self.netlink
                .remove_address(BRIDGE, *cidr)
                .await
                .map_err(|e| anyhow!(e).context(format!("removing {cidr} from the bridge")))?;
            self.exposed.retain(|e| e != cidr);
        }
        self.release(&gone).await;
        self.save()?;
        self.update_gateway().await;
        tracing::info!(addrs = ?gone, "host hidden");
        Ok(Reply::Message(lines(&gone)))
    }

    /// After a restart: the exposed addresses are this peer's again, and on
    /// the bridge (a bridge made anew has none).
    pub(super) async fn restore_exposed(&mut self, saved: Vec<Ipv4Net>) -> anyhow::Result<()> {
        for cidr in saved {
            self.netlink.ensure_address(BRIDGE, cidr).await?;
            self.ipam.mark(cidr, "the host (weave expose)");
            self.exposed.push(cidr);
        }
        self.update_gateway().await;
        Ok(())
    }

    /// The nftables table and forwarding for what is exposed now. A failure
    /// (no `nft` on the host, say) is logged, not returned: the host and its
    /// containers still reach each other, only the gateway's way beyond the
    /// host is missing, and the log says why.
    async fn update_gateway(&mut self) {
        if let Err(e) = self.classifier.set_exposed(&self.exposed) {
            tracing::warn!(error = %e, "telling the classifiers the exposed subnets");
        }
        let exposed = self.exposed.clone();
        let applied =
            tokio::task::spawn_blocking(move || crate::gateway::apply(BRIDGE, &exposed)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "the exposed host cannot be its containers' gateway beyond the host"
            ),
            Err(e) => tracing::warn!(error = %e, "updating the weave nftables table"),
        }
    }

    /// The host's exposed address in the subnet of `cidr`, if any: the
    /// gateway a pod in that subnet is given.
    pub(super) fn exposed_in(&self, cidr: Ipv4Net) -> Option<std::net::Ipv4Addr> {
        self.exposed
            .iter()
            .find(|e| e.trunc() == cidr.trunc())
            .map(Ipv4Net::addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    const DEFAULT: &str = "10.32.0.0/12";

    #[test]
    fn exposing_again_answers_the_same_address() {
        let exposed = [net("10.0.1.100/24"), net("10.32.0.1/12")];
        let d = net(DEFAULT);
        let again = |r| already_exposed(&exposed, r, d).unwrap();
        assert_eq!(
            again(AddrRequest::Explicit(net("10.0.1.100/24"))),
            Some(net("10.0.1.100/24"))
        );
        assert_eq!(
            again(AddrRequest::Subnet(net("10.0.1.0/24"))),
            Some(net("10.0.1.100/24"))
        );
        assert_eq!(again(AddrRequest::Default), Some(net("10.32.0.1/12")));
        assert_eq!(again(AddrRequest::Subnet(net("10.0.2.0/24"))), None);
        assert_eq!(again(AddrRequest::Explicit(net("10.0.2.1/24"))), None);
    }

    #[test]
    fn a_second_address_in_an_exposed_subnet_is_refused() {
        let exposed = [net("10.0.1.100/24")];
        let d = net(DEFAULT);
        let e = already_exposed(&exposed, AddrRequest::Explicit(net("10.0.1.101/24")), d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exposed in 10.0.1.0/24 already"), "{e}");
        let e = already_exposed(&exposed, AddrRequest::Explicit(net("10.0.1.100/16")), d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exposed already as 10.0.1.100/24"), "{e}");
    }

    #[test]
    fn hide_names_an_address_or_a_subnet_and_refuses_what_is_not_exposed() {
        let exposed = [net("10.0.1.100/24"), net("10.32.0.1/12")];
        let d = net(DEFAULT);
        assert_eq!(
            to_hide(&exposed, AddrRequest::Subnet(net("10.0.1.0/24")), d).unwrap(),
            [net("10.0.1.100/24")]
        );
        assert_eq!(
            to_hide(&exposed, AddrRequest::Default, d).unwrap(),
            [net("10.32.0.1/12")]
        );
        assert!(to_hide(&exposed, AddrRequest::Explicit(net("10.0.1.101/24")), d).is_err());
        let e = to_hide(&exposed, AddrRequest::Subnet(net("10.0.2.0/24")), d)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "net:10.0.2.0/24 is not exposed on this host");
    }
}
