//! The agent: one task that owns this host's weave state (bridge, eBPF
//! classifier, addresses, attached containers) and serves the CLI's requests
//! one at a time, so no lock is ever held across an await.

mod daemon;
mod endpoints;

pub use daemon::run_foreground;

use ipnet::Ipv4Net;

use crate::api::{PsEntry, Reply, Request, Response};
use crate::config::{BRIDGE, DATAPATH_BRIDGE_END, DATAPATH_END, LaunchOptions, Paths};
use crate::dataplane::Classifier;
use crate::ipam::Allocator;
use crate::netlink::Netlink;
use crate::peer_name::PeerName;
use crate::state::{self, EndpointRecord, PersistedState};
use crate::status::Status;

pub struct Agent {
    paths: Paths,
    options: LaunchOptions,
    peer_name: PeerName,
    nickname: String,
    netlink: Netlink,
    bridge_index: u32,
    classifier: Classifier,
    allocator: Allocator,
    endpoints: Vec<EndpointRecord>,
}

/// Whether the agent loop goes on after a request.
pub enum Next {
    Continue,
    Stop,
}

impl Agent {
    /// Builds the bridge and its datapath port, loads the eBPF programs,
    /// restores the containers attached before a restart, and only then
    /// brings the bridge up: no frame crosses it unclassified.
    pub async fn start(paths: Paths, options: LaunchOptions) -> anyhow::Result<Self> {
        use anyhow::Context;

        let saved = state::load(&paths.state_file())?;
        let peer_name = options
            .name
            .or(saved.as_ref().map(|s| s.peer_name))
            .unwrap_or_else(PeerName::random);
        let nickname = options.nickname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "weave".into())
        });

        let netlink = Netlink::connect()?;
        let bridge_index = netlink
            .ensure_bridge(BRIDGE, options.mtu)
            .await
            .context("setting up the weave bridge")?;
        // The agent's own port: frames for other hosts will leave through it.
        if netlink.index_of(DATAPATH_END).await?.is_none() {
            netlink.delete(DATAPATH_BRIDGE_END).await?;
            netlink
                .create_veth(DATAPATH_BRIDGE_END, DATAPATH_END, options.mtu)
                .await
                .context("creating the datapath port")?;
        }
        netlink
            .set_master(DATAPATH_BRIDGE_END, bridge_index)
            .await?;

        let mut classifier = Classifier::load().context("loading the eBPF programs")?;
        classifier
            .attach_datapath(DATAPATH_END)
            .context("attaching the datapath XDP program")?;
        netlink.set_up(DATAPATH_END).await?;
        netlink.set_up(DATAPATH_BRIDGE_END).await?;

        let allocator = Allocator::new(options.ipalloc_range, options.default_subnet());
        let mut agent = Agent {
            paths,
            options,
            peer_name,
            nickname,
            netlink,
            bridge_index,
            classifier,
            allocator,
            endpoints: Vec::new(),
        };
        agent
            .restore(saved.map(|s| s.endpoints).unwrap_or_default())
            .await?;
        agent.save()?;
        agent.netlink.set_up(BRIDGE).await?;
        tracing::info!(peer = %agent.peer_name, nickname = %agent.nickname, "weave agent ready");
        Ok(agent)
    }

    pub async fn handle(&mut self, request: Request) -> (Response, Next) {
        // Containers may have died since the last request: forget them first
        // so their addresses are free and `ps` tells the truth.
        if let Err(e) = self.prune_dead().await {
            tracing::warn!(error = %e, "checking for dead containers");
        }
        let result = match request {
            Request::Status => Ok(Reply::Status(Box::new(self.status()))),
            Request::Ps => Ok(Reply::Ps(self.ps())),
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
            Request::Detach { docker, container } => self.detach(&docker, &container).await,
            Request::Stop => return (Ok(Reply::Stopping), Next::Stop),
        };
        (
            result.map_err(|e| crate::report::one_line(&e)),
            Next::Continue,
        )
    }

    /// Leaves the containers' interfaces in place but takes the bridge down:
    /// without the agent nothing enforces isolation, so nothing is forwarded
    /// until the next `weave launch` has restored it (fail closed).
    pub async fn shutdown(self) {
        if let Err(e) = self.netlink.set_down(BRIDGE).await {
            tracing::warn!(error = %e, "taking the bridge down");
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving state");
        }
        tracing::info!("weave agent stopped");
    }

    fn save(&self) -> anyhow::Result<()> {
        let st = PersistedState {
            peer_name: self.peer_name,
            endpoints: self.endpoints.clone(),
        };
        Ok(state::save(&self.paths.state_file(), &st)?)
    }

    fn status(&self) -> Status {
        let counters = self
            .classifier
            .counters()
            .map(|c| {
                c.into_iter()
                    .map(|(k, v)| (k.name().to_string(), v))
                    .collect()
            })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading eBPF counters");
                Vec::new()
            });
        Status {
            version: format!("weave-rs {}", env!("CARGO_PKG_VERSION")),
            name: self.peer_name.to_string(),
            nickname: self.nickname.clone(),
            encryption: false,
            peer_discovery: true,
            targets: 0,
            connections: 0,
            peers: 1,
            ipam_range: self.allocator.range(),
            default_subnet: self.allocator.default_subnet(),
            addresses_in_use: self.allocator.in_use(),
            containers: self.endpoints.len(),
            mtu: self.options.mtu,
            dataplane: self.classifier.describe(),
            counters,
        }
    }

    fn ps(&self) -> Vec<PsEntry> {
        self.endpoints
            .iter()
            .map(|e| PsEntry {
                container_id: e.container_id.clone(),
                mac: e.mac,
                cidrs: e.cidrs.clone(),
            })
            .collect()
    }

    fn release(&mut self, cidrs: &[Ipv4Net]) {
        for cidr in cidrs {
            self.allocator.release(cidr.addr());
        }
    }
}
