//! What every data-plane engine is made of, written once: the UDP socket to
//! peers, the routes and MAC tables, the counters, and worker threads that
//! run until told to stop. An engine (plain, xdp) adds where frames from the
//! bridge come from and how frames go into it.
//!
//! Workers are blocking OS threads rather than tokio tasks: the work is
//! syscall-bound, batching needs recvmmsg/sendmmsg anyway, and the agent's
//! runtime never waits behind a busy data plane. Each worker wakes at least
//! every [`STOP_CHECK`] to see whether it must stop.

pub(super) mod carry;
pub(crate) mod heartbeats;
pub(super) mod seal_slots;
pub(super) mod spin;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::overlay::counters::Counters;
use crate::overlay::decide::macs::{MacJournal, Macs};
use crate::overlay::decide::routes::RoutesCell;
use crate::overlay::engine::heartbeats::{HeartbeatPort, HeartbeatQueue};
use crate::overlay::error::OverlayError;
use crate::overlay::forwarding::{ForwardingTable, OverlayStats};
use crate::overlay::sys;
use crate::overlay::wire::vxlan;

/// Frames (or packets) taken in one batch.
pub(crate) const BATCH: usize = 64;
/// How long a worker waits for a frame before checking whether to stop:
/// the longest a stop takes.
pub(crate) const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a worker waits before retrying after an unexpected error, so
/// that a persistent error cannot make it spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 68;
/// The largest MTU whose frames still fit a UDP datagram over IPv4.
pub const MAX_MTU: u32 = 65_507 - vxlan::HEADER_LEN as u32 - vxlan::ETHERNET_HEADER_LEN as u32;

/// The state every engine's workers share.
pub(crate) struct Core {
    /// VXLAN to and from peers.
    pub udp: UdpSocket,
    /// `AF_INET` or `AF_INET6`: how to write destinations for `udp`.
    pub udp_family: libc::c_int,
    /// Largest inner frame: mtu + 14.
    pub max_frame: usize,
    pub routes: RoutesCell,
    pub macs: Mutex<Macs>,
    pub counters: Counters,
    /// Data-path heartbeats diverted from the receive path, for the mesh.
    pub heartbeats: Arc<HeartbeatQueue>,
    /// Sends frames of the agent's own into the bridge (ICMP answers to
    /// frames too big for their path); set once the engine knows its
    /// datapath port.
    bridge: OnceLock<OwnedFd>,
    stopping: AtomicBool,
}

impl Core {
    /// Checks the MTU and binds the UDP socket (buffers sized, receives
    /// timing out every [`STOP_CHECK`]); returns the core and the socket's
    /// address (its port chosen by the system if `udp_listen` had port 0).
    pub(crate) fn open(
        udp_listen: SocketAddr,
        mtu: u32,
        macs: Macs,
    ) -> Result<(Self, SocketAddr), OverlayError> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(OverlayError::Mtu {
                mtu,
                min: MIN_MTU,
                max: MAX_MTU,
            });
        }
        let udp_error = |op| {
            move |source| OverlayError::Udp {
                op,
                addr: udp_listen,
                source,
            }
        };
        let udp = UdpSocket::bind(udp_listen).map_err(udp_error("bind"))?;
        sys::set_buffers(udp.as_fd(), sys::SOCKET_BUFFER);
        let local_addr = udp.local_addr().map_err(udp_error("read the address of"))?;
        set_stop_check(&udp)?;
        let core = Self {
            udp,
            udp_family: if local_addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            },
            max_frame: mtu as usize + vxlan::ETHERNET_HEADER_LEN,
            routes: RoutesCell::default(),
            macs: Mutex::new(macs),
            counters: Counters::default(),
            heartbeats: Arc::default(),
            bridge: OnceLock::new(),
            stopping: AtomicBool::new(false),
        };
        Ok((core, local_addr))
    }

    /// The mesh's handle on the heartbeats, sending through a duplicate of
    /// the UDP socket (same port); `None` if it cannot be duplicated.
    pub(crate) fn heartbeat_port(&self) -> Option<HeartbeatPort> {
        match self.udp.try_clone() {
            Ok(socket) => Some(HeartbeatPort::new(
                socket,
                self.udp_family,
                Arc::clone(&self.heartbeats),
            )),
            Err(error) => {
                tracing::warn!(%error, "no data-path heartbeats: cannot duplicate the UDP socket");
                None
            }
        }
    }

    /// Opens the socket that sends the agent's own frames into the bridge
    /// through the datapath port `ifindex`. Without it, frames too big for
    /// their path that need an answer are dropped (counted), nothing else.
    pub(crate) fn open_bridge_sender(&self, ifindex: u32) {
        match sys::send_socket(ifindex) {
            Ok(fd) => {
                let _ = self.bridge.set(fd);
            }
            Err(error) => tracing::warn!(
                %error,
                "no socket into the bridge: frames too big for a peer's path MTU get no ICMP answer"
            ),
        }
    }

    /// See [`Core::open_bridge_sender`].
    pub(crate) fn bridge(&self) -> Option<BorrowedFd<'_>> {
        self.bridge.get().map(AsFd::as_fd)
    }

    pub(crate) fn macs(&self) -> MutexGuard<'_, Macs> {
        self.macs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The counters of the engine called `dataplane`, and the MACs not
    /// learnt.
    pub(crate) fn stats(&self, dataplane: &str) -> OverlayStats {
        let mut stats = self.counters.snapshot(dataplane);
        stats.macs_not_learnt = self.macs().not_learnt;
        stats
    }

    /// A new forwarding table; returns how many remote MACs it made the
    /// engine forget.
    pub(crate) fn install(&self, table: Arc<ForwardingTable>) -> usize {
        self.routes.install(table, &self.macs)
    }

    /// The verdicts of a batch of `n` frames, `verdict(macs, i)` for each,
    /// under one lock of the MAC tables (expired entries forgotten first).
    /// What the batch changed in the remote table moves into `journal`, for
    /// an engine that mirrors it.
    pub(crate) fn decide<V>(
        &self,
        n: usize,
        now: Instant,
        verdicts: &mut Vec<V>,
        journal: Option<&mut MacJournal>,
        mut verdict: impl FnMut(&mut Macs, usize) -> V,
    ) {
        verdicts.clear();
        let mut macs = self.macs();
        macs.expire(now);
        verdicts.extend((0..n).map(|i| verdict(&mut macs, i)));
        if let (Some(out), Some(journal)) = (journal, macs.journal.as_mut()) {
            journal.move_into(out);
        }
    }
}

/// After an unexpected error: logs it (the first at warn level, the rest
/// at debug) and waits a little, so that it cannot make a worker spin.
pub(crate) fn back_off(error: &std::io::Error, what: &'static str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(%error, what, "overlay socket error");
    } else {
        tracing::warn!(%error, what, "overlay socket error (further ones at debug level)");
    }
    std::thread::sleep(ERROR_BACKOFF);
}

/// Makes receives on `socket` time out every [`STOP_CHECK`].
pub(crate) fn set_stop_check(socket: &impl AsFd) -> Result<(), OverlayError> {
    sys::set_recv_timeout(socket.as_fd(), STOP_CHECK).map_err(|source| OverlayError::Start {
        what: "socket receive timeout",
        source,
    })
}

/// Whether a receive error just means "nothing came" (the timeout, or an
/// interruption).
pub(crate) fn nothing_came(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// An engine's worker threads.
pub(crate) struct Workers {
    engine: &'static str,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    pub(crate) const fn new(engine: &'static str) -> Self {
        Self {
            engine,
            handles: Mutex::new(Vec::new()),
        }
    }

    /// Starts `work` on a thread named `name`.
    pub(crate) fn spawn(
        &self,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<(), OverlayError> {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(work)
            .map_err(|source| OverlayError::Start {
                what: "overlay worker thread",
                source,
            })?;
        self.handles().push(handle);
        Ok(())
    }

    /// Tells the workers to stop and joins them; idempotent. Returns whether
    /// any were running.
    pub(crate) fn stop(&self, core: &Core) -> bool {
        core.stopping.store(true, Ordering::Release);
        let handles = std::mem::take(&mut *self.handles());
        let stopped = !handles.is_empty();
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!(engine = self.engine, "an overlay worker panicked");
            }
        }
        if stopped {
            tracing::info!(engine = self.engine, "overlay stopped");
        }
        stopped
    }

    fn handles(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
