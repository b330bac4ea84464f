//! IP allocation across peers, the agent's side: the ring and the space of
//! this peer (pure, in `crate::ipam`) wired to the mesh, the disk and the
//! requests of `run`/`attach`.
//!
//! How the ring starts (Weave's `--ipalloc-init`): by default a peer that
//! needs an address while no ring exists proposes, and a majority of the
//! expected peers must agree (`crate::ipam::Consensus`, Paxos) before the
//! ring is built, shared among the peers that agreed; a minority waits, so
//! groups started apart never start two rings. A peer launched with no
//! peers and reaching none is its own majority: it owns the whole range on
//! its first allocation. With `seed=` the named peers share the range from
//! launch; an `observer` never proposes. Any initialised ring that arrives
//! is adopted. A request waits for this (and for a donation when this peer
//! has no free space) up to [`WAIT_FOR_SPACE`].
//!
//! An explicit address in space another peer owns is claimed from it, as
//! Weave did: the owner hands over exactly that address when none of its
//! containers holds it, or refuses naming the holder; the request waits for
//! the answer (up to [`WAIT_FOR_SPACE`], the owner's reachability shown in
//! `weave status ipam`). A peer whose containers hold addresses that its
//! ring does not give it (it lost its saved ring, or the range changed)
//! claims them back the same way, and hands out no other address of the
//! range until it has them, so that no address is ever in use twice.
//!
//! Addresses outside the allocation range are the user's: explicit ones are
//! only checked against this host's, `net:` subnets outside the range are
//! refused (nobody coordinates them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use ipnet::Ipv4Net;
use tokio::time::Instant;

use super::Agent;
use crate::api::Reply;
use crate::config::IpallocInit;
use crate::ipam::{
    AddrRange, AddrRequest, Allocator, Consensus, ConsensusMessage, IpamMessage, IpamPacket,
    MAX_REASON, Proposal, Ring, RingError, Space, SpaceError, random_ring_id,
};
use crate::mesh::Spread;
use crate::peer_name::PeerName;
use crate::state::EndpointRecord;
use crate::status::{ClaimStatus, IpamPeerStatus, IpamStatus, OutsideRange};

/// How long `run`/`attach` wait for consensus or for a donation.
pub(super) const WAIT_FOR_SPACE: Duration = Duration::from_secs(30);
/// How often a waiting request asks again.
const ASK_EVERY: Duration = Duration::from_secs(2);
/// How often the ring is gossiped to the neighbours even when unchanged.
pub(super) const RING_GOSSIP_EVERY: Duration = Duration::from_secs(3);
/// IPAM messages queued from the mesh to the agent; more are dropped (and
/// counted by the mesh).
pub(super) const INBOX: usize = 256;

/// This peer's part of IP allocation.
pub(super) struct PeerIpam {
    me: PeerName,
    pub(super) ring: Ring,
    /// Addresses handed out inside the range.
    pub(super) space: Space,
    pub(super) default_subnet: Ipv4Net,
    /// Explicit addresses outside the range, checked on this host only.
    outside: Allocator,
    /// The agreement on who starts the ring.
    consensus: Consensus,
    /// Peers whose ring we refused (initialised separately), and why.
    conflicts: BTreeMap<PeerName, String>,
    /// A request is waiting for space.
    pub(super) waiting: bool,
    /// When space was last asked for.
    last_ask: Option<Instant>,
    /// Which donor to ask next.
    ask_round: usize,
    /// The ring changed since it was last gossiped and saved.
    pub(super) dirty: bool,
    /// Addresses our containers hold that the ring does not give us (yet):
    /// claimed from their owners before any other address is handed out.
    /// The value names the holder.
    to_reclaim: BTreeMap<Ipv4Addr, (Ipv4Net, String)>,
    /// The explicit address a waiting request claims from its owner.
    claiming: Option<Ipv4Addr>,
    /// The owner's refusal of that claim, with the address: it ends the
    /// request. Cleared with `claiming` when the request ends.
    claim_refused: Option<(Ipv4Addr, String)>,
    /// When claims were last sent.
    last_claim: Option<Instant>,
    /// Addresses our containers hold that their owners refused to hand
    /// back (held twice: a conflict for the user to resolve), with the
    /// holder and the owner's reason.
    lost_claims: BTreeMap<Ipv4Addr, (String, String)>,
    /// False when launched with `--ipalloc-range ""`: only explicit
    /// addresses, all checked as this host's (`outside`), and no ring.
    pub(super) enabled: bool,
    /// The range of the saved ring, when this launch gave another one and
    /// the saved ring was discarded (as Weave does): containers may still
    /// hold its addresses (`weave status ipam` names them).
    pub(super) previous_range: Option<Ipv4Net>,
}

/// Why a request cannot be served now.
enum Shortfall {
    /// No free address of ours in this subnet (or no ring yet): ask, wait.
    Space(Ipv4Net),
    /// An explicit address that another peer owns: claim it, wait.
    Claim(Ipv4Addr),
    /// Our containers hold addresses the ring does not give us yet:
    /// re-claim them first, wait.
    Reclaim,
    Fail(anyhow::Error),
}

impl PeerIpam {
    pub(super) fn new(
        me: PeerName,
        ring: Ring,
        default_subnet: Ipv4Net,
        init: &IpallocInit,
        named_peers: usize,
    ) -> Self {
        let mut ring = ring;
        if let IpallocInit::Seed(seeds) = init
            && !ring.is_initialised()
        {
            let id = Ring::seed_id(ring.range(), seeds);
            match Ring::init_among(ring.range(), seeds, id) {
                Ok(seeded) => {
                    tracing::info!(range = %ring.range(), seeds = seeds.len(), "initialised IP allocation from the seed peers");
                    ring = seeded;
                }
                Err(e) => tracing::warn!(error = %e, "cannot seed IP allocation"),
            }
        }
        let expected = init.expected_peers(named_peers).unwrap_or(1);
        let observer = matches!(init, IpallocInit::Observer);
        Self {
            me,
            outside: Allocator::new(ring.range(), default_subnet),
            ring,
            space: Space::new(),
            default_subnet,
            consensus: Consensus::new(me, expected, observer),
            conflicts: BTreeMap::new(),
            waiting: false,
            last_ask: None,
            ask_round: 0,
            dirty: false,
            to_reclaim: BTreeMap::new(),
            claiming: None,
            claim_refused: None,
            last_claim: None,
            lost_claims: BTreeMap::new(),
            enabled: true,
            previous_range: None,
        }
    }

    /// Whether our containers hold addresses still to re-claim.
    pub(super) fn reclaiming(&self) -> bool {
        !self.to_reclaim.is_empty()
    }

    /// The owner of `addr` refused our claim: a waiting request fails with
    /// the reason; a re-claim becomes a conflict shown in the status. Only
    /// the owner (per our ring) may refuse.
    fn on_refusal(&mut self, src: PeerName, addr: Ipv4Addr, reason: String) {
        if self.ring.owner_of(addr) != Some(src) {
            tracing::debug!(%src, %addr, "ignoring a claim refusal from a peer that does not own the address");
            return;
        }
        if self.claiming == Some(addr) {
            self.claim_refused = Some((addr, reason));
        } else if let Some((_, holder)) = self.to_reclaim.remove(&addr) {
            tracing::error!(%addr, %holder, owner = %src, %reason, "the owner refused to hand back an address our container holds: it is in use twice");
            self.lost_claims.insert(addr, (holder, reason));
        }
    }

    /// An address in use by a container (`holder`) restored after a
    /// restart. One the ring does not give us is re-claimed.
    pub(super) fn mark(&mut self, net: Ipv4Net, holder: &str) {
        if !self.enabled || !self.ring.range().contains(&net.addr()) {
            self.outside.mark(net.addr());
            return;
        }
        match self.space.claim(&self.ring, self.me, net) {
            Ok(()) => {}
            Err(SpaceError::NotInitialised | SpaceError::OwnedBy { .. }) => {
                tracing::info!(addr = %net, holder, "an address our container holds is not ours in the ring: re-claiming it");
                self.to_reclaim.insert(net.addr(), (net, holder.to_owned()));
            }
            Err(e) => {
                tracing::warn!(addr = %net, error = %e, "restored address does not fit the ring");
            }
        }
    }

    /// Takes into our space the re-claimed addresses the ring now gives us.
    fn take_reclaimed(&mut self) {
        let before = self.to_reclaim.len();
        let (ring, me, space) = (&self.ring, self.me, &mut self.space);
        self.to_reclaim
            .retain(|_, (net, _)| match space.claim(ring, me, *net) {
                Ok(()) => false,
                Err(SpaceError::NotInitialised | SpaceError::OwnedBy { .. }) => true,
                Err(e) => {
                    tracing::warn!(addr = %net, error = %e, "a re-claimed address does not fit the ring");
                    false
                }
            });
        if self.to_reclaim.len() < before {
            self.note_free();
        }
    }

    pub(super) fn release(&mut self, net: Ipv4Net) {
        if self.to_reclaim.remove(&net.addr()).is_some()
            || self.lost_claims.remove(&net.addr()).is_some()
        {
            return;
        }
        if !self.space.release(net.addr()) {
            self.outside.release(net.addr());
        }
        self.note_free();
    }

    pub(super) fn in_use(&self) -> usize {
        self.space.len() + self.outside.in_use() + self.to_reclaim.len()
    }

    /// Records our free counts in the ring (a change to gossip).
    pub(super) fn note_free(&mut self) {
        if self.ring.report_free(self.me, &self.space) {
            self.dirty = true;
        }
    }

    /// Serves all of `requests` or none.
    fn allocate_all(&mut self, requests: &[AddrRequest]) -> Result<Vec<Ipv4Net>, Shortfall> {
        let mut granted = Vec::with_capacity(requests.len());
        for request in requests {
            match self.allocate(*request) {
                Ok(net) => granted.push(net),
                Err(e) => {
                    for net in &granted {
                        self.release(*net);
                    }
                    return Err(e);
                }
            }
        }
        self.note_free();
        Ok(granted)
    }

    fn allocate(&mut self, request: AddrRequest) -> Result<Ipv4Net, Shortfall> {
        let range = self.ring.range();
        if !self.enabled {
            // Weave's words for it.
            return match request {
                AddrRequest::Explicit(_) => self
                    .outside
                    .allocate(request)
                    .map_err(|e| Shortfall::Fail(e.into())),
                _ => Err(Shortfall::Fail(anyhow!(
                    "IP address allocation must be enabled to use 'net:' (or no address): \
                     the agent was launched with --ipalloc-range \"\"; give an explicit address"
                ))),
            };
        }
        let subnet = match request {
            AddrRequest::Default => self.default_subnet,
            AddrRequest::Subnet(s) => s.trunc(),
            AddrRequest::Explicit(net) if !range.contains(&net.addr()) => {
                return self
                    .outside
                    .allocate(request)
                    .map_err(|e| Shortfall::Fail(e.into()));
            }
            AddrRequest::Explicit(net) => {
                if let Some((_, holder)) = self.to_reclaim.get(&net.addr()) {
                    return Err(Shortfall::Fail(anyhow!(
                        "address {} is already in use on this peer, by {holder}",
                        net.addr()
                    )));
                }
                return match self.space.claim(&self.ring, self.me, net) {
                    Ok(()) => Ok(net),
                    Err(SpaceError::NotInitialised) => Err(Shortfall::Space(net.trunc())),
                    Err(SpaceError::OwnedBy { addr, .. }) => {
                        match self.claim_refused.take_if(|(refused, _)| *refused == addr) {
                            Some((_, why)) => Err(Shortfall::Fail(anyhow!(
                                "cannot claim {addr} from the peer that owns it: {why}"
                            ))),
                            None => Err(Shortfall::Claim(addr)),
                        }
                    }
                    Err(e) => Err(Shortfall::Fail(e.into())),
                };
            }
        };
        if !self.to_reclaim.is_empty() && self.ring.is_initialised() {
            return Err(Shortfall::Reclaim);
        }
        if !range.contains(&subnet) {
            return Err(Shortfall::Fail(anyhow!(
                "net:{subnet} is outside the allocation range {range}: give an explicit \
                 address, or launch with a --ipalloc-range that includes it"
            )));
        }
        match self.space.allocate(&self.ring, self.me, subnet) {
            Ok(net) => Ok(net),
            Err(SpaceError::NoSpace(s)) => Err(Shortfall::Space(s)),
            Err(SpaceError::NotInitialised) => Err(Shortfall::Space(subnet)),
            Err(e) => Err(Shortfall::Fail(e.into())),
        }
    }

    /// Merges a ring from `src`; whether it changed ours.
    fn merge(&mut self, src: PeerName, ring: &Ring) -> bool {
        if !ring.is_initialised() {
            return false;
        }
        match self.ring.merge(ring, self.me, &self.space) {
            Ok(merge) => {
                self.conflicts.remove(&src);
                for refused in &merge.refused {
                    tracing::warn!(from = %src, "refused a ring entry: {refused}");
                }
                if merge.changed {
                    self.dirty = true;
                    self.take_reclaimed();
                }
                merge.changed
            }
            Err(e @ RingError::Conflict { .. }) => {
                let text = format!("refusing the ring of peer {src}: {e}");
                if self.conflicts.get(&src) != Some(&text) {
                    tracing::error!("{text}");
                }
                self.conflicts.insert(src, text);
                false
            }
            Err(e) => {
                tracing::warn!(from = %src, error = %e, "ignoring an invalid ring");
                false
            }
        }
    }

    /// Whether `peer` owns addresses in `subnet` that it reported free: it
    /// asked again before our last donation reached it, and gets the ring
    /// again rather than a second share.
    fn has_free_space(&self, peer: PeerName, subnet: Ipv4Net) -> bool {
        let Some(sub) = AddrRange::of_net(subnet.trunc()) else {
            return false;
        };
        self.ring
            .entry_ranges()
            .any(|(r, e)| e.peer == peer && e.free > 0 && r.intersect(&sub).is_some())
    }

    /// Builds the ring the peers agreed on (unless one arrived meanwhile).
    fn adopt(&mut self, chosen: &Proposal) {
        if self.ring.is_initialised() {
            return;
        }
        match Ring::init_among(self.ring.range(), &chosen.peers, chosen.ring_id) {
            Ok(ring) => {
                tracing::info!(range = %ring.range(), peers = chosen.peers.len(), "initialised IP allocation: the peers agreed");
                self.ring = ring;
                self.take_reclaimed();
                self.note_free();
                self.dirty = true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot build the agreed ring"),
        }
    }

    /// What the consensus waits for, for the status line.
    fn consensus_wait(&self, reachable: &BTreeSet<PeerName>) -> String {
        let quorum = self.consensus.quorum(reachable.len());
        let expected = self.consensus.electorate(reachable.len());
        if reachable.len() + 1 < quorum {
            format!(
                "waiting for consensus: {quorum} of {expected} peers must agree, {} reachable",
                reachable.len() + 1
            )
        } else {
            format!("waiting for consensus: {quorum} of {expected} peers must agree")
        }
    }

    /// The status line of `weave status`.
    fn status_line(&self, reachable: &BTreeSet<PeerName>) -> String {
        // Refusals matter while the refused peer is around.
        if let Some(conflict) = self
            .conflicts
            .iter()
            .find(|(peer, _)| reachable.contains(peer))
            .map(|(_, text)| text)
        {
            return conflict.clone();
        }
        if !self.ring.is_initialised() {
            return if self.waiting || self.consensus.expected() > 1 || !reachable.is_empty() {
                self.consensus_wait(reachable)
            } else {
                "idle (the range is claimed on the first allocation)".into()
            };
        }
        let shares = self.ring.shares();
        let ours_free = self
            .space
            .free_per_range(&self.ring, self.me)
            .iter()
            .map(|(_, f)| u64::from(*f))
            .sum::<u64>();
        let others_reachable = shares
            .iter()
            .any(|s| s.peer != self.me && reachable.contains(&s.peer));
        if ours_free == 0 && !others_reachable && shares.iter().any(|s| s.peer != self.me) {
            return "all space owned by unreachable peers - use rmpeer if they are dead".into();
        }
        "ready".into()
    }
}

impl Agent {
    /// The other peers the mesh can reach now, by name and nickname.
    async fn reachable_peers(&self) -> Vec<(PeerName, String)> {
        let mut peers = self.mesh.peers().await;
        peers.retain(|(name, _)| *name != self.peer_name);
        peers
    }

    /// The names of [`Self::reachable_peers`], for the ring's decisions.
    async fn reachable_names(&self) -> BTreeSet<PeerName> {
        self.reachable_peers()
            .await
            .into_iter()
            .map(|p| p.0)
            .collect()
    }

    /// Addresses for `requests`, all or none, waiting (serving IPAM messages
    /// meanwhile) while consensus forms or a peer donates space.
    pub(super) async fn allocate_addresses(
        &mut self,
        requests: &[AddrRequest],
    ) -> anyhow::Result<Vec<Ipv4Net>> {
        let deadline = Instant::now() + WAIT_FOR_SPACE;
        // A new request asks at once; only its own retries wait ASK_EVERY.
        // (Held over from the last request, the pause made a container in
        // a second subnet wait up to 2 s for a donation that takes
        // milliseconds.)
        self.ipam.last_ask = None;
        let result = loop {
            let shortfall = match self.ipam.allocate_all(requests) {
                Ok(granted) => break Ok(granted),
                Err(Shortfall::Fail(e)) => break Err(e),
                Err(shortfall) => shortfall,
            };
            let out_of_time = Instant::now() >= deadline;
            match shortfall {
                Shortfall::Space(subnet) => {
                    let nobody_has_any = self.ipam.ring.is_initialised()
                        && self.ipam.ring.donors(self.peer_name, subnet).is_empty();
                    if nobody_has_any || out_of_time {
                        break Err(self.no_space_error(subnet).await);
                    }
                    self.ipam.waiting = true;
                    let had_ring = self.ipam.ring.is_initialised();
                    self.ask_for_space(subnet).await;
                    if !had_ring && self.ipam.ring.is_initialised() {
                        // Agreed at once (a lone peer): allocate now.
                        continue;
                    }
                }
                Shortfall::Claim(addr) => {
                    if out_of_time {
                        break Err(self.claim_error(addr).await);
                    }
                    self.ipam.waiting = true;
                    self.ipam.claiming = Some(addr);
                    self.send_claims().await;
                }
                Shortfall::Reclaim | Shortfall::Fail(_) => {
                    if out_of_time {
                        break Err(self.reclaim_error().await);
                    }
                    self.ipam.waiting = true;
                    self.send_claims().await;
                }
            }
            self.serve_ipam_until((Instant::now() + ASK_EVERY).min(deadline))
                .await;
        };
        self.ipam.waiting = false;
        self.ipam.claiming = None;
        self.ipam.claim_refused = None;
        self.ipam_changed().await;
        result
    }

    /// Waits for the next IPAM message (handled) or `wake`. The status
    /// endpoint is answered meanwhile, so that a wait shows in its metrics
    /// instead of making it unavailable.
    async fn serve_ipam_until(&mut self, wake: Instant) {
        tokio::select! {
            packet = tokio::time::timeout_at(wake, self.ipam_inbox.recv()) => {
                if let Ok(Some(packet)) = packet {
                    self.on_ipam(packet).await;
                }
            }
            Some(ask) = self.status_asks.recv() => self.answer_status(ask).await,
        }
    }

    /// `weave prime`: waits (up to [`WAIT_FOR_SPACE`]) until the ring is
    /// initialised, proposing it as a request for an address would.
    pub(super) async fn prime(&mut self) -> anyhow::Result<Reply> {
        if !self.ipam.enabled {
            bail!("IP allocation is off (--ipalloc-range \"\"): nothing to prime");
        }
        let deadline = Instant::now() + WAIT_FOR_SPACE;
        let subnet = self.ipam.default_subnet;
        while !self.ipam.ring.is_initialised() && Instant::now() < deadline {
            self.ipam.waiting = true;
            self.ask_for_space(subnet).await;
            if self.ipam.ring.is_initialised() {
                break;
            }
            self.serve_ipam_until((Instant::now() + ASK_EVERY).min(deadline))
                .await;
        }
        self.ipam.waiting = false;
        self.ipam_changed().await;
        if self.ipam.ring.is_initialised() {
            return Ok(Reply::Done);
        }
        let line = self.ipam.status_line(&self.reachable_names().await);
        bail!("IP allocation is not ready after {WAIT_FOR_SPACE:?}: {line}")
    }

    /// Why a claim of `addr` for a request did not come through in time.
    async fn claim_error(&self, addr: Ipv4Addr) -> anyhow::Error {
        let Some(owner) = self.ipam.ring.owner_of(addr) else {
            return anyhow!("cannot claim {addr}: IP allocation is not initialised");
        };
        let who = self.peer_description(owner);
        if self.reachable_names().await.contains(&owner) {
            anyhow!(
                "the peer that owns {addr}, {who}, did not hand it over within {WAIT_FOR_SPACE:?}"
            )
        } else {
            anyhow!(
                "cannot claim {addr}: the peer that owns it, {who}, has been unreachable for \
                 {WAIT_FOR_SPACE:?}; use 'weave rmpeer' if it is dead"
            )
        }
    }

    /// Why a request found this peer still re-claiming its containers'
    /// addresses when its time ran out.
    async fn reclaim_error(&self) -> anyhow::Error {
        let reachable = self.reachable_names().await;
        let pending: Vec<String> = self
            .ipam
            .to_reclaim
            .iter()
            .map(|(addr, (_, holder))| {
                let owner = self.ipam.ring.owner_of(*addr).map_or_else(
                    || "an owner not known yet".to_owned(),
                    |o| {
                        let state = if reachable.contains(&o) {
                            ""
                        } else {
                            ", unreachable"
                        };
                        format!("{}{state}", self.peer_description(o))
                    },
                );
                format!("{addr} of {holder} from {owner}")
            })
            .collect();
        anyhow!(
            "this peer's containers hold addresses it must claim back from their owners before \
             it hands out new ones, and {WAIT_FOR_SPACE:?} were not enough: {}",
            pending.join("; ")
        )
    }

    /// A peer as `weave status ipam` names it: name(nickname).
    fn peer_description(&self, peer: PeerName) -> String {
        format!(
            "{peer}({})",
            self.nicknames.get(&peer).map_or("", String::as_str)
        )
    }

    /// Sends the claims in progress (a waiting request's, and the
    /// re-claims) to the reachable owners, at most every [`ASK_EVERY`].
    pub(super) async fn send_claims(&mut self) {
        if self
            .ipam
            .last_claim
            .is_some_and(|at| at.elapsed() < ASK_EVERY)
            || !self.ipam.ring.is_initialised()
        {
            return;
        }
        self.ipam.last_claim = Some(Instant::now());
        let reachable = self.reachable_names().await;
        let addrs: Vec<Ipv4Addr> = self
            .ipam
            .claiming
            .iter()
            .chain(self.ipam.to_reclaim.keys())
            .copied()
            .collect();
        for addr in addrs {
            let Some(owner) = self.ipam.ring.owner_of(addr) else {
                continue;
            };
            if owner != self.peer_name && reachable.contains(&owner) {
                tracing::info!(%addr, %owner, "claiming an address from the peer that owns it");
                self.send_ipam(IpamPacket::to(
                    self.peer_name,
                    owner,
                    IpamMessage::Claim { addr },
                ))
                .await;
            }
        }
    }

    /// A peer claims `addr`, which the ring (as it knows it) says we own:
    /// hand it over unless one of our containers holds it. Either way the
    /// claimer learns why: our ring (with the address now its own, or
    /// saying who owns it) or a refusal.
    async fn on_claim(&mut self, src: PeerName, addr: Ipv4Addr) {
        if !self.ipam.ring.is_initialised() || self.ipam.conflicts.contains_key(&src) {
            return;
        }
        let me = self.peer_name;
        let holder = self
            .ipam
            .to_reclaim
            .get(&addr)
            .map(|(_, holder)| holder.clone());
        let refusal = if let Some(holder) = holder {
            Some(format!(
                "it is in use by {holder} on peer {}",
                self.nickname
            ))
        } else {
            match self.ipam.ring.hand_over(me, src, addr, &self.ipam.space) {
                Ok(true) => {
                    tracing::info!(to = %src, %addr, "handed over a claimed address");
                    self.ipam.dirty = true;
                    None
                }
                Ok(false) => Some("the allocation ring is full and cannot be split".to_owned()),
                Err(SpaceError::InUse(_)) => Some(format!(
                    "it is in use by {} on peer {}",
                    self.holder_of(addr),
                    self.nickname
                )),
                // Not ours (any more): our ring tells the claimer who owns it.
                Err(_) => None,
            }
        };
        let body = match refusal {
            Some(mut reason) => {
                reason.truncate(MAX_REASON);
                IpamMessage::ClaimRefused { addr, reason }
            }
            None => IpamMessage::Ring {
                ring: self.ipam.ring.clone(),
            },
        };
        self.send_ipam(IpamPacket::to(me, src, body)).await;
    }

    /// The container of ours that holds `addr`, for people.
    fn holder_of(&self, addr: Ipv4Addr) -> String {
        if self.exposed.iter().any(|c| c.addr() == addr) {
            return "the host (weave expose)".to_owned();
        }
        self.endpoints
            .iter()
            .find(|e| e.cidrs.iter().any(|c| c.addr() == addr))
            .map_or_else(|| "a container".to_owned(), EndpointRecord::describe)
    }

    async fn no_space_error(&self, subnet: Ipv4Net) -> anyhow::Error {
        let reachable = self.reachable_names().await;
        let line = self.ipam.status_line(&reachable);
        if !self.ipam.ring.is_initialised() {
            return anyhow!(
                "no address in {subnet} within {WAIT_FOR_SPACE:?}: IP allocation is {line}"
            );
        }
        let donors = self.ipam.ring.donors(self.peer_name, subnet);
        if donors.is_empty() {
            anyhow!("no free address left in {subnet} on any peer")
        } else if donors.iter().all(|d| !reachable.contains(d)) {
            anyhow!(
                "no free address in {subnet} on this peer, and the peers that have some are \
                 unreachable ({}): use 'weave rmpeer' if they are dead",
                donors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            anyhow!("no peer gave space in {subnet} within {WAIT_FOR_SPACE:?} ({line})")
        }
    }

    /// Claims the ring, or asks peers for space, at most every [`ASK_EVERY`].
    async fn ask_for_space(&mut self, subnet: Ipv4Net) {
        if self
            .ipam
            .last_ask
            .is_some_and(|at| at.elapsed() < ASK_EVERY)
        {
            return;
        }
        self.ipam.last_ask = Some(Instant::now());
        let reachable = self.reachable_names().await;
        let me = self.peer_name;
        if !self.ipam.ring.is_initialised() {
            // Propose (again: a round that stalled is retried with a higher
            // ballot), and ask everyone for space: a peer that has a ring
            // donates at once.
            let (steps, chosen) = self.ipam.consensus.propose(&reachable, random_ring_id());
            self.send_steps(steps).await;
            if let Some(chosen) = chosen {
                self.ipam.adopt(&chosen);
                return;
            }
            for peer in &reachable {
                self.send_ipam(IpamPacket::to(
                    me,
                    *peer,
                    IpamMessage::SpaceRequest { subnet },
                ))
                .await;
            }
            return;
        }
        let donors: Vec<PeerName> = self
            .ipam
            .ring
            .donors(me, subnet)
            .into_iter()
            .filter(|d| reachable.contains(d))
            .collect();
        if donors.is_empty() {
            return;
        }
        let donor = donors[self.ipam.ask_round % donors.len()];
        self.ipam.ask_round = self.ipam.ask_round.wrapping_add(1);
        tracing::info!(%donor, %subnet, "asking for space");
        self.send_ipam(IpamPacket::to(
            me,
            donor,
            IpamMessage::SpaceRequest { subnet },
        ))
        .await;
    }

    async fn send_steps(&self, steps: Vec<(PeerName, ConsensusMessage)>) {
        for (to, step) in steps {
            self.send_ipam(IpamPacket::to(
                self.peer_name,
                to,
                IpamMessage::Consensus { step },
            ))
            .await;
        }
    }

    async fn send_ipam(&self, packet: IpamPacket) {
        self.send_ipam_spread(packet, Spread::Everyone).await;
    }

    async fn send_ipam_spread(&self, packet: IpamPacket, spread: Spread) {
        if let Err(e) = self.mesh.send_ipam(packet, spread).await {
            tracing::debug!(error = %e, "sending an IPAM message");
        }
    }

    /// An IPAM message the mesh delivered to us.
    pub(super) async fn on_ipam(&mut self, packet: IpamPacket) {
        if !self.ipam.enabled {
            // Nothing to merge nor to give: peers with a ring see us waiting
            // for nothing, as a Weave peer without IPAM.
            return;
        }
        let me = self.peer_name;
        let src = packet.src;
        match packet.body {
            IpamMessage::Ring { ring } => {
                let theirs_initialised = ring.is_initialised();
                self.ipam.merge(src, &ring);
                if !theirs_initialised && self.ipam.ring.is_initialised() {
                    // A waiting peer: it learns the ring from us.
                    let ring = self.ipam.ring.clone();
                    self.send_ipam(IpamPacket::to(me, src, IpamMessage::Ring { ring }))
                        .await;
                }
            }
            IpamMessage::Claim { addr } => self.on_claim(src, addr).await,
            IpamMessage::ClaimRefused { addr, reason } => self.ipam.on_refusal(src, addr, reason),
            IpamMessage::Consensus { step } => {
                if self.ipam.ring.is_initialised() {
                    // Too late to agree: the ring exists, it learns it.
                    let ring = self.ipam.ring.clone();
                    self.send_ipam(IpamPacket::to(me, src, IpamMessage::Ring { ring }))
                        .await;
                } else {
                    let reachable = self.reachable_names().await;
                    let (steps, chosen) =
                        self.ipam
                            .consensus
                            .on_message(src, step, &reachable, random_ring_id());
                    self.send_steps(steps).await;
                    if let Some(chosen) = chosen {
                        self.ipam.adopt(&chosen);
                    }
                }
            }
            IpamMessage::SpaceRequest { subnet } => {
                if !self.ipam.ring.is_initialised() {
                    // Nothing to give yet: the requester's proposal decides.
                    self.ipam_changed().await;
                    return;
                }
                if self.ipam.ring.is_initialised()
                    && !self.ipam.conflicts.contains_key(&src)
                    && self.ipam.ring.range().contains(&subnet)
                    && !self.ipam.has_free_space(src, subnet)
                {
                    let space = &self.ipam.space;
                    if let Some(given) = self.ipam.ring.donate(me, src, subnet, space) {
                        tracing::info!(to = %src, range = %given, "donated space");
                        self.ipam.dirty = true;
                    }
                }
                let ring = self.ipam.ring.clone();
                self.send_ipam(IpamPacket::to(me, src, IpamMessage::Ring { ring }))
                    .await;
            }
        }
        self.ipam_changed().await;
        // A new owner is usually reachable when its ring arrives: the time
        // to learn its nickname, before it can go away.
        self.remember_nicknames().await;
    }

    /// After a change of the ring: gossip it and save it.
    pub(super) async fn ipam_changed(&mut self) {
        if !self.ipam.dirty {
            return;
        }
        self.ipam.dirty = false;
        self.gossip_ring(Spread::Everyone).await;
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving state");
        }
    }

    /// Our ring: a change to every neighbour, the periodic repair to one
    /// at random (as Weave's gossip did: every neighbour every few seconds
    /// is a hundred rings to decode every few seconds at a hundred peers,
    /// for nothing new). A peer still waiting for a ring is answered by
    /// whoever hears its empty one (see `on_ipam`), so one suffices.
    pub(super) async fn gossip_ring(&self, spread: Spread) {
        if !self.ipam.enabled {
            return;
        }
        let ring = self.ipam.ring.clone();
        self.send_ipam_spread(
            IpamPacket::gossip(self.peer_name, IpamMessage::Ring { ring }),
            spread,
        )
        .await;
    }

    /// Learns the nicknames of the ring's owners this peer does not know
    /// yet (only while they are reachable is their nickname known), so that
    /// they can still be named once they are gone. Asks the mesh only when
    /// an owner is new: nothing to do at rest.
    pub(super) async fn remember_nicknames(&mut self) {
        let owners = self.ipam.ring.peers();
        if owners
            .iter()
            .all(|o| *o == self.peer_name || self.nicknames.contains_key(o))
        {
            return;
        }
        let mut learnt = false;
        for (name, nickname) in self.reachable_peers().await {
            if owners.contains(&name) && self.nicknames.get(&name) != Some(&nickname) {
                self.nicknames.insert(name, nickname);
                learnt = true;
            }
        }
        // Owners no more are forgotten, so the map stays as small as the ring.
        self.nicknames.retain(|name, _| owners.contains(name));
        if learnt && let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving the peers' nicknames");
        }
    }

    /// The one ring owner remembered with nickname `nickname`.
    fn peer_by_nickname(&self, nickname: &str) -> anyhow::Result<PeerName> {
        let named: Vec<PeerName> = self
            .nicknames
            .iter()
            .filter(|(_, nick)| *nick == nickname)
            .map(|(name, _)| *name)
            .collect();
        match named[..] {
            [name] => Ok(name),
            [] => bail!(
                "unknown peer {nickname}: no peer that owns address space had that nickname; \
                 give its name (like 8a:2f:...), as 'weave status ipam' shows it"
            ),
            _ => bail!(
                "{} peers had the nickname {nickname} ({}): give the name of the one to remove",
                named.len(),
                named
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// `weave rmpeer PEER`: take over the space of a dead peer, named by
    /// its name or its nickname.
    pub(super) async fn rmpeer(&mut self, peer: &str) -> anyhow::Result<Reply> {
        self.remember_nicknames().await;
        let reachable = self.reachable_peers().await;
        let owners = self.ipam.ring.peers();
        if !self.ipam.enabled {
            bail!(
                "IP allocation is off on this peer (--ipalloc-range \"\"): run rmpeer on a peer that has it"
            );
        }
        let dead = match peer.parse::<PeerName>() {
            Ok(name) => name,
            Err(_) => self.peer_by_nickname(peer)?,
        };
        if dead == self.peer_name {
            bail!("{peer} is this peer: run 'weave rmpeer' on another peer");
        }
        if reachable.iter().any(|(name, _)| *name == dead) {
            bail!(
                "peer {dead} is reachable: stop it first ('weave reset' on it hands its space over by itself)"
            );
        }
        if !owners.contains(&dead) {
            return Ok(Reply::Message(format!("0 IPs taken over from {dead}")));
        }
        let taken: u64 = self
            .ipam
            .ring
            .transfer(dead, self.peer_name)
            .iter()
            .map(|r| u64::from(r.len()))
            .sum();
        self.ipam.note_free();
        self.ipam.dirty = true;
        self.ipam_changed().await;
        tracing::info!(%dead, taken, "took over the space of a dead peer");
        Ok(Reply::Message(format!(
            "{taken} IPs taken over from {dead}"
        )))
    }

    /// Before `weave reset`: hand all our space to a reachable peer.
    pub(super) async fn leave(&mut self) -> anyhow::Result<Reply> {
        let reachable = self.reachable_peers().await;
        let Some((heir, _)) = reachable.iter().min() else {
            return Ok(Reply::Message(
                "no reachable peer to hand the address space to".into(),
            ));
        };
        if !self.ipam.ring.is_initialised() || !self.ipam.ring.peers().contains(&self.peer_name) {
            return Ok(Reply::Done);
        }
        let handed: u64 = self
            .ipam
            .ring
            .leave(self.peer_name, *heir)
            .iter()
            .map(|r| u64::from(r.len()))
            .sum();
        self.ipam.space = Space::new();
        self.ipam.dirty = true;
        self.ipam_changed().await;
        tracing::info!(%heir, handed, "handed our address space over");
        Ok(Reply::Message(format!(
            "{handed} IPs handed over to {heir}"
        )))
    }

    fn claims_status(&self, reachable: &BTreeSet<PeerName>) -> Vec<ClaimStatus> {
        let ipam = &self.ipam;
        let claim = |addr: Ipv4Addr, for_whom: &str, refused: Option<&String>| {
            let owner = ipam.ring.owner_of(addr).filter(|o| *o != self.peer_name);
            ClaimStatus {
                addr,
                owner,
                owner_nickname: owner.and_then(|o| self.nicknames.get(&o).cloned()),
                owner_reachable: owner.is_some_and(|o| reachable.contains(&o)),
                for_whom: for_whom.to_owned(),
                refused: refused.cloned(),
            }
        };
        ipam.claiming
            .iter()
            .map(|addr| claim(*addr, "run/attach", None))
            .chain(
                ipam.to_reclaim
                    .iter()
                    .map(|(addr, (_, holder))| claim(*addr, holder, None)),
            )
            .chain(
                ipam.lost_claims
                    .iter()
                    .map(|(addr, (holder, why))| claim(*addr, holder, Some(why))),
            )
            .collect()
    }

    pub(super) async fn ipam_status(&self) -> IpamStatus {
        let reachable_list = self.reachable_peers().await;
        let reachable: BTreeSet<PeerName> = reachable_list.iter().map(|p| p.0).collect();
        let ring = &self.ipam.ring;
        let total = ring.size();
        let peers = ring
            .shares()
            .into_iter()
            .map(|s| {
                let ours = s.peer == self.peer_name;
                IpamPeerStatus {
                    name: s.peer,
                    nickname: if ours {
                        Some(self.nickname.clone())
                    } else {
                        reachable_list
                            .iter()
                            .find(|p| p.0 == s.peer)
                            .map(|p| p.1.clone())
                            .or_else(|| self.nicknames.get(&s.peer).cloned())
                    },
                    owned: s.addresses,
                    percent: s.percent_of(total),
                    in_use: if ours {
                        self.ipam.space.len() as u32
                    } else {
                        s.usable.saturating_sub(s.reported_free)
                    },
                    reachable: ours || reachable.contains(&s.peer),
                }
            })
            .collect();
        if !self.ipam.enabled {
            return IpamStatus {
                status: "off (--ipalloc-range \"\"): explicit addresses only".into(),
                enabled: false,
                range: ring.range(),
                default_subnet: self.ipam.default_subnet,
                ring_id: None,
                in_use_here: self.ipam.in_use(),
                peers: Vec::new(),
                pending_allocates: 0,
                claims: Vec::new(),
                outside_range: Vec::new(),
            };
        }
        IpamStatus {
            enabled: true,
            status: self.ipam.status_line(&reachable),
            range: ring.range(),
            default_subnet: self.ipam.default_subnet,
            ring_id: ring.ring_id(),
            in_use_here: self.ipam.in_use(),
            peers,
            pending_allocates: usize::from(self.ipam.waiting),
            claims: self.claims_status(&reachable),
            outside_range: self.outside_range(),
        }
    }

    /// The containers holding addresses of the range before a range change
    /// that the new range does not cover.
    pub(super) fn outside_range(&self) -> Vec<OutsideRange> {
        let Some(old_range) = self.ipam.previous_range else {
            return Vec::new();
        };
        let range = self.ipam.ring.range();
        self.endpoints
            .iter()
            .filter_map(|e| {
                let addrs: Vec<Ipv4Net> = e
                    .cidrs
                    .iter()
                    .filter(|c| old_range.contains(&c.addr()) && !range.contains(&c.addr()))
                    .copied()
                    .collect();
                (!addrs.is_empty()).then(|| OutsideRange {
                    container: e.container_name.clone(),
                    old_range,
                    addrs,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::test_support::{DEFAULT, net, peer};

    fn ipam(me: u8, has_targets: bool) -> PeerIpam {
        let range = net(DEFAULT);
        let named = usize::from(has_targets);
        PeerIpam::new(
            peer(me),
            Ring::new(range).unwrap(),
            range,
            &IpallocInit::default(),
            named,
        )
    }

    impl PeerIpam {
        /// Initialises the ring as a lone peer's consensus does.
        fn claim_all(&mut self) {
            let none = BTreeSet::new();
            let (steps, chosen) = self.consensus.propose(&none, random_ring_id());
            assert!(steps.is_empty());
            if let Some(chosen) = chosen {
                self.adopt(&chosen);
            }
        }
    }

    fn wants_space(r: Result<Vec<Ipv4Net>, Shortfall>) -> Ipv4Net {
        match r {
            Err(Shortfall::Space(s)) => s,
            Err(Shortfall::Fail(e)) => panic!("failed: {e}"),
            Err(Shortfall::Claim(a)) => panic!("claims {a}"),
            Err(Shortfall::Reclaim) => panic!("re-claims"),
            Ok(v) => panic!("allocated {v:?}"),
        }
    }

    #[test]
    fn an_explicit_address_of_another_peer_is_claimed_and_a_refusal_ends_the_claim() {
        let range = net(DEFAULT);
        let owner = Ring::init_with_id(range, peer(2), 5).unwrap();
        let mut me = ipam(1, true);
        me.merge(peer(2), &owner);
        let wanted = net("10.32.0.7/12");
        let request = [AddrRequest::Explicit(wanted)];
        assert!(matches!(
            me.allocate_all(&request),
            Err(Shortfall::Claim(a)) if a == wanted.addr()
        ));
        me.claiming = Some(wanted.addr());
        // Only the owner may refuse.
        me.on_refusal(peer(3), wanted.addr(), "no".into());
        assert!(matches!(
            me.allocate_all(&request),
            Err(Shortfall::Claim(_))
        ));
        me.on_refusal(
            peer(2),
            wanted.addr(),
            "it is in use by container db on peer h2".into(),
        );
        match me.allocate_all(&request) {
            Err(Shortfall::Fail(e)) => assert!(e.to_string().contains("container db"), "{e}"),
            _ => panic!("a refused claim must fail the request"),
        }
        // The owner hands it over: the address is ours.
        let mut given = owner.clone();
        assert_eq!(
            given.hand_over(peer(2), peer(1), wanted.addr(), &Space::new()),
            Ok(true)
        );
        me.merge(peer(2), &given);
        assert_eq!(me.allocate_all(&request).ok(), Some(vec![wanted]));
    }

    #[test]
    fn addresses_held_without_the_ring_are_reclaimed_before_any_other_is_handed_out() {
        let range = net(DEFAULT);
        let mut me = ipam(1, true);
        let held = net("10.32.0.9/12");
        me.mark(held, "container web");
        assert!(me.reclaiming());
        assert_eq!(me.in_use(), 1);
        // The ring arrives: the address belongs to peer 2.
        let owner = Ring::init_with_id(range, peer(2), 5).unwrap();
        me.merge(peer(2), &owner);
        assert!(matches!(
            me.allocate_all(&[AddrRequest::Default]),
            Err(Shortfall::Reclaim)
        ));
        match me.allocate_all(&[AddrRequest::Explicit(held)]) {
            Err(Shortfall::Fail(e)) => assert!(e.to_string().contains("container web"), "{e}"),
            _ => panic!("an address our container holds must not be handed out again"),
        }
        let mut given = owner.clone();
        assert_eq!(
            given.hand_over(peer(2), peer(1), held.addr(), &Space::new()),
            Ok(true)
        );
        me.merge(peer(2), &given);
        assert!(!me.reclaiming());
        assert!(me.space.is_used(held.addr()));
        // Now allocation goes on: we own nothing else, so we ask for space.
        assert_eq!(wants_space(me.allocate_all(&[AddrRequest::Default])), range);
    }

    #[test]
    fn a_refused_reclaim_is_a_conflict_that_does_not_block_allocation() {
        let range = net(DEFAULT);
        let mut me = ipam(1, true);
        let held = net("10.32.0.9/12");
        me.mark(held, "container web");
        me.merge(peer(2), &Ring::init_with_id(range, peer(2), 5).unwrap());
        me.on_refusal(
            peer(2),
            held.addr(),
            "it is in use by container api on peer h2".into(),
        );
        assert!(!me.reclaiming());
        assert_eq!(me.lost_claims.len(), 1);
        assert_eq!(wants_space(me.allocate_all(&[AddrRequest::Default])), range);
        me.release(held);
        assert!(me.lost_claims.is_empty());
    }

    #[test]
    fn a_lone_peer_without_targets_claims_at_once_one_with_targets_waits() {
        let mut alone = ipam(1, false);
        assert_eq!(
            wants_space(alone.allocate_all(&[AddrRequest::Default])),
            net("10.32.0.0/12")
        );
        alone.claim_all();
        assert_eq!(
            alone.allocate_all(&[AddrRequest::Default]).ok(),
            Some(vec![net("10.32.0.1/12")])
        );
        assert!(alone.dirty);
        // The peers in sight count when they outnumber those expected.
        let many: BTreeSet<PeerName> = (2..=9).map(peer).collect();
        assert_eq!(
            ipam(1, true).status_line(&many),
            "waiting for consensus: 5 of 9 peers must agree"
        );
        let mut waits = ipam(1, true);
        waits.claim_all();
        assert!(!waits.ring.is_initialised(), "2 expected, 1 in sight");
        let line = waits.status_line(&BTreeSet::new());
        assert_eq!(
            line,
            "waiting for consensus: 2 of 2 peers must agree, 1 reachable"
        );
    }

    #[test]
    fn an_agreed_ring_is_shared_by_the_peers_that_agreed_and_adopted_by_others() {
        let agreed = Proposal {
            peers: vec![peer(2), peer(1)],
            ring_id: 9,
        };
        let mut one = ipam(1, true);
        one.adopt(&agreed);
        assert!(one.ring.is_initialised() && one.dirty);
        assert_eq!(one.ring.peers(), BTreeSet::from([peer(1), peer(2)]));
        // Another peer building the same value gets the same ring.
        let mut two = ipam(2, true);
        two.adopt(&agreed);
        assert_eq!(one.ring, two.ring);
        // A third adopts it from gossip.
        let mut other = ipam(3, true);
        assert!(other.merge(peer(1), &one.ring));
        assert_eq!(other.status_line(&[peer(1)].into()), "ready");
        // Once initialised, a later agreement changes nothing.
        let before = one.ring.clone();
        one.adopt(&Proposal {
            peers: vec![peer(1)],
            ring_id: 10,
        });
        assert_eq!(one.ring, before);
    }

    #[test]
    fn seed_peers_share_the_range_from_launch_and_observers_wait() {
        let range = net(DEFAULT);
        let seeds = IpallocInit::Seed(vec![peer(1), peer(2)]);
        let a = PeerIpam::new(peer(1), Ring::new(range).unwrap(), range, &seeds, 0);
        let b = PeerIpam::new(peer(2), Ring::new(range).unwrap(), range, &seeds, 0);
        assert!(a.ring.is_initialised());
        assert_eq!(a.ring, b.ring);
        assert_eq!(a.ring.peers(), BTreeSet::from([peer(1), peer(2)]));
        let mut watcher = PeerIpam::new(
            peer(3),
            Ring::new(range).unwrap(),
            range,
            &IpallocInit::Observer,
            0,
        );
        watcher.claim_all();
        assert!(
            !watcher.ring.is_initialised(),
            "an observer never starts the ring"
        );
    }

    #[test]
    fn separately_initialised_rings_are_refused_and_reported_while_reachable() {
        let mut a = ipam(1, false);
        a.claim_all();
        let mut b = ipam(2, false);
        b.claim_all();
        let before = a.ring.clone();
        assert!(!a.merge(peer(2), &b.ring));
        assert_eq!(a.ring, before);
        let line = a.status_line(&[peer(2)].into());
        assert!(line.contains("initialised separately"), "{line}");
        assert_eq!(a.status_line(&BTreeSet::new()), "ready");
    }

    #[test]
    fn addresses_outside_the_range_are_explicit_only_and_per_host() {
        let mut p = ipam(1, false);
        p.claim_all();
        let explicit = AddrRequest::Explicit(net("10.0.1.1/24"));
        assert!(p.allocate_all(&[explicit]).is_ok());
        assert!(matches!(
            p.allocate_all(&[explicit]),
            Err(Shortfall::Fail(_))
        ));
        let Err(Shortfall::Fail(e)) = p.allocate_all(&[AddrRequest::Subnet(net("10.0.2.0/24"))])
        else {
            panic!("net: outside the range must fail")
        };
        assert!(
            e.to_string().contains("outside the allocation range"),
            "{e}"
        );
        // All or nothing: a failing second request gives the first back.
        let before = p.in_use();
        assert!(
            p.allocate_all(&[
                AddrRequest::Default,
                AddrRequest::Explicit(net("10.32.0.0/12"))
            ])
            .is_err()
        );
        assert_eq!(p.in_use(), before);
        p.release(net("10.0.1.1/24"));
        assert!(p.allocate_all(&[explicit]).is_ok());
    }

    #[test]
    fn addresses_held_before_the_ring_is_initialised_are_never_handed_out() {
        // As after a relaunch with another range: containers hold addresses
        // of the new range before anyone owns it.
        let mut p = ipam(1, false);
        p.mark(net("10.32.0.1/12"), "container a");
        p.mark(net("10.32.0.3/12"), "container b");
        assert_eq!(p.in_use(), 2);
        let Err(Shortfall::Fail(e)) = p.allocate_all(&[AddrRequest::Explicit(net("10.32.0.3/12"))])
        else {
            panic!("a held address cannot be claimed")
        };
        assert!(e.to_string().contains("in use"), "{e}");
        p.claim_all();
        let got = p
            .allocate_all(&[AddrRequest::Default, AddrRequest::Default])
            .ok()
            .unwrap();
        assert_eq!(got, vec![net("10.32.0.2/12"), net("10.32.0.4/12")]);
        assert_eq!(p.in_use(), 4);
        // Released, a held address is free again.
        p.release(net("10.32.0.1/12"));
        assert_eq!(
            p.allocate_all(&[AddrRequest::Default]).ok(),
            Some(vec![net("10.32.0.1/12")])
        );
    }

    #[test]
    fn without_ip_allocation_only_explicit_addresses_are_given_per_host() {
        let mut p = ipam(1, false);
        p.enabled = false;
        for request in [
            AddrRequest::Default,
            AddrRequest::Subnet(net("10.32.1.0/24")),
        ] {
            let Err(Shortfall::Fail(e)) = p.allocate_all(&[request]) else {
                panic!("{request} needs IP allocation")
            };
            assert!(e.to_string().contains("must be enabled"), "{e}");
        }
        // Inside what would be the range too: this host's to check.
        let explicit = AddrRequest::Explicit(net("10.32.0.5/12"));
        assert_eq!(
            p.allocate_all(&[explicit]).ok(),
            Some(vec![net("10.32.0.5/12")])
        );
        assert!(matches!(
            p.allocate_all(&[explicit]),
            Err(Shortfall::Fail(_))
        ));
        assert!(!p.ring.is_initialised(), "no ring is claimed");
        p.release(net("10.32.0.5/12"));
        assert!(p.allocate_all(&[explicit]).is_ok());
    }

    #[test]
    fn a_requester_that_still_has_free_space_gets_no_second_share() {
        let mut p = ipam(1, false);
        p.claim_all();
        let range = net("10.32.0.0/12");
        assert!(!p.has_free_space(peer(2), range));
        p.ring.donate(peer(1), peer(2), range, &p.space).unwrap();
        assert!(p.has_free_space(peer(2), range));
        assert!(!p.has_free_space(peer(2), net("10.32.0.0/16")));
    }
}
