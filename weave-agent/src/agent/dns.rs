//! weaveDNS, the agent's side: this peer's entries follow its attached
//! containers (one rule, applied after everything that changes them:
//! `sync`), peers' entries arrive through the mesh, and the server is given
//! a fresh [`Zone`] whenever the live entries change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use super::Agent;
use crate::config::{BRIDGE, LaunchOptions};
use crate::dns::records::{Local, Records, fqdn};
use crate::dns::server::{self, CountersSnapshot, Server, ServerConfig};
use crate::dns::{DnsGossip, Entry, Zone};
use crate::mesh::Spread;
use crate::mesh::topology::now_ms;
use crate::netlink::{Netlink, add_guest_dns_route};
use crate::peer_name::PeerName;

/// weaveDNS gossip queued from the mesh to the agent; more is dropped (and
/// counted by the mesh): the periodic full gossip repairs it.
pub(super) const INBOX: usize = 256;
/// How long a peer may be missing from the mesh before its entries go. As
/// long as the mesh remembers a peer (a restart, a short partition), its
/// names stay; when the mesh has forgotten it, they go too (as in Weave).
const FORGET_ABSENT_AFTER: Duration = Duration::from_secs(30);

/// Saved `dns-add` and `dns-remove` edits: (name, address, container ID).
pub(super) type DnsEdits = (
    Vec<(String, std::net::Ipv4Addr, String)>,
    Vec<(String, std::net::Ipv4Addr, String)>,
);

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
    /// Names given with `dns-add`, and taken away with `dns-remove`, on top
    /// of the containers' own (kept while the container is attached).
    added: BTreeSet<Local>,
    removed: BTreeSet<Local>,
    /// Origins of entries that the mesh does not know, since when.
    absent: BTreeMap<PeerName, Instant>,
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
        Vec::<Entry>::new(),
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
            absent: BTreeMap::new(),
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
        },
        shown,
    )))
}

impl PeerDns {
    /// The address weaveDNS answers on (containers get a route to it).
    pub(super) const fn address(&self) -> std::net::Ipv4Addr {
        *self.addr.ip()
    }

    fn publish(&self) {
        let zone = Zone::new(&self.domain, self.ttl, self.records.live());
        self.zone.send_replace(Arc::new(zone));
    }
}

impl Agent {
    /// The entries this peer's containers should have now: their own
    /// names, plus `dns-add`, less `dns-remove`.
    fn wanted_dns(&self, dns: &PeerDns) -> Vec<Local> {
        let domain = &dns.domain;
        let mut wanted: Vec<Local> = dns
            .added
            .iter()
            .filter(|l| self.endpoints.iter().any(|e| e.container_id == l.container))
            .cloned()
            .collect();
        for e in &self.endpoints {
            // A name that is not a DNS name gets no entry (said once, at attach).
            let Ok(name) = dns_name(e, domain) else {
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
        wanted.retain(|l| !dns.removed.contains(l));
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// `weave dns-add` / `dns-remove`.
    pub(super) async fn dns_edit(
        &mut self,
        docker: &str,
        container: &str,
        ips: &[std::net::Ipv4Addr],
        fqdn_given: Option<&str>,
        add: bool,
    ) -> anyhow::Result<crate::api::Reply> {
        let Some(dns) = &self.dns else {
            anyhow::bail!("weaveDNS is off (the agent was launched with --no-dns)");
        };
        let find = |c: &str| {
            self.endpoints.iter().position(|e| {
                e.container_id == c
                    || e.container_name.trim_start_matches('/') == c.trim_start_matches('/')
                    || (c.len() >= 4 && e.container_id.starts_with(c))
            })
        };
        let i = if let Some(i) = find(container) {
            i
        } else {
            // Not ours by id or name; ask Docker, for a clear answer.
            let info = crate::docker::Docker::connect(docker)
                .await?
                .inspect(container)
                .await?;
            find(&info.id)
                .ok_or_else(|| anyhow::anyhow!("container {container} is not attached to weave"))?
        };
        let record = &self.endpoints[i];
        let given = fqdn_given.unwrap_or(&record.container_name);
        let name = fqdn(given, &dns.domain).map_err(|_| {
            anyhow::anyhow!(
                "{given:?} is not a valid DNS name in {} (letters, digits, '-' and '_', \
                 labels of at most 63)",
                dns.domain
            )
        })?;
        let addrs: Vec<std::net::Ipv4Addr> = if ips.is_empty() {
            record.cidrs.iter().map(ipnet::Ipv4Net::addr).collect()
        } else {
            for ip in ips {
                if !record.cidrs.iter().any(|c| c.contains(ip)) {
                    anyhow::bail!(
                        "{ip} is outside every subnet of container {container} ({})",
                        record
                            .cidrs
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            ips.to_vec()
        };
        let id = record.container_id.clone();
        let Some(dns) = &mut self.dns else {
            return Ok(crate::api::Reply::Done);
        };
        for addr in addrs {
            let local = Local {
                name: name.clone(),
                addr,
                container: id.clone(),
            };
            if add {
                dns.removed.remove(&local);
                dns.added.insert(local);
            } else {
                dns.added.remove(&local);
                dns.removed.insert(local);
            }
        }
        self.save()?;
        Ok(crate::api::Reply::Done)
    }

    /// weaveDNS's address and domain (no final dot), for a pod's resolver.
    pub(super) fn resolver(&self) -> Option<crate::api::CniDns> {
        self.dns.as_ref().map(|d| crate::api::CniDns {
            nameserver: *d.addr.ip(),
            search: d.domain.trim_end_matches('.').to_owned(),
        })
    }

    /// `dns-add` (`added`) or `dns-remove` edits, for the saved state.
    pub(super) fn dns_edits(&self, added: bool) -> Vec<(String, std::net::Ipv4Addr, String)> {
        let Some(dns) = &self.dns else {
            return Vec::new();
        };
        let set = if added { &dns.added } else { &dns.removed };
        set.iter()
            .map(|l| (l.name.clone(), l.addr, l.container.clone()))
            .collect()
    }

    /// After a restart: the saved `dns-add` / `dns-remove` edits hold
    /// again (for containers still attached; `dns_sync` drops the rest).
    pub(super) fn restore_dns_edits(&mut self, (added, removed): DnsEdits) {
        let Some(dns) = &mut self.dns else {
            return;
        };
        let local = |(name, addr, container)| Local {
            name,
            addr,
            container,
        };
        dns.added.extend(added.into_iter().map(local));
        dns.removed.extend(removed.into_iter().map(local));
    }

    /// `weave dns-lookup`: the addresses every peer gave `name`.
    pub(super) fn dns_lookup(&self, name: &str) -> anyhow::Result<crate::api::Reply> {
        let Some(dns) = &self.dns else {
            anyhow::bail!("weaveDNS is off (the agent was launched with --no-dns)");
        };
        let full = fqdn(name, &dns.domain)
            .map_err(|_| anyhow::anyhow!("{name:?} is not a valid name in {}", dns.domain))?;
        let mut addrs: Vec<String> = dns
            .records
            .live()
            .filter(|e| e.key.name == full)
            .map(|e| e.key.addr.to_string())
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            anyhow::bail!("{full}: no such name");
        }
        Ok(crate::api::Reply::Message(addrs.join("\n")))
    }

    /// Brings this peer's entries in line with its containers, gossips the
    /// changes, and sets up the resolver of containers new to it.
    pub async fn dns_sync(&mut self) {
        let Some(dns) = &self.dns else {
            return;
        };
        let wanted = self.wanted_dns(dns);
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
        let attached = |id: &String| self.endpoints.iter().any(|e| &e.container_id == id);
        dns.configured.retain(attached);
        dns.added.retain(|l| attached(&l.container));
        dns.removed.retain(|l| attached(&l.container));
        for (id, _, _) in &new {
            dns.configured.insert(id.clone());
        }
        if !changed.is_empty() {
            dns.publish();
            self.send_dns(changed, Spread::Everyone).await;
        }
        // A CNI pod (no PID) gets its resolver from its runtime.
        for (_, pid, name) in new.into_iter().filter(|(_, pid, _)| *pid != 0) {
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
            self.send_dns(changed, Spread::Everyone).await;
        }
    }

    /// Periodic: the whole table to one random neighbour (repair, and how a
    /// new neighbour learns it: every peer does it, so each hears the whole
    /// table about once a period), after expiring old tombstones.
    pub(super) async fn gossip_dns(&mut self) {
        if self.dns.is_none() {
            return;
        }
        let known: BTreeSet<PeerName> = self
            .mesh
            .peers()
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let Some(dns) = &mut self.dns else {
            return;
        };
        dns.records.expire(now_ms());
        let now = Instant::now();
        let origins = dns.records.origins();
        dns.absent
            .retain(|o, _| origins.contains(o) && !known.contains(o));
        let mut forgot = false;
        for origin in origins.iter().filter(|o| !known.contains(o)) {
            let since = *dns.absent.entry(*origin).or_insert(now);
            if now.duration_since(since) >= FORGET_ABSENT_AFTER {
                tracing::info!(peer = %origin, "forgetting the names of a peer gone from the mesh");
                dns.records.forget_origin(*origin);
                dns.absent.remove(origin);
                forgot = true;
            }
        }
        if forgot {
            dns.publish();
        }
        let all = dns.records.all();
        if !all.is_empty() {
            self.send_dns(all, Spread::OneRandom).await;
        }
    }

    async fn send_dns(&self, entries: Vec<Entry>, spread: Spread) {
        for chunk in entries.chunks(crate::dns::records::MAX_GOSSIP_ENTRIES) {
            let gossip = DnsGossip {
                entries: chunk.to_vec(),
            };
            if let Err(e) = self.mesh.send_dns(gossip, spread).await {
                tracing::debug!(error = %e, "gossiping weaveDNS entries");
            }
        }
    }

    /// weaveDNS gossip from peers, for the daemon's loop to wait on (the
    /// agent is borrowed by every other branch).
    pub const fn take_dns_inbox(&mut self) -> Option<mpsc::Receiver<DnsGossip>> {
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

/// The name a container is known by: its host name when that lies inside
/// the domain (`weave run -h db.weave.local`, as in Weave), otherwise its
/// container name. A host name of one label (Docker's default is the short
/// ID) or in another domain is not a weaveDNS name.
fn dns_name(
    e: &crate::state::EndpointRecord,
    domain: &str,
) -> Result<String, crate::dns::records::EntryError> {
    let in_domain = e.hostname.as_deref().and_then(|h| {
        let h = h.trim_end_matches('.');
        (h.contains('.') && format!("{h}.").ends_with(&format!(".{domain}"))).then_some(h)
    });
    match in_domain {
        Some(host) => fqdn(host, domain),
        // Docker's names may have dots (Swarm's tasks are
        // SERVICE.SLOT.TASKID): the whole name goes under the domain.
        None if e.docker_network.is_some() => {
            fqdn(&format!("{}.{domain}", e.container_name), domain)
        }
        None => fqdn(&e.container_name, domain),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EndpointRecord;

    fn record(name: &str, hostname: Option<&str>) -> EndpointRecord {
        EndpointRecord {
            container_id: "abc".into(),
            container_name: name.into(),
            pid: 1,
            host_ifname: "vethwepl1".into(),
            mac: crate::mac::Mac::random_local(),
            cidrs: Vec::new(),
            cni: None,
            docker_network: None,
            hostname: hostname.map(Into::into),
        }
    }

    #[test]
    fn a_host_name_in_the_domain_names_the_container_and_no_other_does() {
        let d = crate::dns::DEFAULT_DOMAIN;
        let name = |n, h| dns_name(&record(n, h), d).unwrap();
        assert_eq!(name("web", Some("db.weave.local")), "db.weave.local.");
        assert_eq!(name("web", Some("db.weave.local.")), "db.weave.local.");
        // Docker's default (the short ID), another domain, none: the
        // container's name.
        assert_eq!(name("web", Some("0123456789ab")), "web.weave.local.");
        assert_eq!(name("web", Some("db.example.com")), "web.weave.local.");
        assert_eq!(name("web", None), "web.weave.local.");
        assert!(dns_name(&record("web", Some("bad name.weave.local")), d).is_err());
    }
}
