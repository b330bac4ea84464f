//! The plain data plane: no eBPF, just sockets. Frames the bridge sends
//! out of its datapath port are captured on the port's other end
//! (`vethwe-datapath`) by an `AF_PACKET` socket, wrapped in VXLAN and sent over
//! UDP to peers; VXLAN packets from peers are unwrapped and injected into the
//! same interface, so they enter the bridge through its datapath port.
//!
//! Threads: two workers (see `engine`), one per direction (`weave-capture`:
//! bridge to peers, `weave-receive`: peers to bridge, relays included). Each
//! owns its buffers, allocated once; each batch is one `recvmmsg` (blocking
//! until the first frame, then taking what is queued), one look at the
//! forwarding table (an atomic load unless it changed), one lock of the MAC
//! tables for all its verdicts, and one `sendmmsg` per socket: two system
//! calls per batch when busy. What happens to each frame is decided by
//! `plan`; the workers only carry it out.

mod capture;
mod receive;

use std::net::SocketAddr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::config::DATAPATH_END;
use crate::overlay::decide::macs::Macs;
use crate::overlay::engine::{self, Core, Workers};
use crate::overlay::error::OverlayError;
use crate::overlay::forwarding::{ForwardingTable, Overlay, OverlayStats};
use crate::overlay::sys;
use crate::overlay::sys::mmsg::RecvBatch;
use crate::overlay::wire::vxlan;

/// The UDP port VXLAN packets travel on between peers (Weave's data port).
pub const DEFAULT_DATA_PORT: u16 = 6784;
/// The bridge MTU that fits a 1500-byte underlay.
pub const DEFAULT_MTU: u32 = 1500 - vxlan::MTU_OVERHEAD_IPV4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainConfig {
    /// The agent's end of the datapath veth pair.
    pub datapath_ifname: String,
    /// Where VXLAN packets are received, and sent from: peers know this
    /// peer by this address, so the port must be the one they send to.
    pub udp_listen: SocketAddr,
    /// The bridge MTU: inner frames are at most `mtu + 14` bytes.
    pub mtu: u32,
}

impl Default for PlainConfig {
    fn default() -> Self {
        Self {
            datapath_ifname: DATAPATH_END.to_owned(),
            udp_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_DATA_PORT)),
            mtu: DEFAULT_MTU,
        }
    }
}

/// What the two workers share.
struct Shared {
    core: Core,
    /// The capture socket on the datapath port.
    datapath: OwnedFd,
}

/// Fills `batch` from `fd`, for both workers' loops: false when nothing
/// came (the receive timeout, so the caller checks whether to stop; an
/// interruption; or an error, already logged and backed off from).
fn receive(batch: &mut RecvBatch, fd: BorrowedFd<'_>, socket: &'static str) -> bool {
    match batch.recv(fd) {
        Ok(_) => true,
        Err(e) if engine::nothing_came(&e) => false,
        Err(e) => {
            engine::back_off(&e, socket);
            false
        }
    }
}

/// The plain data plane; see the module documentation.
pub struct PlainOverlay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    workers: Workers,
}

impl PlainOverlay {
    /// Opens the sockets in the calling thread's network namespace, and
    /// starts the workers. Until the first [`Overlay::update`], the table is
    /// empty: nothing is sent, everything received is dropped.
    pub fn start(config: PlainConfig) -> Result<Arc<Self>, OverlayError> {
        let (core, local_addr) = Core::open(config.udp_listen, config.mtu, Macs::default())?;
        let iface = config.datapath_ifname;
        let ifindex = sys::ifindex(&iface).ok_or_else(|| OverlayError::NoSuchInterface {
            iface: iface.clone(),
        })?;
        let datapath =
            sys::packet_socket(ifindex).map_err(|source| OverlayError::PacketSocket {
                op: "open and bind",
                iface: iface.clone(),
                source,
            })?;
        engine::set_stop_check(&datapath)?;
        core.open_bridge_sender(ifindex);
        let shared = Arc::new(Shared { core, datapath });
        let overlay = Arc::new(Self {
            shared: Arc::clone(&shared),
            local_addr,
            workers: Workers::new("plain"),
        });
        // On error, dropping `overlay` stops what was started.
        let to_peers = Arc::clone(&shared);
        overlay
            .workers
            .spawn("weave-capture", move || capture::run(&to_peers))?;
        let from_peers = Arc::clone(&shared);
        overlay
            .workers
            .spawn("weave-receive", move || receive::run(&from_peers))?;
        tracing::info!(
            datapath = %iface,
            udp = %local_addr,
            mtu = config.mtu,
            "plain overlay started"
        );
        Ok(overlay)
    }

    /// The UDP address packets are received on (its port chosen by the
    /// system if `udp_listen` had port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops and joins the workers; idempotent. The sockets close when the
    /// overlay is dropped (which also stops it).
    pub fn stop(&self) {
        self.workers.stop(&self.shared.core);
    }
}

impl Overlay for PlainOverlay {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn update(&self, table: Arc<ForwardingTable>) {
        self.shared.core.install(table);
    }

    fn stats(&self) -> OverlayStats {
        let shared = &*self.shared;
        let mut stats = shared.core.stats(self.name());
        stats.dropped_overflow = [shared.datapath.as_fd(), shared.core.udp.as_fd()]
            .into_iter()
            .map(|fd| sys::socket_drops(fd).unwrap_or(0))
            .sum();
        stats
    }

    fn heartbeats(&self) -> Option<crate::overlay::HeartbeatPort> {
        self.shared.core.heartbeat_port()
    }

    fn stop(&self) {
        Self::stop(self);
    }
}

impl Drop for PlainOverlay {
    fn drop(&mut self) {
        self.stop();
    }
}
