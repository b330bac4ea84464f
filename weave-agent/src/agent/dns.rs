//! weaveDNS, the agent's side: this peer's entries follow its attached
//! containers (one rule, applied after everything that changes them:
//! `sync`), peers' entries arrive through the mesh, and the server is given
//! a fresh [`Zone`] whenever the live entries change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use super::Agent;
use crate::config::{BRIDGE, LaunchOptions};
use crate::dns::records::{Local, Records, fqdn};
use crate::dns::server::{self, CountersSnapshot, Server, ServerConfig};
use crate::dns::{DnsGossip, Entry, Zone};
use crate::netlink::{Netlink, add_guest_dns_route};
use crate::peer_name::PeerName;

/// weaveDNS gossip queued from the mesh to the agent; more is dropped (and
/// counted by the mesh): the periodic full gossip repairs it.
pub(super) const INBOX: usize = 256;

/// This peer's weaveDNS.
pub(super) struct PeerDns {
    records: Records,
    domain: String,
    ttl: u32,
    addr: std::net::SocketAddrV4,
    zone: watch::Sender<Arc<Zone>>,
    server: Server,
    /// Containers whose resolver is set up already (by id).
    configured: BTreeSet<String>,
    /// Entries refused from peers (bad names, table full).
    pub(super) refused: u64,
}

/// `weave status dns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsStatus {
    pub domain: String,
    pub listen: String,
    pub upstreams: Vec<String>,
    pub ttl: u32,
    /// Live entries: name, address, container, origin peer.
    pub entries: Vec<(String, String, String, String)>,
    pub tombstones: usize,
    pub refused: u64,
    pub counters: CountersSnapshot,
}

impl DnsStatus {
    /// `weave status dns`: Weave's table (name, address, container, peer),
    /// then the server's counters.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "Domain: {}  Listen: {}  TTL: {}  Upstream: {}\n",
            self.domain,
            self.listen,
            self.ttl,
            if self.upstreams.is_empty() {
                "none".into()
            } else {
                self.upstreams.join(", ")
            }
        );
        for (name, addr, container, peer) in &self.entries {
            let short = name.split('.').next().unwrap_or(name);
            let _ = writeln!(out, "{short:<16} {addr:<15} {container:<12} {peer}");
        }
        let c = &self.counters;
        let _ = writeln!(
            out,
            "queries {} answered {} nxdomain {} forwarded {} upstream_failed {} dropped {} malformed {} tombstones {} refused {}",
            c.queries,
            c.answered,
            c.nxdomain,
            c.forwarded,
            c.upstream_failed,
            c.dropped,
            c.malformed,
            self.tombstones,
            self.refused
        );
        out
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts weaveDNS unless `--no-dns`: the address on the bridge, the server.
pub(super) async fn start(
    options: &LaunchOptions,
    me: PeerName,
    netlink: &Netlink,
    classifier: &mut crate::ebpf::Classifier,
) -> anyhow::Result<Option<(PeerDns, Vec<String>)>> {
    if options.no_dns {
        return Ok(None);
    }
    let addr = options.dns_listen_address;
    classifier
        .set_dns_addr(Some(*addr.ip()))
        .context("giving the classifiers the DNS address")?;
    netlink
        .ensure_host_address(BRIDGE, *addr.ip())
        .await
        .context("putting the DNS address on the bridge")?;
    let resolv = std::fs::read_to_string(&options.resolv_conf).unwrap_or_else(|e| {
        tracing::warn!(path = %options.resolv_conf.display(), error = %e, "no upstream DNS servers");
        String::new()
    });
    // Never ourselves: a loop would only time out.
    let upstreams: Vec<_> = server::upstreams_of(&resolv)
        .into_iter()
        .filter(|u| u.ip() != std::net::IpAddr::V4(*addr.ip()))
        .collect();
    let (zone, zone_rx) = watch::channel(Arc::new(Zone::new(
        &options.dns_domain,
        options.dns_ttl,
        [],
    )));
    let server = server::start(
        &ServerConfig {
            listen: addr.into(),
            device: BRIDGE.into(),
            upstreams: upstreams.clone(),
        },
        zone_rx,
    )?;
    let shown = upstreams.iter().map(ToString::to_string).collect();
    Ok(Some((
        PeerDns {
            records: Records::new(me),
            domain: options.dns_domain.clone(),
            ttl: options.dns_ttl,
            addr,
            zone,
            server,
            configured: BTreeSet::new(),
            refused: 0,
        },
        shown,
    )))
}

impl PeerDns {
    fn publish(&self) {
        let zone = Zone::new(&self.domain, self.ttl, self.records.live());
        self.zone.send_replace(Arc::new(zone));
    }
}

impl Agent {
    /// The entries this peer's containers should have now.
    fn wanted_dns(&self, domain: &str) -> Vec<Local> {
        let mut wanted = Vec::new();
        for e in &self.endpoints {
            // A name that is not a DNS name gets no entry (said once, at attach).
            let Ok(name) = fqdn(&e.container_name, domain) else {
                continue;
            };
            for cidr in &e.cidrs {
                wanted.push(Local {
                    name: name.clone(),
                    addr: cidr.addr(),
                    container: e.container_id.clone(),
                });
            }
        }
        wanted
    }

    /// Brings this peer's entries in line with its containers, gossips the
    /// changes, and sets up the resolver of containers new to it.
    pub async fn dns_sync(&mut self) {
        let Some(dns) = &self.dns else {
            return;
        };
        let wanted = self.wanted_dns(&dns.domain);
        let new: Vec<(String, u32, String)> = self
            .endpoints
            .iter()
            .filter(|e| !dns.configured.contains(&e.container_id))
            .map(|e| (e.container_id.clone(), e.pid, e.container_name.clone()))
            .collect();
        let addr = *dns.addr.ip();
        let domain = dns.domain.clone();
        let Some(dns) = &mut self.dns else {
            return;
        };
        let changed = dns.records.reconcile(&wanted, now_ms());
        dns.configured
            .retain(|id| self.endpoints.iter().any(|e| &e.container_id == id));
        for (id, _, _) in &new {
            dns.configured.insert(id.clone());
        }
        if !changed.is_empty() {
            dns.publish();
            self.send_dns(changed).await;
        }
        for (_, pid, name) in new {
            if let Err(e) = configure_resolver(pid, addr, &domain).await {
                tracing::warn!(container = %name, error = %e, "setting the container's resolver");
            }
        }
    }

    /// Entries from a peer: merged, and what changed ours passed on.
    pub async fn on_dns(&mut self, gossip: DnsGossip) {
        let Some(dns) = &mut self.dns else {
            return;
        };
        let (changed, refused) = dns.records.merge(&gossip);
        if let Some(e) = refused.first() {
            tracing::debug!(error = %e, count = refused.len(), "refused weaveDNS entries");
        }
        dns.refused += refused.len() as u64;
        if !changed.is_empty() {
            dns.publish();
            self.send_dns(changed).await;
        }
    }

    /// Periodic: the whole table to every neighbour (repair, and how a new
    /// neighbour learns it), after expiring old tombstones.
    pub(super) async fn gossip_dns(&mut self) {
        let Some(dns) = &mut self.dns else {
            return;
        };
        dns.records.expire(now_ms());
        let all = dns.records.all();
        if !all.is_empty() {
            self.send_dns(all).await;
        }
    }

    async fn send_dns(&self, entries: Vec<Entry>) {
        for chunk in entries.chunks(crate::dns::records::MAX_GOSSIP_ENTRIES) {
            let gossip = DnsGossip {
                entries: chunk.to_vec(),
            };
            if let Err(e) = self.mesh.send_dns(gossip).await {
                tracing::debug!(error = %e, "gossiping weaveDNS entries");
            }
        }
    }

    /// weaveDNS gossip from peers, for the daemon's loop to wait on (the
    /// agent is borrowed by every other branch).
    pub fn take_dns_inbox(&mut self) -> Option<mpsc::Receiver<DnsGossip>> {
        self.dns_inbox.take()
    }

    pub(super) fn dns_status(&self) -> Option<DnsStatus> {
        let dns = self.dns.as_ref()?;
        let entries = dns
            .records
            .live()
            .map(|e| {
                (
                    e.key.name.clone(),
                    e.key.addr.to_string(),
                    e.key.container.chars().take(12).collect(),
                    e.key.origin.to_string(),
                )
            })
            .collect::<Vec<_>>();
        Some(DnsStatus {
            domain: dns.domain.clone(),
            listen: dns.addr.to_string(),
            upstreams: self.dns_upstreams.clone(),
            ttl: dns.ttl,
            tombstones: dns.records.len() - entries.len(),
            entries,
            refused: dns.refused,
            counters: dns.server.counters.snapshot(),
        })
    }
}

/// Points the container's resolver at the agent: a route to the DNS address
/// out of `ethwe`, and a resolv.conf with it as the only nameserver and the
/// domain to search (so `ping web` works). The file is the one Docker
/// mounts at /etc/resolv.conf, written through the container's root.
async fn configure_resolver(
    pid: u32,
    addr: std::net::Ipv4Addr,
    domain: &str,
) -> anyhow::Result<()> {
    add_guest_dns_route(pid, addr).await?;
    let path = format!("/proc/{pid}/root/etc/resolv.conf");
    let text = format!("# written by weave\nnameserver {addr}\nsearch {domain}\noptions ndots:1\n");
    tokio::fs::write(&path, text)
        .await
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}

/// The next gossip, or never when weaveDNS is off.
pub(super) async fn next(inbox: &mut Option<mpsc::Receiver<DnsGossip>>) -> Option<DnsGossip> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// The sender half of the mesh's weaveDNS inbox.
pub(super) fn inbox() -> (mpsc::Sender<DnsGossip>, mpsc::Receiver<DnsGossip>) {
    mpsc::channel(INBOX)
}
