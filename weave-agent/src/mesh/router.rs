//! The mesh actor: one task owning the topology, the connections and the
//! dialling schedule, fed by the handle ([`Mesh`]), the listener, the
//! connection tasks and its timers. Nothing is shared and no lock is held:
//! the data plane gets a fresh [`ForwardingTable`] through
//! [`Overlay::update`] whenever the routes change.
//!
//! Two connections to the same peer (both dialled at once, or a restarted
//! peer whose old connection is not dead yet) are resolved identically on
//! both sides: a peer with a new uid wins over its previous run; otherwise
//! the connection with the smaller `(initiator name, initiator nonce)` is
//! kept and the other closed with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::dns::DnsGossip;
use crate::ipam::IpamPacket;
use crate::mesh::beat;
use crate::mesh::connection::{
    self, CloseKind, CloseReason, ConnId, ConnectionTiming, Event, Outgoing, Setup,
};
use crate::mesh::connection_maker::{
    self, Backoff, BadTarget, ConnectionMaker, DialKey, Link, MAX_TARGETS, Seen, Target,
};
use crate::mesh::epidemic;
use crate::mesh::fastdp::{self, FastdpOff};
use crate::mesh::liveness::DataPath;
use crate::mesh::noise::{DataKeys, Psk};
use crate::mesh::path_mtu::PathMtu;
use crate::mesh::protocol::{
    COMPACT_GOSSIP_VERSION, DEFAULT_PORT, DIGEST_VERSION, DNS_VERSION, Hello, MAX_FRAME,
    MAX_NICKNAME, Message, PROTOCOL, PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION, compact_entry,
    encode, encode_compact_gossip, sanitize,
};
use crate::mesh::routes::{self, Routes};
use crate::mesh::status::{
    self, ConnectionStatus, DataPathState, DataPathStatus, LiveConnection, MeshCounters,
    MeshStatus, Sources,
};
use crate::mesh::topology::{
    ConnectionSummary, PeerInfo, Rejection, Topology, TopologyDigest, TopologyUpdate, now_ms,
};
use crate::overlay::heartbeat::{self, HeartbeatKey};
use crate::overlay::seal::{self, PeerKeys};
use crate::overlay::vxlan;
use crate::overlay::{DataCipher, ForwardingTable, Overlay, ShortId};
use crate::overlay::{HeartbeatArrival, HeartbeatPort, NeighbourKeys};
use crate::peer_name::PeerName;

/// Frames queued for one connection before the peer counts as too slow.
pub const SEND_QUEUE: usize = 64;
/// Events queued from all connection tasks to the router.
const EVENT_QUEUE: usize = 256;
/// Inbound refusals kept for `weave status connections` (shown for a while:
/// see `status`).
const MAX_REFUSED_SHOWN: usize = 8;
/// Inbound connections in their handshake at once; more are dropped.
pub const MAX_HANDSHAKING: usize = 64;

/// `--conn-limit` by default: Weave's 200, room for a mesh of 200 peers.
pub const DEFAULT_CONN_LIMIT: usize = 200;
/// Gossip is split into frames of about this size.
const GOSSIP_CHUNK: usize = 256 * 1024;
/// Events handled before the routes are recomputed (batching bursts).
const EVENT_BATCH: usize = 64;
/// Routes follow other peers' changes at most this often. Their entries
/// change in bursts (a peer joining a mesh of N changes N entries within
/// moments, each arriving on its own), and every computation costs a
/// search per origin; changes of our own connections are followed at once.
const ROUTE_INTERVAL: Duration = Duration::from_millis(150);

/// Timeouts and intervals; the defaults are Weave's orders of magnitude,
/// tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Data-path heartbeats (UDP), one per connected peer each interval.
    pub heartbeat: Duration,
    /// A data path whose heartbeats stop this long is down (routes go round).
    pub dead_after: Duration,
    /// Control connections (TCP) send a heartbeat this often: the data
    /// path's heartbeats already say within seconds whether a peer is
    /// there, so the control connection's only need to find a dead TCP
    /// connection, and each one wakes both agents (at a hundred peers, the
    /// idle agents' wake-ups were what filled the machine).
    pub control_heartbeat: Duration,
    /// A control connection silent this long is dead.
    pub control_dead_after: Duration,
    pub handshake_timeout: Duration,
    /// Name resolution and TCP connect, each.
    pub dial_timeout: Duration,
    /// Full topology to every neighbour, as repair.
    pub gossip_interval: Duration,
    pub backoff: Backoff,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(6),
            control_heartbeat: Duration::from_secs(5),
            control_dead_after: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(5),
            gossip_interval: Duration::from_secs(10),
            backoff: Backoff::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub name: PeerName,
    /// Shown to other peers; control characters are replaced.
    pub nickname: String,
    /// Where peers connect to us, normally 0.0.0.0:6783.
    pub listen: SocketAddr,
    /// The UDP port of our data plane, announced to peers.
    pub data_port: u16,
    /// Dial the peers that others are connected to.
    pub discovery: bool,
    /// `host` or `host:port` to dial.
    pub targets: Vec<String>,
    /// The overlay MTU, shown per connection.
    pub mtu: u32,
    pub timing: Timing,
    /// Password mode: the key every peer must prove it has (see `noise`).
    pub psk: Option<Psk>,
    /// Password mode: offer AES-256-GCM for data frames (`weave launch
    /// --cipher auto` on a CPU with AES instructions).
    pub offer_aes: bool,
    /// Where IPAM messages for us go (the agent); `None` drops them.
    pub ipam_inbox: Option<mpsc::Sender<IpamPacket>>,
    /// Where weaveDNS gossip from peers goes (the agent); `None` drops it.
    pub dns_inbox: Option<mpsc::Sender<DnsGossip>>,
    /// This agent runs the in-kernel data path (fastdp). It is offered in
    /// our hellos and used per connection only without a password: fastdp
    /// carries unencrypted traffic only (see `mesh::fastdp`).
    pub fastdp: bool,
    /// The userspace data plane's name ("xdp", "plain"), shown for the
    /// connections that do not use fastdp; empty means `overlay.userspace()`.
    pub dataplane_name: String,
    /// Most established peer connections (`--conn-limit`): more are refused
    /// and counted. At most [`super::MAX_CONNECTIONS_PER_PEER`], what a peer's
    /// gossiped entry may list.
    pub conn_limit: usize,
    /// Bind the listener at start but neither accept nor dial until
    /// [`Mesh::open`]: the agent finishes setting itself up first. Launched
    /// into a big mesh whose peers are all dialling it again, it would
    /// otherwise set itself up among a hundred handshakes at once, and
    /// `weave launch` took seconds to come back.
    pub wait_for_open: bool,
}

impl MeshConfig {
    /// Defaults: listen on 0.0.0.0:6783, data port 6784, discovery on, no
    /// targets, MTU 1376, no fastdp.
    pub fn new(name: PeerName, nickname: impl Into<String>) -> Self {
        Self {
            name,
            nickname: nickname.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            data_port: DEFAULT_PORT + 1,
            discovery: true,
            targets: Vec::new(),
            mtu: 1376,
            timing: Timing::default(),
            psk: None,
            offer_aes: false,
            ipam_inbox: None,
            dns_inbox: None,
            fastdp: false,
            dataplane_name: String::new(),
            conn_limit: DEFAULT_CONN_LIMIT,
            wait_for_open: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("listening for peers on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    BadTarget(#[from] BadTarget),
    #[error("too many peer addresses (at most {limit})")]
    TooManyTargets { limit: usize },
    #[error("the mesh has stopped")]
    Stopped,
}

enum Command {
    Connect(
        Vec<(Target, String)>,
        oneshot::Sender<Result<(), MeshError>>,
    ),
    Forget(Vec<Target>, oneshot::Sender<()>),
    Status(oneshot::Sender<MeshStatus>),
    Peers(oneshot::Sender<Vec<(PeerName, String)>>),
    /// Routed to its destination, or gossiped as `Spread` says.
    SendIpam(IpamPacket, Spread),
    /// To every neighbour that speaks it.
    SendDns(DnsGossip, Spread),
    /// Start accepting and dialling (see [`MeshConfig::wait_for_open`]).
    Open,
    Stop(oneshot::Sender<()>),
}

/// The handle on the mesh actor. Dropping it stops the mesh too.
pub struct Mesh {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    local_addr: SocketAddr,
    fallback: MeshStatus,
}

impl Mesh {
    /// Binds the listener, starts the actor, dials the targets. The overlay
    /// gets a forwarding table at once and on every change.
    pub async fn start(config: MeshConfig, overlay: Arc<dyn Overlay>) -> Result<Self, MeshError> {
        let targets = parse_targets(&config.targets)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MeshError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| MeshError::Bind {
            addr: config.listen,
            source,
        })?;
        let (commands, commands_rx) = mpsc::channel(16);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut router = Router::new(config, local_addr.port(), overlay, events_tx);
        let now = Instant::now();
        for (target, shown) in targets {
            router.maker.add_target(target, shown, now);
        }
        // The data plane knows who we are before `start` returns.
        router.refresh();
        let fallback = router.status();
        let task = tokio::spawn(router.run(listener, commands_rx, events_rx));
        Ok(Self {
            commands,
            task,
            local_addr,
            fallback,
        })
    }

    /// The address the listener is bound to (its port when 0 was asked).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds targets (`host` or `host:port`) and dials them at once. Invalid
    /// ones refuse the whole list.
    pub async fn connect(&self, targets: Vec<String>) -> Result<(), MeshError> {
        let targets = parse_targets(&targets)?;
        let (tx, rx) = oneshot::channel();
        self.send(Command::Connect(targets, tx)).await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Removes targets; connections they made stay, as in Weave.
    pub async fn forget(&self, targets: Vec<String>) -> Result<(), MeshError> {
        let targets = parse_targets(&targets)?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let (tx, rx) = oneshot::channel();
        self.send(Command::Forget(targets, tx)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// A snapshot; if the actor is gone, what it was at start (alone).
    pub async fn status(&self) -> MeshStatus {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Status(tx)).await.is_err() {
            return self.fallback.clone();
        }
        rx.await.unwrap_or_else(|_| self.fallback.clone())
    }

    /// Every peer the topology knows (ourselves included) and its nickname:
    /// what the agent asks every few seconds, without building a whole
    /// status (at a hundred peers, ten thousand connections).
    pub async fn peers(&self) -> Vec<(PeerName, String)> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Sends an IPAM message: without a destination as gossip, to the
    /// neighbours `spread` says; else routed to its destination. Best
    /// effort, like all gossip: the IPAM layer repeats what matters.
    pub async fn send_ipam(&self, packet: IpamPacket, spread: Spread) -> Result<(), MeshError> {
        self.send(Command::SendIpam(packet, spread)).await
    }

    /// Sends weaveDNS entries to the neighbours `spread` says; they pass on
    /// what changes theirs.
    pub async fn send_dns(&self, gossip: DnsGossip, spread: Spread) -> Result<(), MeshError> {
        self.send(Command::SendDns(gossip, spread)).await
    }

    /// Starts accepting and dialling, when the mesh was started with
    /// [`MeshConfig::wait_for_open`]; nothing otherwise.
    pub async fn open(&self) -> Result<(), MeshError> {
        self.send(Command::Open).await
    }

    /// Tells every peer we are going, closes everything, waits for the actor.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    async fn send(&self, c: Command) -> Result<(), MeshError> {
        self.commands.send(c).await.map_err(|_| MeshError::Stopped)
    }
}

fn parse_targets(texts: &[String]) -> Result<Vec<(Target, String)>, MeshError> {
    if texts.len() > MAX_TARGETS {
        return Err(MeshError::TooManyTargets { limit: MAX_TARGETS });
    }
    texts
        .iter()
        .map(|s| Ok((Target::parse(s)?, s.trim().to_string())))
        .collect()
}

struct Conn {
    outbound: bool,
    /// The dial it came from.
    via: Option<DialKey>,
    /// Our hello's nonce on this connection.
    nonce: u64,
    tx: mpsc::Sender<Outgoing>,
    abort: AbortHandle,
    /// Set once established.
    remote: Option<SocketAddr>,
    /// Our end of the connection, set once established.
    local: Option<SocketAddr>,
    peer: Option<Established>,
    /// Inbound: the TCP address from accept.
    accepted_from: Option<SocketAddr>,
    /// Without a password: the key our heartbeats on this connection are
    /// tagged with, sent in our hello.
    heartbeat_key: Option<HeartbeatKey>,
}

struct Established {
    hello: Hello,
    version: u32,
    /// Password mode: this connection's data keys (and their cipher), for
    /// the data plane.
    keys: Option<NeighbourKeys>,
    /// Data-path heartbeats, when both ends send them.
    data: Option<DataPath>,
    /// The path's MTU, when both ends answer probes (and send heartbeats).
    path_mtu: Option<PathMtu>,
    /// The peer's digest was answered: a connection opens with one, and
    /// answering more would let a peer have our whole topology sent again
    /// and again for a few bytes each.
    digest_answered: bool,
    /// When the handshake completed (Unix time in milliseconds), for status.
    since_unix_ms: u64,
}

impl Conn {
    /// Whether the connection is established with protocol `version` or later.
    fn speaks(&self, version: u32) -> bool {
        self.peer.as_ref().is_some_and(|p| p.version >= version)
    }

    /// The tie-break key: who dialled, and its nonce.
    const fn initiator(&self, me: PeerName) -> (PeerName, u64) {
        match (&self.peer, self.outbound) {
            (_, true) => (me, self.nonce),
            (Some(p), false) => (p.hello.name, p.hello.nonce),
            (None, false) => (me, u64::MAX),
        }
    }

    /// Once established: the connection as the fastdp rule sees it.
    fn fastdp_link(&self, config: &MeshConfig) -> Option<fastdp::Link> {
        let (local, peer) = (self.local?, self.peer.as_ref()?);
        Some(fastdp::Link {
            ours: config.fastdp,
            encrypted: config.psk.is_some() || peer.hello.encrypted,
            theirs: peer.hello.fastdp,
            local,
        })
    }

    /// Where the peer's data plane is: where its heartbeats come from once
    /// one arrived (behind a NAT, not its TCP address), else its TCP
    /// address with the data port of its hello.
    fn data_addr(&self) -> Option<SocketAddr> {
        let peer = self.peer.as_ref()?;
        peer.data
            .as_ref()
            .and_then(DataPath::learnt)
            .or_else(|| Some(SocketAddr::new(self.remote?.ip(), peer.hello.data_port)))
    }

    /// The peer's listen address as seen from here.
    fn listen_addr(&self) -> Option<SocketAddr> {
        let (remote, peer) = (self.remote?, self.peer.as_ref()?);
        Some(SocketAddr::new(remote.ip(), peer.hello.listen_port))
    }
}

struct Router {
    config: MeshConfig,
    listen_port: u16,
    uid: u64,
    overlay: Arc<dyn Overlay>,
    topology: Topology,
    maker: ConnectionMaker,
    conns: BTreeMap<ConnId, Conn>,
    /// The established connection kept for each peer.
    by_peer: BTreeMap<PeerName, ConnId>,
    routes: Routes,
    published: Option<Arc<ForwardingTable>>,
    counters: MeshCounters,
    /// Kinds of trouble already logged at warn level; later ones go to debug.
    logged: BTreeSet<&'static str>,
    /// Accepting and dialling (see [`MeshConfig::wait_for_open`]).
    open: bool,
    tasks: JoinSet<()>,
    events_tx: mpsc::Sender<Event>,
    next_id: ConnId,
    links_changed: bool,
    topology_changed: bool,
    /// The routes do not follow the topology yet: recomputed at the latest
    /// one `ROUTE_INTERVAL` after `routes_at` (see [`Router::refresh`]).
    routes_stale: bool,
    /// When the routes were last computed.
    routes_at: Option<Instant>,
    /// Established since the last gossip; they get the whole topology.
    needs_topology: BTreeSet<ConnId>,
    /// Entries that changed since gossip last went out: what is sent next
    /// (see [`Router::gossip_changes`]), rather than the whole topology.
    changed_entries: BTreeSet<PeerName>,
    /// Inbound connections refused lately, newest last, for status: the
    /// dialling side sees its own attempts fail, this is the other side.
    refused_inbound: std::collections::VecDeque<(Instant, ConnectionStatus)>,
    /// The data plane's heartbeats; without it every data path counts as up.
    heartbeats: Option<HeartbeatPort>,
    /// Peers whose data path is down: their connections are left out of
    /// our topology entry, so routes go around them.
    data_down: BTreeSet<PeerName>,
    /// Heartbeats refused here (unknown sender, bad tag, replay).
    heartbeats_rejected: u64,
    /// Heartbeats the kernel would not send (full buffer, no route).
    heartbeats_unsent: u64,
    /// Where path MTU probes are written (allocated once, as big as the
    /// largest).
    probe_buf: Vec<u8>,
}

impl Router {
    fn new(
        mut config: MeshConfig,
        listen_port: u16,
        overlay: Arc<dyn Overlay>,
        events_tx: mpsc::Sender<Event>,
    ) -> Self {
        config.nickname = sanitize(&config.nickname, MAX_NICKNAME - 3);
        let uid = rand::random();
        let ours = PeerInfo::new(config.name, config.nickname.clone(), uid, now_ms());
        let maker = ConnectionMaker::new(config.discovery, config.timing.backoff, rand::random());
        let heartbeats = overlay.heartbeats();
        Self {
            heartbeats,
            data_down: BTreeSet::new(),
            heartbeats_rejected: 0,
            heartbeats_unsent: 0,
            probe_buf: Vec::new(),
            listen_port,
            uid,
            overlay,
            topology: Topology::new(ours),
            maker,
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            routes: Routes::default(),
            published: None,
            counters: MeshCounters::default(),
            logged: BTreeSet::new(),
            open: !config.wait_for_open,
            tasks: JoinSet::new(),
            events_tx,
            next_id: 1,
            links_changed: false,
            topology_changed: true,
            routes_stale: true,
            routes_at: None,
            needs_topology: BTreeSet::new(),
            changed_entries: BTreeSet::new(),
            refused_inbound: std::collections::VecDeque::new(),
            config,
        }
    }

    const fn me(&self) -> PeerName {
        self.config.name
    }

    async fn run(
        mut self,
        listener: TcpListener,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
    ) {
        tracing::info!(
            peer = %self.me(),
            nickname = %self.config.nickname,
            port = self.listen_port,
            discovery = self.config.discovery,
            "mesh listening"
        );
        let period = self.config.timing.gossip_interval;
        let mut gossip = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        gossip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat = self.config.timing.heartbeat;
        let mut beat = tokio::time::interval_at(beat::next(heartbeat), heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Probes and acknowledgements are read as they come (heartbeats
        // wait for the round): a probe's answer must not wait a round on
        // each side.
        let port = self.heartbeats.clone();
        self.refresh();
        self.dial_due();

        let stop = loop {
            let dials = self.open.then(|| self.maker.next_wakeup()).flatten();
            let wake = [dials, self.routes_due(Instant::now())]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                command = commands.recv() => match command {
                    None => break None,
                    Some(Command::Stop(reply)) => break Some(reply),
                    Some(c) => self.command(c),
                },
                Some(event) = events.recv() => {
                    self.event(event);
                    for _ in 0..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(event) => self.event(event),
                            Err(_) => break,
                        }
                    }
                }
                accepted = listener.accept(), if self.open => match accepted {
                    Ok((stream, from)) => self.accept(stream, from),
                    Err(e) => {
                        self.note("accept", format!("accepting a peer connection: {e}"));
                        // Out of descriptors, most likely: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = gossip.tick() => self.gossip_repair(),
                _ = beat.tick() => self.heartbeat_round(Instant::now()),
                () = probe_or_ack_arrived(port.as_ref()) => {
                    if let Some(port) = &port {
                        self.take_arrivals(port, Instant::now());
                    }
                }
                () = sleep_until(wake) => {}
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "a mesh connection task panicked");
                    }
                }
            }
            self.refresh();
            self.dial_due();
        };
        drop(listener);
        self.shutdown(&mut events).await;
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect(targets, reply) => {
                let known = self.maker.targets().len();
                let result = if known + targets.len() > MAX_TARGETS {
                    Err(MeshError::TooManyTargets { limit: MAX_TARGETS })
                } else {
                    for (target, shown) in targets {
                        tracing::info!(address = %target, "connecting");
                        self.maker.add_target(target, shown, now);
                    }
                    // Links may already satisfy them.
                    self.maker.sync(&self.links(), now);
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::Forget(targets, reply) => {
                for target in &targets {
                    if self.maker.remove_target(target) {
                        tracing::info!(address = %target, "forgot target");
                    }
                }
                let _ = reply.send(());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Peers(reply) => {
                let peers = self.topology.peers();
                let _ = reply.send(peers.map(|p| (p.name, p.nickname.clone())).collect());
            }
            Command::SendIpam(packet, spread) => self.route_ipam(packet, spread),
            Command::SendDns(gossip, spread) => self.send_dns(&gossip, spread),
            Command::Open => self.open = true,
            Command::Stop(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Dialled {
                id,
                resolved,
                error,
            } => self.on_dialled(id, &resolved, error),
            Event::Established {
                id,
                hello,
                remote,
                local,
                version,
                keys,
            } => self.on_established(id, hello, (remote, local), version, keys),
            Event::Received { id, message } => self.on_message(id, message),
            Event::Closed { id, reason } => self.on_closed(id, reason),
        }
    }

    fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        let handshaking = self
            .conns
            .values()
            .filter(|c| !c.outbound && c.peer.is_none())
            .count();
        if handshaking >= MAX_HANDSHAKING
            || self.conns.len() >= self.config.conn_limit + MAX_HANDSHAKING
        {
            self.counters.connections_over_limit += 1;
            self.note(
                "limit",
                format!("dropping a connection from {from}: too many connections"),
            );
            return;
        }
        let id = self.spawn_connection(false, None, Some(from), move |setup| async move {
            connection::run(stream, setup).await;
        });
        tracing::debug!(conn = id, %from, "accepted");
    }

    fn dial_due(&mut self) {
        if !self.open {
            return;
        }
        for key in self.maker.due(Instant::now()) {
            let timeout = self.config.timing.dial_timeout;
            let events = self.events_tx.clone();
            tracing::debug!(address = %key, "dialling");
            self.spawn_connection(true, Some(key.clone()), None, move |setup| async move {
                let (resolved, result) = connection_maker::dial(&key, timeout).await;
                let id = setup.id;
                let error = result.as_ref().err().cloned();
                if events
                    .send(Event::Dialled {
                        id,
                        resolved,
                        error,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                if let Ok(stream) = result {
                    connection::run(stream, setup).await;
                }
            });
        }
    }

    fn spawn_connection<F, Fut>(
        &mut self,
        outbound: bool,
        via: Option<DialKey>,
        accepted_from: Option<SocketAddr>,
        task: F,
    ) -> ConnId
    where
        F: FnOnce(Setup) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.next_id;
        self.next_id += 1;
        let nonce = rand::random();
        let (tx, outgoing) = mpsc::channel(SEND_QUEUE);
        let t = self.config.timing;
        // Password mode derives the keys from the connection's own.
        let heartbeat_key =
            (self.heartbeats.is_some() && self.config.psk.is_none()).then(HeartbeatKey::random);
        let setup = Setup {
            id,
            hello: self.hello(nonce, heartbeat_key.as_ref()),
            timing: ConnectionTiming {
                heartbeat: t.control_heartbeat,
                dead_after: t.control_dead_after,
                handshake_timeout: t.handshake_timeout,
            },
            events: self.events_tx.clone(),
            outgoing,
            psk: self.config.psk.clone(),
        };
        let abort = self.tasks.spawn(task(setup));
        self.conns.insert(
            id,
            Conn {
                outbound,
                via,
                nonce,
                tx,
                abort,
                remote: None,
                local: None,
                peer: None,
                accepted_from,
                heartbeat_key,
            },
        );
        id
    }

    fn hello(&self, nonce: u64, heartbeat_key: Option<&HeartbeatKey>) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            min_version: PROTOCOL_MIN_VERSION,
            max_version: PROTOCOL_MAX_VERSION,
            name: self.me(),
            nickname: self.config.nickname.clone(),
            uid: self.uid,
            nonce,
            listen_port: self.listen_port,
            data_port: self.config.data_port,
            encrypted: self.config.psk.is_some(),
            aes_gcm: self.offers_aes(),
            fastdp: self.config.fastdp && self.config.psk.is_none(),
            heartbeats: self.heartbeats.is_some(),
            heartbeat_key: heartbeat_key.map(HeartbeatKey::to_hex),
            path_mtu: self.heartbeats.is_some(),
        }
    }

    /// Password mode: whether our hellos offer AES-256-GCM for data frames.
    const fn offers_aes(&self) -> bool {
        self.config.psk.is_some() && self.config.offer_aes
    }

    fn on_dialled(&mut self, id: ConnId, resolved: &[SocketAddr], error: Option<String>) {
        let Some(key) = self.conns.get(&id).and_then(|c| c.via.clone()) else {
            return;
        };
        self.maker.resolved(&key, resolved);
        if let Some(error) = error {
            tracing::debug!(address = %key, %error, "dial failed");
            self.conns.remove(&id);
            self.maker.dial_failed(&key, error, true, Instant::now());
        }
    }

    fn on_established(
        &mut self,
        id: ConnId,
        hello: Hello,
        (remote, local): (SocketAddr, SocketAddr),
        version: u32,
        keys: Option<DataKeys>,
    ) {
        let me = self.me();
        let overhead = self.datagram_overhead();
        let offers_aes = self.offers_aes();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.remote = Some(remote);
        conn.local = Some(local);
        let name = hello.name;
        let nickname = hello.nickname.clone();
        let data = match (&self.heartbeats, hello.heartbeats, &keys) {
            (Some(_), true, Some(k)) => {
                Some(DataPath::derived(&k.send[..], &k.recv[..], Instant::now()))
            }
            (Some(_), true, None) => {
                let theirs = hello
                    .heartbeat_key
                    .as_deref()
                    .and_then(HeartbeatKey::from_hex);
                conn.heartbeat_key
                    .clone()
                    .zip(theirs)
                    .map(|(ours, theirs)| DataPath::new(ours, theirs, Instant::now()))
            }
            _ => None,
        };
        let path_mtu = (data.is_some() && hello.path_mtu)
            .then(|| PathMtu::new(self.config.mtu as usize + overhead));
        let cipher = DataCipher::agreed(offers_aes, hello.aes_gcm);
        let keys = keys.map(|k| NeighbourKeys(Arc::new(PeerKeys::new(&k.send, &k.recv, cipher))));
        conn.peer = Some(Established {
            hello,
            version,
            keys,
            data,
            path_mtu,
            digest_answered: false,
            since_unix_ms: now_ms(),
        });
        let outbound = conn.outbound;

        if let Some(&old_id) = self.by_peer.get(&name) {
            let (new, old) = (&self.conns[&id], &self.conns[&old_id]);
            let (new_uid, old_uid) = (uid_of(new), uid_of(old));
            let keep_new = if new_uid == old_uid {
                new.initiator(me) < old.initiator(me)
            } else {
                true
            };
            let (winner, loser) = if keep_new { (id, old_id) } else { (old_id, id) };
            let reason = if new_uid == old_uid {
                let (by, _) = self.conns[&winner].initiator(me);
                format!("duplicate connection to {name}: keeping the one initiated by {by}")
            } else {
                format!("{name} restarted: replaced by its new connection")
            };
            self.counters.duplicate_connections += 1;
            tracing::debug!(peer = %name, closing = loser, keeping = winner, "{reason}");
            self.close(loser, &reason);
            if !keep_new {
                return;
            }
        } else if self.by_peer.len() >= self.config.conn_limit {
            self.counters.connections_over_limit += 1;
            let limit = self.config.conn_limit;
            self.note(
                "limit",
                format!("refusing {name}: {limit} peers connected already (--conn-limit)"),
            );
            self.close(id, "too many connections");
            return;
        }

        self.by_peer.insert(name, id);
        if let Some(key) = self.conns.get(&id).and_then(|c| c.via.clone()) {
            self.maker.dial_succeeded(&key);
        }
        self.links_changed = true;
        self.needs_topology.insert(id);
        tracing::info!(peer = %name, nickname = %nickname, %remote, outbound, version, "connection established");
    }

    fn on_message(&mut self, id: ConnId, message: Message) {
        let Some(from) = self
            .conns
            .get(&id)
            .and_then(|c| c.peer.as_ref())
            .map(|p| p.hello.name)
        else {
            return;
        };
        let update = match message {
            Message::Gossip(update) => update,
            Message::Ipam(packet) => return self.on_ipam(from, packet),
            Message::Dns(gossip) => return self.on_dns(gossip),
            Message::Digest(digest) => return self.on_digest(id, &digest),
            _ => return,
        };
        let outcome = self.topology.merge(&update);
        for (peer, why) in &outcome.rejected {
            if *why == Rejection::OurName && !outcome.changed.contains(peer) {
                // Our entry from a previous run, gossiped back: normal.
                tracing::debug!(%from, "ignored a stale entry for ourselves");
                continue;
            }
            self.counters.gossip_entries_rejected += 1;
            self.note(
                "gossip",
                format!("rejected the entry for {peer} gossiped by {from}: {why}"),
            );
        }
        if outcome.is_changed() {
            self.changed_entries.extend(outcome.changed.iter().copied());
            self.topology_changed = true;
        }
    }

    /// A neighbour's digest, once per connection: the entries it lacks or
    /// holds older go to it (its own digest answer brings us what we lack).
    fn on_digest(&mut self, id: ConnId, digest: &TopologyDigest) {
        let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) else {
            return;
        };
        if std::mem::replace(&mut peer.digest_answered, true) {
            self.counters.digests_ignored += 1;
            return;
        }
        let newer = self.topology.newer_than(digest);
        if !newer.is_empty() {
            self.send_gossip(&[id], &newer);
        }
    }

    /// An IPAM message from neighbour `from`: checked, then given to the
    /// agent if it is for us, else passed on towards its destination.
    fn on_ipam(&mut self, from: PeerName, mut packet: IpamPacket) {
        if let Err(e) = packet.check(from) {
            self.counters.ipam_rejected += 1;
            self.note("ipam", format!("rejected an IPAM message from {from}: {e}"));
            return;
        }
        match packet.dst {
            Some(dst) if dst != self.me() => {
                packet.hops += 1;
                // Addressed: the spread applies to gossip only.
                self.route_ipam(packet, Spread::Everyone);
            }
            _ => {
                let delivered = self
                    .config
                    .ipam_inbox
                    .as_ref()
                    .is_some_and(|inbox| inbox.try_send(packet).is_ok());
                if !delivered {
                    self.counters.ipam_dropped += 1;
                }
            }
        }
    }

    /// Sends an IPAM packet on: gossip to every neighbour or to one at
    /// random, an addressed packet to the next hop towards its destination.
    fn route_ipam(&mut self, packet: IpamPacket, spread: Spread) {
        let ids: Vec<ConnId> = match (packet.dst, spread) {
            (None, Spread::Everyone) => self.by_peer.values().copied().collect(),
            (None, Spread::OneRandom) => self.one_random_neighbour(|_| true).into_iter().collect(),
            (Some(dst), _) => {
                let hop = self.routes.next_hop.get(&dst).copied().unwrap_or(dst);
                if let Some(id) = self.by_peer.get(&hop) {
                    vec![*id]
                } else {
                    self.counters.ipam_dropped += 1;
                    return;
                }
            }
        };
        let frame: Arc<[u8]> = match encode(&Message::Ipam(packet), MAX_FRAME) {
            Ok(f) => f.into(),
            Err(e) => {
                self.counters.ipam_dropped += 1;
                self.note("ipam encode", format!("encoding an IPAM message: {e}"));
                return;
            }
        };
        for id in ids {
            if let Some(conn) = self.conns.get(&id)
                && conn
                    .tx
                    .try_send(Outgoing::Frame(Arc::clone(&frame)))
                    .is_err()
            {
                self.counters.ipam_dropped += 1;
            }
        }
    }

    /// weaveDNS gossip: the agent merges it and floods what changed.
    fn on_dns(&mut self, gossip: DnsGossip) {
        let delivered = self
            .config
            .dns_inbox
            .as_ref()
            .is_some_and(|inbox| inbox.try_send(gossip).is_ok());
        if !delivered {
            self.counters.dns_dropped += 1;
        }
    }

    /// weaveDNS entries to every neighbour whose connection speaks them.
    fn send_dns(&mut self, gossip: &DnsGossip, spread: Spread) {
        let frame: Arc<[u8]> = match encode(&Message::Dns(gossip.clone()), MAX_FRAME) {
            Ok(f) => f.into(),
            Err(e) => {
                self.counters.dns_dropped += 1;
                self.note("dns encode", format!("encoding weaveDNS gossip: {e}"));
                return;
            }
        };
        let speaks_dns = |c: &Conn| c.speaks(DNS_VERSION);
        let to: Vec<ConnId> = match spread {
            Spread::Everyone => self
                .by_peer
                .values()
                .copied()
                .filter(|id| self.conns.get(id).is_some_and(speaks_dns))
                .collect(),
            Spread::OneRandom => self.one_random_neighbour(speaks_dns).into_iter().collect(),
        };
        for id in &to {
            if let Some(conn) = self.conns.get(id)
                && conn
                    .tx
                    .try_send(Outgoing::Frame(Arc::clone(&frame)))
                    .is_err()
            {
                self.counters.dns_dropped += 1;
            }
        }
    }

    fn on_closed(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let who = conn
            .peer
            .as_ref()
            .map(|p| p.hello.name.to_string())
            .or_else(|| conn.accepted_from.map(|a| a.to_string()))
            .or_else(|| conn.via.as_ref().map(ToString::to_string))
            .unwrap_or_default();
        let counter = match reason.kind {
            CloseKind::Oversized => Some((&mut self.counters.oversized_frames, "oversized")),
            CloseKind::Garbled => Some((&mut self.counters.garbled_messages, "garbled")),
            CloseKind::Refused | CloseKind::SelfConnection => {
                Some((&mut self.counters.handshakes_refused, "refused"))
            }
            CloseKind::RefusedByPeer => {
                Some((&mut self.counters.refused_by_peer, "refused by peer"))
            }
            CloseKind::HandshakeTimeout => {
                Some((&mut self.counters.handshake_timeouts, "handshake timeout"))
            }
            CloseKind::HeartbeatTimeout => {
                Some((&mut self.counters.heartbeat_timeouts, "heartbeat timeout"))
            }
            _ => None,
        };
        match counter {
            Some((n, kind)) => {
                *n += 1;
                self.note(kind, format!("connection with {who} closed: {reason}"));
            }
            None if conn.peer.is_some() => {
                tracing::info!(peer = %who, %reason, "connection closed")
            }
            None => tracing::debug!(peer = %who, %reason, "connection closed"),
        }
        if !conn.outbound
            && conn.peer.is_none()
            && matches!(
                reason.kind,
                CloseKind::Refused | CloseKind::RefusedByPeer | CloseKind::Garbled
            )
            && let Some(from) = conn.accepted_from
        {
            if self.refused_inbound.len() >= MAX_REFUSED_SHOWN {
                self.refused_inbound.pop_front();
            }
            self.refused_inbound.push_back((
                Instant::now(),
                ConnectionStatus::refused_inbound(from, &reason.detail),
            ));
        }
        let retry = reason.kind != CloseKind::SelfConnection;
        self.forget_conn(id, &conn, &reason.detail, retry);
    }

    /// Closes a connection now, telling the peer why when its queue has room.
    fn close(&mut self, id: ConnId, reason: &str) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if conn
            .tx
            .try_send(Outgoing::Close(reason.to_string()))
            .is_err()
        {
            conn.abort.abort();
        }
        self.forget_conn(id, &conn, reason, true);
    }

    /// Bookkeeping for a connection that is gone from `conns`.
    fn forget_conn(&mut self, id: ConnId, conn: &Conn, reason: &str, retry: bool) {
        self.needs_topology.remove(&id);
        let established = conn.peer.as_ref().map(|p| p.hello.name);
        match established {
            Some(name) if self.by_peer.get(&name) == Some(&id) => {
                self.by_peer.remove(&name);
                self.data_down.remove(&name);
                self.links_changed = true;
                self.counters.connections_terminated += 1;
            }
            _ => {
                if let Some(key) = &conn.via {
                    self.maker
                        .dial_failed(key, reason.to_string(), retry, Instant::now());
                }
            }
        }
    }

    /// Everything that follows from changed links or topology: our entry,
    /// the routes, garbage collection, the data plane, dialling, gossip.
    fn refresh(&mut self) {
        let now = Instant::now();
        if self.links_changed
            && self
                .topology
                .set_our_connections(self.our_connections(), now_ms())
        {
            self.changed_entries.insert(self.me());
            self.topology_changed = true;
        }
        self.routes_stale |= self.links_changed || self.topology_changed;
        if self.routes_stale
            && (self.links_changed || self.routes_due(now).is_some_and(|at| now >= at))
        {
            self.recompute(now);
        }
        if !self.needs_topology.is_empty() {
            let (digest, whole): (Vec<ConnId>, Vec<ConnId>) =
                std::mem::take(&mut self.needs_topology)
                    .into_iter()
                    .partition(|id| self.speaks(*id, DIGEST_VERSION));
            self.send_digest(&digest);
            self.send_topology(&whole);
        }
        if self.topology_changed {
            self.gossip_changes();
        }
        self.links_changed = false;
        self.topology_changed = false;
    }

    /// When stale routes are to be recomputed (`now` if never computed).
    fn routes_due(&self, now: Instant) -> Option<Instant> {
        self.routes_stale
            .then(|| self.routes_at.map_or(now, |at| at + ROUTE_INTERVAL))
    }

    /// Routes from the topology as it is, and what follows from them: our
    /// short id, garbage collection of unreachable entries, keys, the data
    /// plane's table, dialling.
    fn recompute(&mut self, now: Instant) {
        self.routes_stale = false;
        self.routes_at = Some(now);
        self.give_up_a_taken_short_id();
        let neighbours = self.neighbour_data_addrs();
        let mut routes = routes::compute(&self.topology, &neighbours);
        // Connected peers stay even when no route reaches them (their
        // data path is down and no one relays): we still talk to them.
        let mut keep = routes.reachable.clone();
        keep.extend(self.by_peer.keys().copied());
        let gone = self.topology.retain(&keep);
        if !gone.is_empty() {
            for peer in &gone {
                tracing::info!(%peer, "peer unreachable: forgotten");
            }
            routes = routes::compute(&self.topology, &neighbours);
        }
        if !routes.shadowed.is_empty() && routes.shadowed != self.routes.shadowed {
            let names: Vec<String> = routes.shadowed.iter().map(ToString::to_string).collect();
            self.note(
                "short id",
                format!(
                    "left out of routing, their short id is taken by a smaller name: {}",
                    names.join(", ")
                ),
            );
        }
        self.counters.short_id_collisions = routes.shadowed.len() as u64;
        self.routes = routes;
        self.add_keys();
        self.add_fastdp();
        self.add_frame_limits();
        self.publish();
        self.maker.sync(&self.links(), now);
        let candidates = self.discovery_candidates();
        self.maker.set_discovered(&candidates, now);
    }

    /// Two peers publishing one short id cannot both be routed: the larger
    /// name (when it is us) chooses another, which our entry carries to
    /// everyone. With 12-bit ids, a few dozen peers already make a
    /// collision likely.
    fn give_up_a_taken_short_id(&mut self) {
        let Some(holder) = self.topology.our_short_id_taken_by() else {
            return;
        };
        let was = self.topology.ours().short_id;
        let now = self
            .topology
            .choose_our_short_id(&mut rand::rng(), now_ms());
        tracing::info!(%holder, %was, %now, "our short id is taken by a smaller name: chose another");
        self.counters.short_ids_rechosen += 1;
        self.changed_entries.insert(self.me());
        self.topology_changed = true;
    }

    /// Password mode: each neighbour's data keys go with the table.
    fn add_keys(&mut self) {
        let table = &mut self.routes.table;
        table.encrypted = self.config.psk.is_some();
        table.keys.clear();
        if !table.encrypted {
            return;
        }
        for (name, id) in &self.by_peer {
            let Some(id_of) = self.topology.short_id(name) else {
                continue;
            };
            let keys = self
                .conns
                .get(id)
                .and_then(|c| c.peer.as_ref())
                .and_then(|p| p.keys.clone());
            if let Some(keys) = keys
                && table.neighbours.contains_key(&id_of)
                && !self.routes.shadowed.contains(name)
            {
                table.keys.insert(id_of, keys);
            }
        }
    }

    /// The neighbours fastdp carries frames to, and our address towards
    /// each; beside `neighbours` (shadowed peers are not in it).
    fn add_fastdp(&mut self) {
        let links: Vec<(ShortId, fastdp::Link)> = self
            .by_peer
            .iter()
            // Frames to a neighbour whose data path is down go round it.
            .filter(|(name, _)| !self.data_down.contains(name))
            .filter_map(|(name, id)| {
                let link = self.conns.get(id)?.fastdp_link(&self.config)?;
                Some((self.topology.short_id(name)?, link))
            })
            .collect();
        let table = &mut self.routes.table;
        table.fastdp = fastdp::table(&table.neighbours, links);
    }

    /// Neighbours whose path takes smaller datagrams than the data plane
    /// makes (`path_mtu`): the largest inner frame that reaches each.
    fn add_frame_limits(&mut self) {
        let overhead = self.datagram_overhead() - vxlan::ETHERNET_HEADER_LEN;
        let limits = self
            .by_peer
            .iter()
            .filter_map(|(name, id)| {
                let peer = self.conns.get(id)?.peer.as_ref()?;
                let mtu = peer.path_mtu.as_ref().filter(|m| m.limited())?;
                Some((
                    self.topology.short_id(name)?,
                    mtu.limit().saturating_sub(overhead),
                ))
            })
            .collect();
        self.routes.table.frame_limit = limits;
    }

    /// Whether the established connection `id` uses fastdp (our address on
    /// it), or why not: what its status line shows.
    fn fastdp_of(&self, id: ConnId, c: &Conn) -> Result<Ipv4Addr, FastdpOff> {
        let Some(link) = c.fastdp_link(&self.config) else {
            return Err(FastdpOff::NotHere);
        };
        // Only the kept connection of a routed peer: a shadowed peer shares
        // its short id with another, whose table entry is not its own.
        let data = c
            .peer
            .as_ref()
            .map(|p| p.hello.name)
            .filter(|n| self.by_peer.get(n) == Some(&id) && !self.routes.shadowed.contains(n))
            .and_then(|n| self.topology.short_id(&n))
            .and_then(|n| self.routes.table.neighbours.get(&n).copied());
        fastdp::choose(&link, data)
    }

    fn publish(&mut self) {
        if self.published.as_deref() == Some(&self.routes.table) {
            return;
        }
        let table = Arc::new(self.routes.table.clone());
        tracing::debug!(
            neighbours = table.neighbours.len(),
            reachable = table.next_hop.len(),
            "publishing forwarding table"
        );
        self.overlay.update(Arc::clone(&table));
        self.published = Some(table);
    }

    fn our_connections(&self) -> Vec<ConnectionSummary> {
        self.by_peer
            .iter()
            .filter_map(|(name, id)| {
                let c = self.conns.get(id)?;
                Some(ConnectionSummary {
                    peer: *name,
                    address: c.listen_addr()?,
                    outbound: c.outbound,
                    // Only while its data path is up: routes use edges
                    // both ends list as established.
                    established: !self.data_down.contains(name),
                })
            })
            .collect()
    }

    fn neighbour_data_addrs(&self) -> BTreeMap<PeerName, SocketAddr> {
        self.by_peer
            .iter()
            .filter_map(|(name, id)| Some((*name, self.conns.get(id)?.data_addr()?)))
            .collect()
    }

    fn links(&self) -> Vec<Link> {
        self.by_peer
            .values()
            .filter_map(|id| {
                let c = self.conns.get(id)?;
                Some(Link {
                    listen_addr: c.listen_addr()?,
                    via: c.via.clone(),
                })
            })
            .collect()
    }

    /// Addresses others see for the peers we are not connected to, each
    /// with the uid of the peer there when we hold its entry.
    fn discovery_candidates(&self) -> Seen {
        let me = self.me();
        self.topology
            .peers()
            .flat_map(|p| &p.connections)
            .filter(|c| c.established && c.peer != me && !self.by_peer.contains_key(&c.peer))
            .filter(|c| c.address.port() != 0 && !c.address.ip().is_unspecified())
            .map(|c| (c.address, self.topology.get(&c.peer).map(|p| p.uid)))
            .collect()
    }

    /// What changed goes out as it changes: our own entry to every
    /// neighbour (only we can say it), other peers' entries new to us as
    /// [`epidemic::relay`] says. A change costs messages in proportion to
    /// the peers, not to their square; the rare one lost is repaired by
    /// [`Router::gossip_repair`].
    fn gossip_changes(&mut self) {
        let me = self.me();
        let (ours, theirs): (Vec<PeerInfo>, Vec<PeerInfo>) =
            std::mem::take(&mut self.changed_entries)
                .iter()
                .filter_map(|name| self.topology.get(name).cloned())
                .partition(|entry| entry.name == me);
        if !ours.is_empty() {
            let everyone: Vec<ConnId> = self.by_peer.values().copied().collect();
            self.send_gossip(&everyone, &ours);
        }
        if !theirs.is_empty() {
            for (indices, to) in epidemic::relay(&theirs, &self.by_peer, &mut rand::rng()) {
                let entries: Vec<PeerInfo> = indices.iter().map(|&i| theirs[i].clone()).collect();
                self.send_gossip(&to, &entries);
            }
        }
    }

    /// Anti-entropy, once a gossip interval: the whole topology to one
    /// random neighbour. Every peer doing so, each peer hears the whole
    /// topology about once an interval whatever the size of the mesh.
    fn gossip_repair(&mut self) {
        if let Some(one) = self.one_random_neighbour(|_| true) {
            self.send_topology(&[one]);
        }
    }

    /// The connection to one neighbour chosen at random among those whose
    /// connection passes `able`: where periodic repair goes, so that its
    /// cost per peer does not grow with the number of neighbours.
    fn one_random_neighbour(&self, able: impl Fn(&Conn) -> bool) -> Option<ConnId> {
        let ids: Vec<ConnId> = self
            .by_peer
            .values()
            .copied()
            .filter(|id| self.conns.get(id).is_some_and(&able))
            .collect();
        ids.choose(&mut rand::rng()).copied()
    }

    /// Once a heartbeat interval: takes the heartbeats the data plane
    /// received, sends ours to every connected peer that sends them too,
    /// and sees whose data path went down or came back.
    fn heartbeat_round(&mut self, now: Instant) {
        let Some(port) = self.heartbeats.clone() else {
            return;
        };
        self.take_arrivals(&port, now);
        self.send_heartbeats(&port, now);
    }

    /// The heartbeats, probes and acknowledgements the data plane received.
    fn take_arrivals(&mut self, port: &HeartbeatPort, now: Instant) {
        for arrival in port.take() {
            let datagram = arrival.datagram();
            if !heartbeat::is_heartbeat(datagram) {
                self.probe_arrived(port, &arrival, now);
                continue;
            }
            let conn = heartbeat::claimed_sender(datagram)
                .and_then(|name| self.by_peer.get(&name))
                .and_then(|id| self.conns.get_mut(id));
            let Some(peer) = conn.and_then(|c| c.peer.as_mut()) else {
                self.heartbeats_rejected += 1;
                continue;
            };
            let Some(data) = peer.data.as_mut() else {
                self.heartbeats_rejected += 1;
                continue;
            };
            match data.heard(datagram, arrival.from, now) {
                Ok(moved) => {
                    if let Some(mtu) = &mut peer.path_mtu {
                        mtu.heard();
                    }
                    self.counters.heartbeats_received += 1;
                    if moved {
                        tracing::debug!(from = %arrival.from, "a peer's data address learnt from its heartbeats");
                    }
                    // A first heartbeat, or a new address: the table follows.
                    self.links_changed |= moved;
                }
                Err(why) => {
                    self.heartbeats_rejected += 1;
                    tracing::debug!(from = %arrival.from, ?why, "heartbeat rejected");
                }
            }
        }
    }

    /// Ours to every connected peer that sends them too, with the path MTU
    /// probes due; and whose data path went down or came back.
    fn send_heartbeats(&mut self, port: &HeartbeatPort, now: Instant) {
        let me = self.me();
        let dead_after = self.config.timing.dead_after;
        let mut down = BTreeSet::new();
        let mut sent = 0;
        let mut failed = 0;
        let mut mtu_changed = false;
        for (name, id) in &self.by_peer {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let to = conn.data_addr();
            let Some(data) = conn.peer.as_mut().and_then(|p| p.data.as_mut()) else {
                continue;
            };
            if !data.up(now, dead_after) {
                down.insert(*name);
            }
            let Some(to) = to else { continue };
            let datagram = data.next_heartbeat(me);
            match port.send(to, &datagram) {
                Ok(()) => sent += 1,
                Err(error) => {
                    failed += 1;
                    tracing::debug!(%to, %error, "sending a heartbeat");
                }
            }
            let Some(peer) = conn.peer.as_mut() else {
                continue;
            };
            let (Some(data), Some(mtu)) = (&peer.data, &mut peer.path_mtu) else {
                continue;
            };
            let limit = mtu.limit();
            if let Some((probe, size)) = mtu.next_probe(now) {
                let out = &mut self.probe_buf;
                out.resize(size.max(heartbeat::PROBE_HEADER), 0);
                data.probe(me, probe, out);
                if let Err(error) = port.send(to, out) {
                    tracing::debug!(%to, %error, size, "sending a path MTU probe");
                }
            }
            if mtu.limit() != limit {
                tracing::info!(
                    %name,
                    from = limit,
                    to = mtu.limit(),
                    "path MTU changed: the largest datagram that reaches the peer"
                );
                mtu_changed = true;
            }
        }
        self.links_changed |= mtu_changed;
        let lost = port.counters();
        let counters = &mut self.counters;
        counters.heartbeats_sent += sent;
        self.heartbeats_unsent += failed;
        counters.heartbeats_dropped = lost.dropped + self.heartbeats_unsent;
        counters.heartbeats_rejected = self.heartbeats_rejected + lost.malformed;
        if down != self.data_down {
            for peer in down.difference(&self.data_down) {
                tracing::warn!(%peer, "data path down: no heartbeat for {dead_after:?}; routing around it");
            }
            for peer in self.data_down.difference(&down) {
                tracing::info!(%peer, "data path up again");
            }
            self.data_down = down;
            self.links_changed = true;
        }
    }

    /// A path MTU probe from a peer (answered at once, to where it came
    /// from) or an acknowledgement of one of ours.
    fn probe_arrived(&mut self, port: &HeartbeatPort, arrival: &HeartbeatArrival, now: Instant) {
        let head = arrival.datagram();
        let me = self.me();
        let peer = heartbeat::claimed_prober(head)
            .and_then(|name| self.by_peer.get(&name))
            .and_then(|id| self.conns.get_mut(id))
            .and_then(|c| c.peer.as_mut())
            .filter(|p| p.path_mtu.is_some());
        let Some(Established {
            data: Some(data),
            path_mtu: Some(mtu),
            ..
        }) = peer
        else {
            self.heartbeats_rejected += 1;
            return;
        };
        let answered = if head.starts_with(&heartbeat::PROBE_MAGIC) {
            data.probe_arrived(head, arrival.len).map(|(id, size)| {
                let ack = data.ack(me, id, size);
                if let Err(error) = port.send(arrival.from, &ack) {
                    tracing::debug!(to = %arrival.from, %error, "acknowledging a path MTU probe");
                }
            })
        } else {
            data.ack_arrived(head)
                .map(|(id, size)| mtu.acked(id, usize::from(size), now))
        };
        if let Err(why) = answered {
            self.heartbeats_rejected += 1;
            tracing::debug!(from = %arrival.from, ?why, "path MTU probe rejected");
        }
    }

    /// What a datagram to a peer carries besides the inner IP packet: its
    /// Ethernet header, the VXLAN header, and the seal in password mode.
    const fn datagram_overhead(&self) -> usize {
        vxlan::HEADER_LEN
            + if self.config.psk.is_some() {
                seal::OVERHEAD
            } else {
                0
            }
            + vxlan::ETHERNET_HEADER_LEN
    }

    /// Opens an exchange of entries with new neighbours: our digest, which
    /// each answers with what we lack ([`Router::on_digest`] on its side).
    fn send_digest(&mut self, ids: &[ConnId]) {
        if ids.is_empty() {
            return;
        }
        match encode(&Message::Digest(self.topology.digest()), MAX_FRAME) {
            Ok(frame) => self.send_frames(ids, &[frame.into()]),
            // Larger than a frame (thousands of peers): the whole topology.
            Err(_) => self.send_topology(ids),
        }
    }

    /// Whether connection `id` negotiated protocol `version` or later.
    fn speaks(&self, id: ConnId, version: u32) -> bool {
        self.conns.get(&id).is_some_and(|c| c.speaks(version))
    }

    fn send_topology(&mut self, ids: &[ConnId]) {
        if ids.is_empty() {
            return;
        }
        let entries: Vec<PeerInfo> = self.topology.peers().cloned().collect();
        self.send_gossip(ids, &entries);
    }

    /// `entries` to the connections `ids`: compact to those that
    /// negotiated it, JSON to older peers, each encoding made only when
    /// someone needs it.
    fn send_gossip(&mut self, ids: &[ConnId], entries: &[PeerInfo]) {
        let (compact, json): (Vec<ConnId>, Vec<ConnId>) = ids
            .iter()
            .partition(|id| self.speaks(**id, COMPACT_GOSSIP_VERSION));
        if !compact.is_empty() {
            let frames = compact_gossip_frames(entries);
            self.send_frames(&compact, &frames);
        }
        if !json.is_empty() {
            let frames = json_gossip_frames(entries);
            self.send_frames(&json, &frames);
        }
    }

    fn send_frames(&mut self, ids: &[ConnId], frames: &[Arc<[u8]>]) {
        let mut slow = Vec::new();
        for id in ids {
            let Some(conn) = self.conns.get(id) else {
                continue;
            };
            for frame in frames {
                match conn.tx.try_send(Outgoing::Frame(Arc::clone(frame))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slow.push(*id);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
        for id in slow {
            self.counters.slow_peers_dropped += 1;
            self.note(
                "slow",
                format!("dropping connection {id}: its send queue is full"),
            );
            self.close(id, "send queue full: the peer does not keep up");
        }
    }

    /// Logs trouble: the first of each kind at warn, the rest at debug
    /// (they are counted in status).
    fn note(&mut self, kind: &'static str, text: String) {
        if self.logged.insert(kind) {
            tracing::warn!(
                "{text} (further ones are counted in `weave status`, logged at debug level)"
            );
        } else {
            tracing::debug!("{text}");
        }
    }

    fn status(&self) -> MeshStatus {
        let now = Instant::now();
        let live = self
            .conns
            .iter()
            .map(|(id, c)| LiveConnection {
                outbound: c.outbound,
                address: c.remote.or(c.accepted_from),
                established: c.peer.as_ref().map(|p| (&p.hello, p.version)),
                fastdp: self.fastdp_of(*id, c),
                data_path: self.data_path_status(c, now),
                established_unix_ms: c.peer.as_ref().map(|p| p.since_unix_ms),
                cipher: c
                    .peer
                    .as_ref()
                    .and_then(|p| p.keys.as_ref())
                    .map(|k| k.0.cipher()),
            })
            .collect();
        let dataplane = if self.config.dataplane_name.is_empty() {
            self.overlay.userspace()
        } else {
            &self.config.dataplane_name
        };
        status::snapshot(
            Sources {
                me: self.me(),
                nickname: &self.config.nickname,
                uid: self.uid,
                listen: SocketAddr::new(self.config.listen.ip(), self.listen_port),
                data_port: self.config.data_port,
                dataplane,
                mtu: self.config.mtu,
                topology: &self.topology,
                live,
                refused: &self.refused_inbound,
                maker: &self.maker,
                next_hop: &self.routes.next_hop,
                counters: &self.counters,
            },
            now,
        )
    }

    /// An established connection's data path, for status.
    fn data_path_status(&self, c: &Conn, now: Instant) -> Option<DataPathStatus> {
        let peer = c.peer.as_ref()?;
        let seen = peer.data.as_ref()?.seen(now, self.config.timing.dead_after);
        let name = peer.hello.name;
        let down = self.data_down.contains(&name);
        let relay = self
            .routes
            .next_hop
            .get(&name)
            .filter(|hop| down && **hop != name)
            .map(|hop| {
                self.topology
                    .get(hop)
                    .map_or_else(|| hop.to_string(), |p| p.nickname.clone())
            });
        Some(DataPathStatus {
            state: if down {
                DataPathState::Down
            } else {
                DataPathState::Up
            },
            seconds_since_heartbeat: seen.silent_for.as_secs(),
            relay,
            address: seen.learnt,
            mtu: peer
                .path_mtu
                .as_ref()
                .filter(|m| m.limited())
                .map(|m| m.limit().saturating_sub(self.datagram_overhead()) as u32),
        })
    }

    async fn shutdown(mut self, events: &mut mpsc::Receiver<Event>) {
        tracing::info!(peer = %self.me(), "mesh stopping");
        for conn in self.conns.values() {
            if conn
                .tx
                .try_send(Outgoing::Close("peer shutting down".into()))
                .is_err()
            {
                conn.abort.abort();
            }
        }
        self.conns.clear();
        // Connection tasks blocked on a full event queue get an error now.
        events.close();
        let grace = async { while self.tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_millis(500), grace).await;
        self.tasks.shutdown().await;
        self.overlay.update(Arc::new(ForwardingTable {
            me: self.topology.ours().short_id,
            ..ForwardingTable::default()
        }));
    }
}

fn uid_of(c: &Conn) -> Option<u64> {
    c.peer.as_ref().map(|p| p.hello.uid)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Which neighbours a piece of gossip goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every neighbour: a change.
    Everyone,
    /// One neighbour, at random: periodic repair, whose cost per peer does
    /// not grow with the number of neighbours.
    OneRandom,
}

/// `entries` cut into runs of at most about `GOSSIP_CHUNK` bytes (one
/// entry alone may be more), given each entry's size.
fn chunks<T>(entries: impl IntoIterator<Item = (T, usize)>) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = vec![Vec::new()];
    let mut size = 0;
    for (entry, n) in entries {
        if size + n > GOSSIP_CHUNK && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += n + 1;
        if let Some(last) = chunks.last_mut() {
            last.push(entry);
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// `entries` as compact gossip frames, each entry encoded once.
fn compact_gossip_frames(entries: &[PeerInfo]) -> Vec<Arc<[u8]>> {
    let encoded = entries.iter().filter_map(|e| match compact_entry(e) {
        Ok(bytes) => {
            let n = bytes.len();
            Some((bytes, n))
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding gossip");
            None
        }
    });
    chunks(encoded)
        .into_iter()
        .filter_map(|chunk| {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            match encode_compact_gossip(&refs, MAX_FRAME) {
                Ok(f) => Some(f.into()),
                Err(e) => {
                    tracing::error!(error = %e, "encoding gossip");
                    None
                }
            }
        })
        .collect()
}

/// `entries` as JSON gossip frames, for peers older than compact gossip.
fn json_gossip_frames(entries: &[PeerInfo]) -> Vec<Arc<[u8]>> {
    let sized = entries.iter().map(|p| {
        let n = serde_json::to_vec(p).map_or(GOSSIP_CHUNK, |v| v.len());
        (p.clone(), n)
    });
    chunks(sized)
        .into_iter()
        .filter_map(
            |peers| match encode(&Message::Gossip(TopologyUpdate { peers }), MAX_FRAME) {
                Ok(f) => Some(f.into()),
                Err(e) => {
                    tracing::error!(error = %e, "encoding gossip");
                    None
                }
            },
        )
        .collect()
}

/// Until the data plane receives a path MTU probe or acknowledgement (never,
/// without heartbeats).
async fn probe_or_ack_arrived(port: Option<&HeartbeatPort>) {
    match port {
        Some(port) => port.probe_or_ack_arrived().await,
        None => std::future::pending().await,
    }
}
