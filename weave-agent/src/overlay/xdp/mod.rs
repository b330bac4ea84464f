//! The accelerated data plane: frames leave the bridge through eBPF and
//! `AF_XDP` instead of a capture socket.
//!
//! The datapath XDP program (`weave_datapath` on `vethwe-datapath`) tags
//! every frame the bridge sends towards other hosts with its destination
//! peer, looked up in `PEER_MACS` (the kernel's copy of the MACs learnt
//! behind peers, see `peer_macs`), and redirects it into this overlay's
//! `AF_XDP` socket (copy mode: veth has no zero-copy). Frames from peers go
//! back into the bridge through the same socket's TX ring.
//!
//! Two directions, each a type that carries one batch at a time:
//! - bridge to peers (`to_peers`): takes a batch from the RX ring (the
//!   program runs as generic XDP and is frags-aware, so a container's TCP
//!   super-frame arrives whole over several descriptors and is cut into
//!   segments here, `super_frames`), decides every frame's verdict under
//!   one lock of the MAC tables, sends
//!   the batch with one `sendmmsg` whose iovecs point into the UMEM (no
//!   copy in userspace), and gives the frames back to the fill ring.
//! - peers to bridge (`from_peers`): `recvmmsg` of whole GRO datagrams
//!   (a peer's GSO datagram stays one skb up to the socket), verdicts on
//!   the packets where they were received, relays and broadcasts passed
//!   on with one `sendmmsg`; when segments of a TCP stream merge
//!   (`coalesce`), the batch goes into the bridge as GSO super-frames
//!   through `inject`, gathered straight from the receive buffers;
//!   otherwise each inner frame is copied into a transmit frame of the
//!   UMEM, queued on the TX ring, and the kernel kicked once per batch
//!   (copy-mode TX only moves in `sendto`).
//!
//! Two workers, `weave-xsk-out` and `weave-xsk-in`, each home to one
//! direction, run them to completion and take over the other's work rather
//! than wake its worker (`drive`); with busy polling, one worker,
//! `weave-xsk-poll`, runs both and never sleeps.
//!
//! A third thread, `weave-xsk-sync`, keeps the kernel's copy of the remote
//! MACs in step with the agent's table (entries aged out, peers gone), off
//! the forwarding threads.
//!
//! Verdicts, plans, VXLAN, MAC learning, routes and batching are shared with
//! the plain data plane (`verdict`, `plan`, `carry`, `engine`): only where
//! frames come from and go to differs.

mod drive;
mod from_peers;
mod peer_macs;
mod sealed;
mod super_frames;
mod to_peers;
mod umem;

use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aya::maps::{MapData, XskMap};

use crate::ebpf::DatapathMaps;
use crate::mac::Mac;
use crate::overlay::decide::macs::{MacJournal, Macs};
use crate::overlay::engine::{Core, STOP_CHECK, Workers};
use crate::overlay::error::OverlayError;
use crate::overlay::forwarding::{ForwardingTable, Overlay, OverlayStats, ShortId};
use crate::overlay::sys;
use crate::overlay::sys::gro;
use crate::overlay::sys::inject::Injector;
use crate::overlay::wire::vxlan;

use from_peers::PeersToBridge;
use peer_macs::PeerMacs;
use to_peers::BridgeToPeers;
use umem::Memory;

/// How often the kernel's copy of the remote MACs is checked against the
/// agent's table (for entries that aged out or whose peer went away).
const MIRROR_SYNC: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// The agent's end of the datapath veth pair, where `weave_datapath` runs.
    pub datapath_ifname: String,
    /// Where VXLAN packets are received and sent from.
    pub udp_listen: SocketAddr,
    /// The bridge MTU: inner frames are at most `mtu + 14` bytes.
    pub mtu: u32,
    /// Whether frames may arrive over several descriptors (the datapath
    /// program is frags-aware): then the socket asks for them
    /// (`XDP_USE_SG`, Linux 6.6), and falls back to single-buffer frames
    /// where the kernel refuses; [`XdpOverlay::multi_buffer`] says which.
    pub multi_buffer: bool,
    /// Busy polling: one worker runs both directions and never sleeps
    /// (see `drive`).
    pub busy_poll: bool,
}

/// The largest MTU whose frames fit a UMEM frame.
pub const MAX_XDP_MTU: u32 = (umem::MAX_FRAME - vxlan::ETHERNET_HEADER_LEN) as u32;

/// What the workers share.
struct Shared {
    core: Core,
    peer_macs: Mutex<PeerMacs>,
    /// Whether a frame without a destination tag was seen (logged once).
    untagged_seen: AtomicBool,
    /// Packets received with no transmit frame free to take them.
    no_frame: AtomicU64,
    mem: Arc<Memory>,
}

impl Shared {
    fn peer_macs(&self) -> MutexGuard<'_, PeerMacs> {
        self.peer_macs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies what a batch changed in the remote MAC table to the kernel's
    /// copy (after the MAC lock is released), or resynchronises it whole.
    fn mirror(&self, changes: &mut MacJournal) {
        if changes.is_empty() {
            return;
        }
        if std::mem::take(&mut changes.overflowed) {
            self.resync_mirror();
        }
        self.peer_macs().apply(changes);
    }

    /// Makes the kernel's copy equal to the agent's table: an in-memory
    /// comparison with what the agent wrote (it is the map's only writer),
    /// and a system call per difference only.
    fn resync_mirror(&self) {
        let live = PeerMacs::snapshot(&self.core.macs().remote, Instant::now());
        self.peer_macs().sync(&live);
    }
}

/// The `AF_XDP` data plane; see the module documentation.
pub struct XdpOverlay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    datapath_ifname: String,
    multi_buffer: bool,
    busy_poll: bool,
    /// The XSKS map, to take the socket out of it when stopping.
    sockets: Mutex<XskMap<MapData>>,
    workers: Workers,
}

impl XdpOverlay {
    /// Opens the `AF_XDP` sockets on the datapath port and the UDP socket, in
    /// the calling thread's network namespace, registers the receiving
    /// socket with the datapath program (which until then passes frames to
    /// the kernel; the fill ring is full by then, so nothing is dropped for
    /// want of a frame), then starts the workers, which take what queued.
    pub fn start(config: XdpConfig, maps: DatapathMaps) -> Result<Arc<Self>, OverlayError> {
        let (core, local_addr) = Core::open(config.udp_listen, config.mtu, Macs::mirrored())?;
        if config.mtu > MAX_XDP_MTU {
            return Err(OverlayError::XskMtu {
                mtu: config.mtu,
                max: MAX_XDP_MTU,
            });
        }
        let iface = config.datapath_ifname.clone();
        let (rx_half, tx_half, mem, multi_buffer) = match umem::open(&iface, config.multi_buffer) {
            Ok((rx, tx, mem)) => (rx, tx, mem, config.multi_buffer),
            Err(OverlayError::Xsk {
                op: "bind", source, ..
            }) if config.multi_buffer => {
                tracing::warn!(error = %source, "no multi-buffer AF_XDP here (before Linux 6.6?): TCP frames will be cut by the kernel before the agent");
                let (rx, tx, mem) = umem::open(&iface, false)?;
                (rx, tx, mem, false)
            }
            Err(error) => return Err(error),
        };
        // Without it (Linux < 5.0) every packet arrives on its own: slower, same result.
        if let Err(error) = gro::enable(core.udp.as_fd()) {
            tracing::warn!(%error, "no UDP GRO on the data socket: receiving packet by packet");
        }
        let DatapathMaps {
            mut sockets,
            peer_macs,
        } = maps;
        let shared = Arc::new(Shared {
            core,
            // An agent killed before it could clean up leaves nothing behind
            // (the map died with it), but the mirror starts empty for sure.
            peer_macs: Mutex::new(PeerMacs::emptied(peer_macs)),
            untagged_seen: AtomicBool::new(false),
            no_frame: AtomicU64::new(0),
            mem: Arc::clone(&mem),
        });
        let register = sockets.set(0, mem.fd(), 0);
        let overlay = Arc::new(Self {
            shared: Arc::clone(&shared),
            local_addr,
            datapath_ifname: iface,
            multi_buffer,
            busy_poll: config.busy_poll,
            sockets: Mutex::new(sockets),
            workers: Workers::new("xdp"),
        });
        register.map_err(|source| OverlayError::XskMap { source })?;
        // On error, dropping `overlay` stops what was started.
        if let Some(ifindex) = sys::ifindex(&overlay.datapath_ifname) {
            shared.core.open_bridge_sender(ifindex);
        }
        // Without it TCP segments enter the bridge one by one: slower, same result.
        let injector = sys::ifindex(&overlay.datapath_ifname)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))
            .and_then(Injector::open)
            .inspect_err(|error| {
                tracing::warn!(%error, "no packet socket to coalesce TCP segments into the bridge");
            })
            .ok();
        let to_peers = BridgeToPeers::new(Arc::clone(&shared), rx_half);
        let to_bridge = PeersToBridge::new(Arc::clone(&shared), tx_half, injector);
        let polling = if config.busy_poll {
            drive::Polling::Busy
        } else {
            drive::Polling::Sleeping
        };
        drive::spawn(
            &overlay.workers,
            polling,
            Arc::clone(&shared),
            to_peers,
            to_bridge,
        )?;
        let sync = shared;
        overlay
            .workers
            .spawn("weave-xsk-sync", move || keep_mirror_in_step(&sync))?;
        tracing::info!(
            datapath = %overlay.datapath_ifname,
            udp = %local_addr,
            mtu = config.mtu,
            multi_buffer,
            busy_poll = config.busy_poll,
            "xdp overlay started"
        );
        Ok(overlay)
    }

    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// One line for `weave status`: how frames reach this data plane.
    pub fn describe(&self) -> String {
        format!(
            "AF_XDP copy mode on {}, XDP generic{}{}",
            self.datapath_ifname,
            if self.multi_buffer {
                ""
            } else {
                ", single-buffer (TCP frames cut by the kernel)"
            },
            if self.busy_poll { ", busy polling" } else { "" }
        )
    }

    /// Whether TCP super-frames reach the agent whole (multi-buffer XDP
    /// and `AF_XDP`): only then may the bridge's datapath port keep TSO on.
    pub const fn multi_buffer(&self) -> bool {
        self.multi_buffer
    }

    /// Takes the socket out of the datapath program's map, then stops and
    /// joins the workers; idempotent. The socket and UMEM are freed when the
    /// overlay is dropped (which also stops it).
    /// MACs the kernel saw behind neighbours (fastdp decapsulates without
    /// this engine): learnt as if their frames had crossed it, so that the
    /// agent's table and the kernel's copy keep them while they talk.
    pub fn learn_remote(&self, learnt: &[(Mac, ShortId)]) {
        let mut changes = MacJournal::default();
        {
            let mut macs = self.shared.core.macs();
            let now = Instant::now();
            for &(mac, peer) in learnt {
                macs.learn_remote(mac, peer, now);
            }
            if let Some(journal) = macs.journal.as_mut() {
                journal.move_into(&mut changes);
            }
        }
        self.shared.mirror(&mut changes);
    }

    /// Starts `weave-fastdp-learn`, which hands what fastdp's decapsulation
    /// reports (its ring) to [`XdpOverlay::learn_remote`] until the engine
    /// stops.
    pub fn spawn_kernel_learning(
        self: &Arc<Self>,
        mut ring: aya::maps::RingBuf<MapData>,
    ) -> Result<(), OverlayError> {
        let overlay = Arc::downgrade(self);
        let shared = Arc::clone(&self.shared);
        self.workers.spawn("weave-fastdp-learn", move || {
            let mut batch = Vec::new();
            while !shared.core.stopping() {
                crate::overlay::fastdp::drain_learnt(&mut ring, STOP_CHECK, &mut batch, |learnt| {
                    if let Some(overlay) = overlay.upgrade() {
                        overlay.learn_remote(learnt);
                    }
                });
            }
        })
    }

    pub fn stop_workers(&self) {
        let _ = self
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unset(0);
        self.workers.stop(&self.shared.core);
    }
}

/// The `weave-xsk-sync` worker: every [`MIRROR_SYNC`], repairs what the
/// journal cannot say (entries aged out, a journal that overflowed).
fn keep_mirror_in_step(shared: &Shared) {
    let mut last = Instant::now();
    while !shared.core.stopping() {
        std::thread::sleep(STOP_CHECK);
        if last.elapsed() >= MIRROR_SYNC {
            last = Instant::now();
            shared.resync_mirror();
        }
    }
}

impl Overlay for XdpOverlay {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn update(&self, table: Arc<ForwardingTable>) {
        if self.shared.core.install(table) > 0 {
            self.shared.resync_mirror();
        }
    }

    fn stats(&self) -> OverlayStats {
        let shared = &*self.shared;
        let mut stats = shared.core.stats(self.name());
        stats.dropped_overflow = sys::socket_drops(shared.core.udp.as_fd()).unwrap_or(0)
            + shared.mem.rx_dropped()
            + shared.no_frame.load(Ordering::Relaxed);
        stats
    }

    fn heartbeats(&self) -> Option<crate::overlay::HeartbeatPort> {
        self.shared.core.heartbeat_port()
    }

    fn stop(&self) {
        self.stop_workers();
    }
}

impl Drop for XdpOverlay {
    fn drop(&mut self) {
        self.stop_workers();
    }
}
