//! The agent: one task that owns this host's weave state (bridge, eBPF
//! classifier, addresses, attached containers, the mesh and the overlay) and
//! serves the CLI's requests one at a time, so no lock is ever held across
//! an await.

mod adopt;
mod cni;
mod daemon;
mod dataplane;
mod dns;
mod docker_plugin;
mod endpoints;
mod expose;
mod ipam;
mod memory;

pub use daemon::run_foreground;
pub use dns::DnsStatus;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ipnet::Ipv4Net;
use tokio::sync::mpsc;

use crate::api::{PsEntry, Reply, Request, Response};
use crate::config::{
    BRIDGE, DATAPATH_BRIDGE_END, DATAPATH_END, FALLBACK_UNDERLAY_MTU, LaunchOptions, Paths,
    VXLAN_OVERHEAD,
};
use crate::ebpf::Classifier;
use crate::ipam::{IpamPacket, Ring};
use crate::mesh::noise::Psk;
use crate::mesh::{Mesh, MeshConfig};
use crate::netlink::Netlink;
use crate::overlay::Overlay;
use crate::overlay::seal::OVERHEAD as SEAL_OVERHEAD;
use crate::peer_name::PeerName;
use crate::state::{self, EndpointRecord, PersistedState};
use crate::status::{Status, StatusAsk};

pub struct Agent {
    paths: Paths,
    peer_name: PeerName,
    nickname: String,
    netlink: Netlink,
    bridge_index: u32,
    /// The bridge and container MTU in force.
    mtu: u32,
    /// Password mode (`weave status`: Encryption).
    encrypted: bool,
    classifier: Classifier,
    overlay: Arc<dyn Overlay>,
    /// Which data plane runs, and why (`weave status`).
    dataplane: String,
    mesh: Mesh,
    /// Peers given to `launch`/`connect`, persisted so a restart redials them.
    targets: Vec<String>,
    /// Nicknames of the ring's owners, remembered (see `PersistedState`).
    nicknames: BTreeMap<PeerName, String>,
    ipam: ipam::PeerIpam,
    /// IPAM messages from peers, through the mesh.
    ipam_inbox: mpsc::Receiver<IpamPacket>,
    /// Snapshots asked for by the status endpoint: a queue of its own, so
    /// that they are answered while a request waits for the ring too.
    status_asks: mpsc::Receiver<StatusAsk>,
    status_asker: mpsc::Sender<StatusAsk>,
    endpoints: Vec<EndpointRecord>,
    /// weaveDNS; `None` with `--no-dns`.
    dns: Option<dns::PeerDns>,
    /// weaveDNS gossip from peers, through the mesh.
    dns_inbox: Option<mpsc::Receiver<crate::dns::DnsGossip>>,
    /// The upstream resolvers, for `weave status dns`.
    dns_upstreams: Vec<String>,
    /// The weave driver's Docker networks (ID to subnets), persisted.
    docker_networks: BTreeMap<String, Vec<Ipv4Net>>,
    /// The host's addresses on the bridge (`weave expose`), persisted.
    exposed: Vec<Ipv4Net>,
    /// With IP allocation off, the ring saved before, saved again as it was.
    kept_ring: Option<Ring>,
    /// Addresses of Swarm's networks that this node uses but the swarm
    /// manager's allocator got from the ring (see `docker_plugin`), with
    /// how many such uses are open. Not persisted: Docker asks again.
    docker_borrowed: BTreeMap<std::net::Ipv4Addr, u32>,
}

/// The status endpoint's snapshots asked for at once, at most.
const STATUS_ASKS: usize = 4;

/// What the agent does between requests.
pub enum Work {
    Ipam(IpamPacket),
    Status(StatusAsk),
}

/// Whether the agent loop goes on after a request.
pub enum Next {
    Continue,
    Stop,
}

impl Agent {
    /// Builds the bridge and its datapath port, loads the eBPF programs,
    /// starts the overlay and the mesh, restores the containers attached
    /// before a restart, and only then brings the bridge up: no frame
    /// crosses it unclassified.
    pub async fn start(paths: Paths, options: LaunchOptions) -> anyhow::Result<Self> {
        let saved = state::load(&paths.state_file())?;
        let peer_name = options
            .name
            .or_else(|| saved.as_ref().map(|s| s.peer_name))
            .unwrap_or_else(PeerName::random);
        let nicknames = saved
            .as_ref()
            .map(|s| s.nicknames.clone())
            .unwrap_or_default();
        let docker_networks = saved
            .as_ref()
            .map(|s| s.docker_networks.clone())
            .unwrap_or_default();
        let nickname = options.nickname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "weave".into())
        });

        // Password mode: the key is stretched once, here (Argon2, ~0.1 s).
        let psk = options
            .password()
            .map_err(anyhow::Error::msg)?
            .map(|p| Psk::from_password(p.as_bytes()))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let netlink = Netlink::connect()?;
        // Encapsulated frames must fit the underlay: leave room for VXLAN.
        let mtu = match options.mtu {
            Some(mtu) => mtu,
            None => {
                netlink
                    .underlay_mtu()
                    .await?
                    .unwrap_or(FALLBACK_UNDERLAY_MTU)
                    - VXLAN_OVERHEAD
                    - if psk.is_some() {
                        SEAL_OVERHEAD as u32
                    } else {
                        0
                    }
            }
        };
        let bridge_index = netlink
            .ensure_bridge(BRIDGE, mtu)
            .await
            .context("setting up the weave bridge")?;
        // The agent's own port: frames for other hosts leave through it.
        if netlink.index_of(DATAPATH_END).await?.is_none() {
            netlink.delete(DATAPATH_BRIDGE_END).await?;
            netlink
                .create_veth(DATAPATH_BRIDGE_END, DATAPATH_END, mtu)
                .await
                .context("creating the datapath port")?;
        }
        netlink
            .set_master(DATAPATH_BRIDGE_END, bridge_index)
            .await?;

        let mut classifier = Classifier::load().context("loading the eBPF programs")?;
        // Pinned, the isolation classifiers outlive a killed agent.
        classifier.pin_links();
        // The AF_XDP socket binds to the datapath port's queue: it must be up.
        netlink.set_up(DATAPATH_END).await?;
        netlink.set_up(DATAPATH_BRIDGE_END).await?;
        let host = dataplane::Host {
            udp_listen: SocketAddr::from(([0, 0, 0, 0], options.data_port)),
            mtu,
            encrypted: psk.is_some(),
            underlays: netlink
                .underlays()
                .await
                .context("listing the underlay interfaces")?
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
            bridge_mac: netlink.mac_of(BRIDGE).await?.unwrap_or_default(),
            bridge_port_index: netlink.require(DATAPATH_BRIDGE_END).await?,
            busy_poll: options.busy_poll,
        };
        let dataplane::Selected {
            overlay,
            reason: dataplane,
            fastdp,
        } = dataplane::start(options.dataplane, &mut classifier, &host)?;
        tracing::info!(overlay = overlay.name(), %dataplane, "data plane between hosts");
        // The peers named now are the targets, as in Weave; those saved
        // before a restart only when none are named.
        let targets = if options.peers.is_empty() {
            saved
                .as_ref()
                .map(|s| s.targets.clone())
                .unwrap_or_default()
        } else {
            let mut named: Vec<String> = Vec::new();
            for peer in &options.peers {
                if !named.contains(peer) {
                    named.push(peer.clone());
                }
            }
            named
        };
        let mut previous_range = None;
        let saved_ring = saved.as_ref().and_then(|s| s.ring.clone());
        // IP allocation off: a ring of the default range stands in, never
        // used, gossiped nor saved; the saved one is kept for a later launch.
        let (range, kept_ring) = if let Some(range) = options.range() {
            (range, None)
        } else {
            tracing::info!("IP allocation is off (--ipalloc-range \"\"): explicit addresses only");
            (options.default_subnet(), saved_ring.clone())
        };
        let ring = match saved_ring.filter(|_| kept_ring.is_none()) {
            // Another range: the saved ring goes, as in Weave ("Deleting
            // persisted data for IPAM range ..."); the containers keep
            // their addresses, and those outside the new range are reported.
            Some(ring) if ring.range() != range => {
                tracing::warn!(
                    saved = %ring.range(),
                    %range,
                    "the allocation range changed: discarding the saved ring"
                );
                previous_range = Some(ring.range());
                Ring::new(range)?
            }
            Some(ring) => {
                if let Err(e) = ring.validate() {
                    overlay.stop();
                    bail!(
                        "the saved allocation ring in {} is invalid ({e}): run 'weave reset'",
                        paths.state_file().display()
                    );
                }
                ring
            }
            None => Ring::new(range)?,
        };
        let (ipam_tx, ipam_inbox) = mpsc::channel(ipam::INBOX);
        let (status_asker, status_asks) = mpsc::channel(STATUS_ASKS);
        let mut mesh_config = MeshConfig::new(peer_name, nickname.clone());
        mesh_config.ipam_inbox = Some(ipam_tx);
        let (dns_tx, dns_inbox) = dns::inbox();
        if !options.no_dns {
            mesh_config.dns_inbox = Some(dns_tx);
        }
        mesh_config.listen = SocketAddr::from(([0, 0, 0, 0], options.port));
        mesh_config.data_port = options.data_port;
        mesh_config.discovery = !options.no_discovery;
        mesh_config.conn_limit = options.conn_limit;
        mesh_config.targets = targets.clone();
        mesh_config.mtu = mtu;
        mesh_config.fastdp = fastdp;
        mesh_config.dataplane_name = overlay.userspace().to_owned();
        mesh_config.wait_for_open = true;
        let encrypted = psk.is_some();
        mesh_config.psk = psk;
        mesh_config.offer_aes = options.cipher.offers_aes();
        let mesh = match Mesh::start(mesh_config, Arc::clone(&overlay)).await {
            Ok(mesh) => mesh,
            Err(e) => {
                overlay.stop();
                return Err(e).context("starting the control plane");
            }
        };

        let ipam = ipam::PeerIpam::new(
            peer_name,
            ring,
            options.default_subnet(),
            &options.ipalloc_init,
            targets.len(),
        );
        let mut agent = Self {
            paths,
            peer_name,
            nickname,
            netlink,
            bridge_index,
            mtu,
            encrypted,
            classifier,
            overlay,
            dataplane,
            mesh,
            targets,
            nicknames,
            ipam,
            ipam_inbox,
            status_asks,
            status_asker,
            endpoints: Vec::new(),
            dns: None,
            dns_inbox: (!options.no_dns).then_some(dns_inbox),
            dns_upstreams: Vec::new(),
            docker_networks,
            exposed: Vec::new(),
            kept_ring,
            docker_borrowed: BTreeMap::new(),
        };
        agent.ipam.previous_range = previous_range;
        agent.ipam.enabled = options.range().is_some();
        let (endpoints, exposed, dns_edits) = saved.map_or_else(Default::default, |s| {
            (s.endpoints, s.exposed, (s.dns_added, s.dns_removed))
        });
        agent.restore(endpoints).await?;
        for holder in agent.outside_range() {
            tracing::warn!("{holder} {}", agent.ipam.ring.range());
        }
        agent.restore_exposed(exposed).await?;
        agent.classifier.release_previous_runs();
        agent.ipam.note_free();
        agent.ipam.dirty = true;
        agent.ipam_changed().await;
        agent.save()?;
        agent.netlink.set_up(BRIDGE).await?;
        // The DNS address is bound once the bridge (where it lives) is up.
        if let Some((dns, upstreams)) = dns::start(
            &options,
            agent.peer_name,
            &agent.netlink,
            &mut agent.classifier,
        )
        .await?
        {
            agent.dns = Some(dns);
            agent.dns_upstreams = upstreams;
            agent.restore_dns_edits(dns_edits);
            agent.dns_sync().await;
        }
        // Peers only now: set up first, among no handshakes.
        agent.mesh.open().await?;
        tracing::info!(peer = %agent.peer_name, nickname = %agent.nickname, mtu, "weave agent ready");
        Ok(agent)
    }

    pub async fn handle(&mut self, request: Request) -> (Response, Next) {
        // Containers may have died since the last request: forget them first
        // so their addresses are free and `ps` tells the truth.
        if let Err(e) = self.prune_dead().await {
            tracing::warn!(error = %e, "checking for dead containers");
        }
        let result = match request {
            Request::Status => Ok(Reply::Status(Box::new(self.status().await))),
            Request::Ping => Ok(Reply::Message(self.peer_name.to_string())),
            Request::Ps { docker, containers } => {
                Ok(Reply::Ps(self.ps(&docker, &containers).await))
            }
            Request::Run {
                docker,
                spec,
                addrs,
            } => self.run(&docker, spec, addrs).await,
            Request::Attach {
                docker,
                container,
                addrs,
            } => self.attach(&docker, &container, addrs).await,
            Request::Detach {
                docker,
                container,
                addrs,
            } => self.detach(&docker, &container, &addrs).await,
            Request::Connect { peers, replace } => self.connect(peers, replace).await,
            Request::Forget { peers } => self.forget(peers).await,
            Request::RmPeer { peer } => self.rmpeer(&peer).await,
            Request::Leave => self.leave().await,
            Request::Prime => self.prime().await,
            Request::DnsEdit {
                docker,
                container,
                ips,
                fqdn,
                add,
            } => {
                self.dns_edit(&docker, &container, &ips, fqdn.as_deref(), add)
                    .await
            }
            Request::DnsLookup { name } => self.dns_lookup(&name),
            Request::Expose { addrs } => self.expose(addrs).await,
            Request::Hide { addrs } => self.hide(addrs).await,
            Request::Stop => return (Ok(Reply::Stopping), Next::Stop),
            Request::CniAdd {
                attachment,
                netns,
                addrs,
            } => self.cni_add(attachment, netns, addrs).await,
            Request::CniDel { attachment } => self.cni_del(&attachment).await,
            Request::CniCheck { attachment, netns } => self.cni_check(&attachment, &netns).await,
            Request::CniGc { valid } => self.cni_gc(&valid).await,
            Request::DockerPlugin(call) => self.docker_plugin(call).await,
        };
        // Names follow the containers before the CLI hears back, so that a
        // container just run can already resolve and be resolved.
        self.dns_sync().await;
        (
            result.map_err(|e| crate::report::one_line(e.as_ref())),
            Next::Continue,
        )
    }

    /// Says goodbye to the peers and leaves the containers' interfaces in
    /// place but takes the bridge down: without the agent nothing enforces
    /// isolation, so nothing is forwarded until the next `weave launch` has
    /// restored it (fail closed).
    pub async fn shutdown(self) {
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving state");
        }
        if let Err(e) = self.netlink.set_down(BRIDGE).await {
            tracing::warn!(error = %e, "taking the bridge down");
        }
        self.mesh.stop().await;
        self.overlay.stop();
        tracing::info!("weave agent stopped");
    }

    fn save(&self) -> anyhow::Result<()> {
        let st = PersistedState {
            peer_name: self.peer_name,
            endpoints: self.endpoints.clone(),
            targets: self.targets.clone(),
            ring: if self.ipam.enabled {
                Some(self.ipam.ring.clone())
            } else {
                self.kept_ring.clone()
            },
            nicknames: self.nicknames.clone(),
            docker_networks: self.docker_networks.clone(),
            exposed: self.exposed.clone(),
            dns_added: self.dns_edits(true),
            dns_removed: self.dns_edits(false),
        };
        Ok(state::save(&self.paths.state_file(), &st)?)
    }

    /// `weave connect`: the mesh validates and dials, then the targets
    /// persist. With `replace` the peers become the targets: the others
    /// are forgotten (their connections stay, as with `forget`), as in Weave.
    async fn connect(&mut self, peers: Vec<String>, replace: bool) -> anyhow::Result<Reply> {
        if !peers.is_empty() {
            self.mesh.connect(peers.clone()).await?;
        }
        if replace {
            let dropped: Vec<String> = self
                .targets
                .iter()
                .filter(|t| !peers.contains(t))
                .cloned()
                .collect();
            if !dropped.is_empty() {
                self.mesh.forget(dropped).await?;
            }
            self.targets.clear();
        }
        for peer in peers {
            if !self.targets.contains(&peer) {
                self.targets.push(peer);
            }
        }
        self.save()?;
        Ok(Reply::Done)
    }

    /// `weave forget`: no more dialling; existing connections stay, as in Weave.
    async fn forget(&mut self, peers: Vec<String>) -> anyhow::Result<Reply> {
        self.mesh.forget(peers.clone()).await?;
        self.targets.retain(|t| !peers.contains(t));
        self.save()?;
        Ok(Reply::Done)
    }

    async fn status(&self) -> Status {
        let counters = self.classifier.counters().map_or_else(
            |e| {
                tracing::warn!(error = %e, "reading eBPF counters");
                Vec::new()
            },
            |c| {
                c.into_iter()
                    .map(|(k, v)| (k.name().to_string(), v))
                    .collect()
            },
        );
        Status {
            version: format!("weave-rs {}", env!("CARGO_PKG_VERSION")),
            encryption: self.encrypted,
            mesh: self.mesh.status().await,
            ipam: self.ipam_status().await,
            containers: self.endpoints.len(),
            mtu: self.mtu,
            classifier: self.classifier.describe(),
            counters,
            overlay: self.overlay.name().to_string(),
            dataplane: self.dataplane.clone(),
            userspace: self.overlay.userspace().to_string(),
            overlay_stats: self.overlay.stats(),
            dns: self.dns_status(),
        }
    }

    /// `weave ps`: every attached container, or those named (as given,
    /// like Weave; a name that is no attached container shows nothing).
    async fn ps(&self, docker: &str, containers: &[String]) -> Vec<PsEntry> {
        let entry = |e: &EndpointRecord, asked_as: Option<&String>| PsEntry {
            container_id: e.container_id.clone(),
            asked_as: asked_as.cloned(),
            mac: e.mac,
            cidrs: e.cidrs.clone(),
        };
        if containers.is_empty() {
            let mut all: Vec<PsEntry> = self.endpoints.iter().map(|e| entry(e, None)).collect();
            // Weave lists the host's exposed addresses first, as `weave:expose`.
            if !self.exposed.is_empty() {
                let mac = self.netlink.mac_of(BRIDGE).await.ok().flatten();
                all.insert(
                    0,
                    PsEntry {
                        container_id: "weave:expose".to_owned(),
                        asked_as: None,
                        mac: crate::mac::Mac(mac.unwrap_or_default()),
                        cidrs: self.exposed.clone(),
                    },
                );
            }
            return all;
        }
        let mut entries = Vec::new();
        for container in containers {
            let mut i = self.find(container);
            if i.is_none()
                && let Ok(d) = crate::docker::Docker::connect(docker).await
                && let Ok(info) = d.inspect(container).await
            {
                i = self.find(&info.id);
            }
            if let Some(i) = i {
                entries.push(entry(&self.endpoints[i], Some(container)));
            }
        }
        entries
    }

    /// Frees addresses; the ring learns our new free counts.
    async fn release(&mut self, cidrs: &[Ipv4Net]) {
        for cidr in cidrs {
            self.ipam.release(*cidr);
        }
        self.ipam_changed().await;
    }

    pub const fn peer_name(&self) -> PeerName {
        self.peer_name
    }

    /// Where the status endpoint asks for snapshots.
    pub fn status_asker(&self) -> mpsc::Sender<StatusAsk> {
        self.status_asker.clone()
    }

    /// Work between requests: IPAM messages from peers, snapshots for the
    /// status endpoint.
    pub async fn next_work(&mut self) -> Option<Work> {
        tokio::select! {
            Some(packet) = self.ipam_inbox.recv() => Some(Work::Ipam(packet)),
            Some(ask) = self.status_asks.recv() => Some(Work::Status(ask)),
            else => None,
        }
    }

    pub async fn work(&mut self, work: Work) {
        match work {
            Work::Ipam(packet) => self.on_ipam(packet).await,
            Work::Status(ask) => self.answer_status(ask).await,
        }
    }

    async fn answer_status(&self, ask: StatusAsk) {
        // A client that gave up is no error.
        let _ = ask.send(Box::new(self.status().await));
    }

    /// Periodic: our ring to the neighbours, as repair.
    pub async fn tick(&mut self) {
        if let Err(e) = self.prune_dead().await {
            tracing::warn!(error = %e, "checking for dead containers");
        }
        self.gossip_ring(crate::mesh::Spread::OneRandom).await;
        if self.ipam.reclaiming() {
            self.send_claims().await;
        }
        self.remember_nicknames().await;
        self.gossip_dns().await;
    }
}
