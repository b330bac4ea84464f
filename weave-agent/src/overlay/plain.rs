//! The plain data plane: no eBPF, just sockets. Frames the bridge sends
//! out of its datapath port are captured on the port's other end
//! (`vethwe-datapath`) by an AF_PACKET socket, wrapped in VXLAN and sent over
//! UDP to peers; VXLAN packets from peers are unwrapped and injected into the
//! same interface, so they enter the bridge through its datapath port.
//!
//! Threads: two blocking OS threads, one per direction (`weave-capture`:
//! bridge to peers, `weave-receive`: peers to bridge, relays included). Each
//! owns its buffers, allocated once; each batch is one `recvmmsg` (blocking
//! until the first frame, then taking what is queued), one look at the
//! forwarding table (an atomic load unless it changed), one lock of the MAC
//! tables for all its verdicts, and one `sendmmsg` per socket: two system
//! calls per batch when busy. Receives time out every [`STOP_CHECK`], when
//! a worker checks whether to stop; [`PlainOverlay::stop`] (also on drop)
//! joins both, and the sockets close with the overlay. Blocking threads
//! rather than tokio: the work is syscall-bound, batching needs
//! recvmmsg/sendmmsg anyway, and the agent's runtime never waits behind a
//! busy data plane.

mod capture;
mod receive;
pub(crate) mod sealed;
pub mod verdict;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::counters::Counters;
use super::error::OverlayError;
use super::forwarding::{ForwardingTable, Overlay, OverlayStats};
use super::mmsg::RecvBatch;
use super::routes::RoutesCell;
use super::sys;
use super::vxlan;
use crate::config::DATAPATH_END;

use verdict::Macs;

/// The UDP port VXLAN packets travel on between peers (Weave's data port).
pub const DEFAULT_DATA_PORT: u16 = 6784;
/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 68;
/// The largest MTU whose frames still fit a UDP datagram over IPv4.
pub const MAX_MTU: u32 = 65_507 - vxlan::HEADER_LEN as u32 - vxlan::ETHERNET_HEADER_LEN as u32;

/// The bridge MTU that fits a 1500-byte underlay.
pub const DEFAULT_MTU: u32 = 1500 - vxlan::MTU_OVERHEAD_IPV4;

/// Frames (or packets) taken from a socket in one `recvmmsg`.
const BATCH: usize = 64;
/// How long a worker waits for a frame before checking whether to stop:
/// the longest [`PlainOverlay::stop`] takes.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a worker waits before retrying a socket that failed in an
/// unexpected way, so that a persistent error cannot make it spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

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
    datapath: OwnedFd,
    datapath_ifname: String,
    udp: UdpSocket,
    /// AF_INET or AF_INET6: how to write destinations for `udp`.
    udp_family: libc::c_int,
    /// Largest inner frame: mtu + 14.
    max_frame: usize,
    routes: RoutesCell,
    macs: Mutex<Macs>,
    counters: Counters,
    stopping: AtomicBool,
}

impl Shared {
    fn macs(&self) -> MutexGuard<'_, Macs> {
        self.macs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Fills `batch` from `fd`, for both workers' loops: false when nothing
    /// came (the receive timeout, so the caller checks whether to stop; an
    /// interruption; or an error, already logged and backed off from).
    fn receive(&self, batch: &mut RecvBatch, fd: BorrowedFd<'_>, socket: &'static str) -> bool {
        match batch.recv(fd) {
            Ok(_) => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            Err(e) => {
                self.back_off(&e, socket);
                false
            }
        }
    }

    /// After an unexpected receive error: logs it (the first at warn level,
    /// the rest at debug) and waits a little, so that a persistent error
    /// cannot make a worker spin.
    fn back_off(&self, error: &std::io::Error, socket: &'static str) {
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, socket, "overlay socket error (further ones at debug level)");
        } else {
            tracing::debug!(%error, socket, "overlay socket error");
        }
        std::thread::sleep(ERROR_BACKOFF);
    }
}

/// The plain data plane; see the module documentation.
pub struct PlainOverlay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl PlainOverlay {
    /// Opens the sockets in the calling thread's network namespace, and
    /// starts the workers. Until the first [`Overlay::update`], the table is
    /// empty: nothing is sent, everything received is dropped.
    pub fn start(config: PlainConfig) -> Result<Arc<Self>, OverlayError> {
        if !(MIN_MTU..=MAX_MTU).contains(&config.mtu) {
            return Err(OverlayError::Mtu {
                mtu: config.mtu,
                min: MIN_MTU,
                max: MAX_MTU,
            });
        }
        let iface = config.datapath_ifname.clone();
        let ifindex = sys::ifindex(&iface).ok_or_else(|| OverlayError::NoSuchInterface {
            iface: iface.clone(),
        })?;
        let datapath =
            sys::packet_socket(ifindex).map_err(|source| OverlayError::PacketSocket {
                op: "open and bind",
                iface: iface.clone(),
                source,
            })?;
        let udp_error = |op| {
            move |source| OverlayError::Udp {
                op,
                addr: config.udp_listen,
                source,
            }
        };
        let udp = UdpSocket::bind(config.udp_listen).map_err(udp_error("bind"))?;
        sys::set_buffers(udp.as_fd(), sys::SOCKET_BUFFER);
        let local_addr = udp.local_addr().map_err(udp_error("read the address of"))?;
        for fd in [datapath.as_fd(), udp.as_fd()] {
            sys::set_recv_timeout(fd, STOP_CHECK).map_err(|source| OverlayError::Start {
                what: "socket receive timeout",
                source,
            })?;
        }
        let shared = Arc::new(Shared {
            datapath,
            datapath_ifname: iface,
            udp,
            udp_family: if local_addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            },
            max_frame: config.mtu as usize + vxlan::ETHERNET_HEADER_LEN,
            routes: RoutesCell::default(),
            macs: Mutex::new(Macs::default()),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
        });
        let overlay = Arc::new(PlainOverlay {
            shared: shared.clone(),
            local_addr,
            workers: Mutex::new(Vec::new()),
        });
        // On error, dropping `overlay` stops what was started.
        for (name, work) in [
            ("weave-capture", capture::run as fn(&Shared)),
            ("weave-receive", receive::run as fn(&Shared)),
        ] {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || work(&shared))
                .map_err(|source| OverlayError::Start {
                    what: "overlay worker thread",
                    source,
                })?;
            overlay.workers().push(handle);
        }
        tracing::info!(
            datapath = %overlay.shared.datapath_ifname,
            udp = %local_addr,
            mtu = config.mtu,
            "plain overlay started"
        );
        Ok(overlay)
    }

    /// The UDP address packets are received on (its port chosen by the
    /// system if `udp_listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops and joins the workers; idempotent. The sockets close when the
    /// overlay is dropped (which also stops it).
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let workers = std::mem::take(&mut *self.workers());
        let stopped = !workers.is_empty();
        for worker in workers {
            if worker.join().is_err() {
                tracing::error!("an overlay worker panicked");
            }
        }
        if stopped {
            tracing::info!(datapath = %self.shared.datapath_ifname, "plain overlay stopped");
        }
    }

    fn workers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Overlay for PlainOverlay {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn update(&self, table: Arc<ForwardingTable>) {
        self.shared.routes.install(table, &self.shared.macs);
    }

    fn stats(&self) -> OverlayStats {
        let mut stats = self.shared.counters.snapshot();
        let shared = &*self.shared;
        stats.dropped_overflow = [shared.datapath.as_fd(), shared.udp.as_fd()]
            .into_iter()
            .map(|fd| sys::socket_drops(fd).unwrap_or(0))
            .sum();
        stats
    }

    fn stop(&self) {
        PlainOverlay::stop(self);
    }
}

impl Drop for PlainOverlay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The time for one batch: MAC ages are coarse, one reading per batch is enough.
fn batch_time() -> Instant {
    Instant::now()
}
