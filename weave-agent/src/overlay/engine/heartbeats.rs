//! Where data-path heartbeats and path MTU probes (`wire::heartbeat`) leave
//! the data plane for the control plane: the receive workers divert every
//! datagram that starts like one into a bounded queue before VXLAN parsing
//! (a probe's padding stays behind: only its header and length go), and
//! the mesh takes them from it once a second, or at once when a probe or
//! acknowledgement is among them ([`HeartbeatPort`]), and sends
//! its own through the engine's UDP socket, so that they share the VXLAN
//! packets' addresses and ports (and NAT mappings) both ways.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::overlay::sys;
use crate::overlay::wire::heartbeat;

/// Heartbeats waiting for the mesh: a second's worth from 1024 peers.
pub(crate) const QUEUE: usize = 1024;

/// One heartbeat, probe or acknowledgement as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The datagram's source: where the peer's data comes from (behind a
    /// NAT, not the address of its control connection).
    pub from: SocketAddr,
    /// Its first bytes (all of a heartbeat or an acknowledgement).
    head: [u8; heartbeat::PROBE_HEADER],
    /// Its length as it arrived.
    pub len: usize,
}

impl Arrival {
    pub fn new(from: SocketAddr, datagram: &[u8]) -> Self {
        let mut head = [0u8; heartbeat::PROBE_HEADER];
        let kept = datagram.len().min(head.len());
        head[..kept].copy_from_slice(&datagram[..kept]);
        Self {
            from,
            head,
            len: datagram.len(),
        }
    }

    /// What was kept of the datagram: all of it, but for a probe's padding.
    pub fn datagram(&self) -> &[u8] {
        &self.head[..self.len.min(self.head.len())]
    }
}

/// Whether `datagram` has the shape of a heartbeat, a probe or an
/// acknowledgement (authenticity is the mesh's to check).
fn well_formed(datagram: &[u8]) -> bool {
    let len = datagram.len();
    (heartbeat::is_heartbeat(datagram) && len == heartbeat::LEN)
        || (datagram.starts_with(&heartbeat::PROBE_MAGIC) && len >= heartbeat::PROBE_HEADER)
        || (datagram.starts_with(&heartbeat::ACK_MAGIC) && len == heartbeat::PROBE_HEADER)
}

/// Between the receive workers and the mesh.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatQueue {
    queue: Mutex<VecDeque<Arrival>>,
    /// Lost because the queue was full.
    dropped: AtomicU64,
    /// Starting like a heartbeat, probe or acknowledgement but not shaped
    /// like one, or from no address.
    malformed: AtomicU64,
    /// A probe or an acknowledgement was queued: the mesh takes those at
    /// once (heartbeats wait for its next round).
    probe_or_ack: tokio::sync::Notify,
}

impl HeartbeatQueue {
    /// Takes `datagram` if it is a heartbeat, probe or acknowledgement
    /// (true: the caller drops it from its batch); leaves VXLAN alone.
    pub(crate) fn divert(&self, datagram: &[u8], from: Option<SocketAddr>) -> bool {
        if !heartbeat::is_data_path_control(datagram) {
            return false;
        }
        let Some(from) = from.filter(|_| well_formed(datagram)) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= QUEUE {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            queue.push_back(Arrival::new(from, datagram));
            drop(queue);
            if !heartbeat::is_heartbeat(datagram) {
                // A permit is kept when the mesh is not waiting: no wake-up
                // is lost, and many arrivals before it looks wake it once.
                self.probe_or_ack.notify_one();
            }
        }
        true
    }

    fn take(&self) -> Vec<Arrival> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.drain(..).collect()
    }
}

/// The mesh's handle on an engine's heartbeats: what came, and a way to
/// send through the engine's socket.
#[derive(Clone, Debug)]
pub struct HeartbeatPort {
    socket: Arc<UdpSocket>,
    family: libc::c_int,
    queue: Arc<HeartbeatQueue>,
}

/// How many heartbeats the port lost, since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// The queue was full.
    pub dropped: u64,
    /// They started like a heartbeat, probe or acknowledgement but were
    /// not shaped like one.
    pub malformed: u64,
}

impl HeartbeatPort {
    pub(crate) fn new(socket: UdpSocket, family: libc::c_int, queue: Arc<HeartbeatQueue>) -> Self {
        Self {
            socket: Arc::new(socket),
            family,
            queue,
        }
    }

    /// Everything received since the last call, oldest first.
    pub fn take(&self) -> Vec<Arrival> {
        self.queue.take()
    }

    /// Until a probe or an acknowledgement arrived since the last wait
    /// ended (then [`Self::take`] has it).
    pub async fn probe_or_ack_arrived(&self) {
        self.queue.probe_or_ack.notified().await;
    }

    pub fn counters(&self) -> PortCounters {
        PortCounters {
            dropped: self.queue.dropped.load(Ordering::Relaxed),
            malformed: self.queue.malformed.load(Ordering::Relaxed),
        }
    }

    /// Sends one datagram without ever blocking the caller (the mesh's
    /// actor): a full socket buffer loses it, like any UDP datagram.
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        // SAFETY: all-zero bytes are a valid (empty) sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = sys::write_sockaddr(&to, self.family, &mut addr);
        // SAFETY: the buffer and the address are live for the call, their
        // lengths are theirs; the descriptor is the port's own socket.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                libc::MSG_DONTWAIT,
                (&raw const addr).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_name::PeerName;

    #[test]
    fn heartbeats_are_diverted_and_the_queue_is_bounded() {
        let q = HeartbeatQueue::default();
        let from: SocketAddr = "10.0.0.1:6784".parse().unwrap();
        let hb = heartbeat::encode(&heartbeat::HeartbeatKey([1; 32]), PeerName::random(), 1);
        assert!(!q.divert(&[0x08, 0, 0, 0, 0, 0, 0, 0], Some(from)));
        assert!(q.divert(&hb[..10], Some(from)));
        assert!(q.divert(&hb, None));
        // A probe's padding stays behind; its length goes with it.
        let key = heartbeat::HeartbeatKey([1; 32]);
        let mut probe = vec![0u8; 1000];
        heartbeat::encode_probe(&key, PeerName::random(), 1, &mut probe);
        assert!(q.divert(&probe, Some(from)));
        let taken = q.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].len, 1000);
        assert_eq!(taken[0].datagram(), &probe[..heartbeat::PROBE_HEADER]);
        for _ in 0..QUEUE + 3 {
            assert!(q.divert(&hb, Some(from)));
        }
        assert_eq!(q.malformed.load(Ordering::Relaxed), 2);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        let taken = q.take();
        assert_eq!(taken.len(), QUEUE);
        assert_eq!(taken[0], Arrival::new(from, &hb));
        assert_eq!(taken[0].datagram(), &hb[..]);
        assert!(q.take().is_empty());
    }
}
