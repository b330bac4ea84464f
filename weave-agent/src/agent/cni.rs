//! The agent's side of the CNI plugin (`weave-net`): pods are attached,
//! detached, checked and garbage-collected here, because the agent owns the
//! address ring, the bridge and the isolation classifiers. A pod's port is
//! made by the same [`Agent::plumb`] as a Docker container's, and its record
//! persists like theirs, so a restart keeps its addresses and DEL or GC can
//! free them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use ipnet::Ipv4Net;
use sha2::{Digest as _, Sha256};

use super::Agent;
use super::endpoints::Guest;
use crate::api::{CniAttachment, CniRoute, Reply};
use crate::ipam::AddrRequest;
use crate::netlink::{NetnsRef, add_guest_routes, guest_state};
use crate::state::CniRecord;

/// The host port of a pod is `vethwepl` + this: a `c` (a PID, which names a
/// Docker container's port, never has one) and 6 hex digits of a hash of the
/// attachment, so the same attachment always gets the same name and the
/// whole stays within the 15 bytes of an interface name.
pub(super) fn port_suffix(attachment: &CniAttachment) -> String {
    let mut hash = Sha256::new();
    hash.update(attachment.container_id.as_bytes());
    hash.update([0]);
    hash.update(attachment.ifname.as_bytes());
    let digest = hash.finalize();
    let mut suffix = String::from("c");
    for b in &digest[..3] {
        let _ = write!(suffix, "{b:02x}");
    }
    suffix
}

impl Agent {
    fn find_cni(&self, attachment: &CniAttachment) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|e| e.is_cni(&attachment.container_id, &attachment.ifname))
    }

    /// CNI ADD. The spec forbids a second ADD for the same attachment without
    /// a DEL between, and requires an error when the interface exists: the
    /// first attachment is left as it is.
    pub(super) async fn cni_add(
        &mut self,
        attachment: CniAttachment,
        netns: PathBuf,
        addrs: Vec<AddrRequest>,
    ) -> anyhow::Result<Reply> {
        if self.find_cni(&attachment).is_some() {
            bail!(
                "container {} is attached already as {}: DEL it first",
                attachment.container_id,
                attachment.ifname
            );
        }
        let addrs = if addrs.is_empty() {
            vec![AddrRequest::Default]
        } else {
            addrs
        };
        if addrs.len() > weave_common::MAX_ENDPOINT_ADDRS {
            bail!(
                "at most {} addresses per container",
                weave_common::MAX_ENDPOINT_ADDRS
            );
        }
        let cidrs = self.allocate_addresses(&addrs).await?;
        let short: String = attachment.container_id.chars().take(12).collect();
        let pod_netns = NetnsRef::Path(netns.clone());
        let guest = Guest {
            id: attachment.container_id.clone(),
            name: format!("cni:{short}/{}", attachment.ifname),
            pid: 0,
            netns: Some(NetnsRef::Path(netns.clone())),
            mac: None,
            docker_network: None,
            port_suffix: port_suffix(&attachment),
            hostname: None,
            cni: Some(CniRecord {
                netns,
                ifname: attachment.ifname.clone(),
            }),
        };
        if let Err(e) = self.plumb(&guest, &cidrs).await {
            self.release(&cidrs).await;
            return Err(e);
        }
        // weaveDNS on-link whatever the pod's subnet (as for containers),
        // and the node as the gateway when it is exposed in the pod's subnet
        // (weave-kube's pods had the bridge's address as their gateway).
        let dns = self.resolver();
        let gateway = cidrs.first().and_then(|c| self.exposed_in(*c));
        let mut routes = Vec::new();
        if let Some(dns) = &dns {
            routes.push(CniRoute {
                dst: Ipv4Net::from(dns.nameserver),
                gw: None,
            });
        }
        if let Some(gw) = gateway {
            routes.push(CniRoute {
                dst: Ipv4Net::default(),
                gw: Some(gw),
            });
        }
        if let Err(e) = add_guest_routes(
            &pod_netns,
            &attachment.ifname,
            dns.as_ref().map(|d| d.nameserver),
            gateway,
        )
        .await
        {
            if let Some(i) = self.find_cni(&attachment) {
                let _ = self.forget_endpoint(i).await;
            }
            return Err(anyhow!(e).context("setting the pod's routes"));
        }
        let record = self.endpoints.last().expect("plumb pushed the record");
        Ok(Reply::CniAttached {
            host_ifname: record.host_ifname.clone(),
            mac: record.mac,
            mtu: self.mtu,
            cidrs,
            routes,
            dns,
        })
    }

    /// CNI DEL: idempotent, so an unknown attachment is success.
    pub(super) async fn cni_del(&mut self, attachment: &CniAttachment) -> anyhow::Result<Reply> {
        if let Some(i) = self.find_cni(attachment) {
            self.forget_endpoint(i).await?;
        }
        Ok(Reply::Done)
    }

    /// CNI CHECK: the record, its namespace, both ends of the port up, and
    /// the pod's interface holding its addresses.
    pub(super) async fn cni_check(
        &self,
        attachment: &CniAttachment,
        netns: &Path,
    ) -> anyhow::Result<Reply> {
        let i = self.find_cni(attachment).ok_or_else(|| {
            anyhow!(
                "container {} is not attached as {}",
                attachment.container_id,
                attachment.ifname
            )
        })?;
        let record = self.endpoints[i].clone();
        if record.cni.as_ref().is_some_and(|c| c.netns != netns) {
            bail!(
                "container {} was attached in {}, not {}",
                attachment.container_id,
                record.netns().path().display(),
                netns.display()
            );
        }
        if !self.netlink.is_up(&record.host_ifname).await? {
            bail!("host port {} is down", record.host_ifname);
        }
        let ifname = record.guest_ifname();
        match guest_state(&record.netns(), ifname).await? {
            None => bail!("{ifname} is missing from {}", netns.display()),
            Some((false, _)) => bail!("{ifname} is down in {}", netns.display()),
            Some((true, have)) => {
                if let Some(lost) = record.cidrs.iter().find(|c| !have.contains(c)) {
                    bail!(
                        "{ifname} in {} has lost its address {lost}",
                        netns.display()
                    );
                }
            }
        }
        Ok(Reply::Done)
    }

    /// CNI GC: removes every CNI attachment not in `valid` (Docker
    /// containers are not the runtime's to collect).
    pub(super) async fn cni_gc(&mut self, valid: &[CniAttachment]) -> anyhow::Result<Reply> {
        let mut collected = Vec::new();
        let mut i = 0;
        while i < self.endpoints.len() {
            let e = &self.endpoints[i];
            let stale = e.cni.as_ref().is_some_and(|c| {
                !valid
                    .iter()
                    .any(|v| v.container_id == e.container_id && v.ifname == c.ifname)
            });
            if stale {
                let attachment = CniAttachment {
                    container_id: e.container_id.clone(),
                    ifname: e.cni.as_ref().map(|c| c.ifname.clone()).unwrap_or_default(),
                };
                tracing::info!(container = %e.container_name, "CNI GC: attachment no longer valid");
                self.forget_endpoint(i).await?;
                collected.push(attachment);
            } else {
                i += 1;
            }
        }
        Ok(Reply::CniCollected(collected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, ifname: &str) -> CniAttachment {
        CniAttachment {
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn port_names_fit_and_never_look_like_a_pid() {
        let s = port_suffix(&at("0123456789abcdef", "eth0"));
        assert_eq!(s.len(), 7);
        assert!(s.starts_with('c'));
        assert!(crate::config::CONTAINER_PORT_PREFIX.len() + s.len() <= 15);
        assert_eq!(s, port_suffix(&at("0123456789abcdef", "eth0")));
        assert_ne!(s, port_suffix(&at("0123456789abcdef", "eth1")));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(port_suffix(&at("ab", "c")), port_suffix(&at("a", "bc")));
    }
}
