//! The DNS server's I/O: sockets on the agent's DNS address, the query loop
//! and the forwarding of other names to the upstream resolvers. Decisions
//! are `answer::answer`'s; this only moves bytes, with bounds: at most
//! [`MAX_FORWARDING`] upstream queries and [`MAX_TCP`] TCP clients at once,
//! and a flood beyond that is dropped and counted, never queued.
//!
//! Two UDP sockets share the address: one bound to the bridge answers the
//! containers, so that an answer goes back out of the bridge whatever the
//! container's subnet (the host has no route to it; a socket bound to a
//! device sends on-link there); one unbound answers the host itself (a
//! `dig` on the host arrives over loopback, which the bound one never sees).
//! TCP (answers too big for UDP) is served to the containers.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket, sockopt,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::answer::{self, Kind, Outcome, TCP_MAX, Zone};

/// Upstream queries in flight at once; more are dropped (and counted).
pub const MAX_FORWARDING: usize = 256;
/// TCP clients served at once; more are closed at once.
pub const MAX_TCP: usize = 64;
/// How long one upstream server gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay silent.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest UDP datagram read (EDNS clients may send big queries).
const UDP_BUF: usize = 4096;

/// Where the server listens and whom it asks.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The bridge: containers' queries arrive there.
    pub device: String,
    pub upstreams: Vec<SocketAddr>,
}

/// What the server did, for `weave status dns` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub malformed: AtomicU64,
    pub forwarded: AtomicU64,
    pub upstream_failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersSnapshot {
    pub queries: u64,
    pub answered: u64,
    pub nxdomain: u64,
    pub malformed: u64,
    pub forwarded: u64,
    pub upstream_failed: u64,
    pub dropped: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            queries: get(&self.queries),
            answered: get(&self.answered),
            nxdomain: get(&self.nxdomain),
            malformed: get(&self.malformed),
            forwarded: get(&self.forwarded),
            upstream_failed: get(&self.upstream_failed),
            dropped: get(&self.dropped),
        }
    }

    fn count(&self, kind: Kind) {
        let c = match kind {
            Kind::Answered => &self.answered,
            Kind::NxDomain => &self.nxdomain,
            Kind::Malformed | Kind::Refused | Kind::Ignored => &self.malformed,
            Kind::Forward => &self.forwarded,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared by every socket's loop.
struct Shared {
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
    rotation: AtomicUsize,
    forwarding: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl Shared {
    fn decide(&self, query: &[u8], udp: bool) -> Outcome {
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let zone = Arc::clone(&self.zone.borrow());
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let (outcome, kind) = answer::answer(query, &zone, rotation, udp);
        self.counters.count(kind);
        outcome
    }
}

/// The running server; dropping it stops every task.
pub struct Server {
    pub counters: Arc<Counters>,
    _tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("opening the DNS server on {addr} ({what}): {source}")]
pub struct ServerError {
    addr: SocketAddr,
    what: &'static str,
    source: std::io::Error,
}

/// Binds the sockets and starts answering from `zone`.
pub fn start(
    config: &ServerConfig,
    zone: watch::Receiver<Arc<Zone>>,
) -> Result<Server, ServerError> {
    let addr = config.listen;
    let err = |what| {
        move |e: nix::Error| ServerError {
            addr,
            what,
            source: std::io::Error::from(e),
        }
    };
    let io_err = |what| move |source| ServerError { addr, what, source };
    let bridge_udp = udp_socket(addr, Some(&config.device)).map_err(err("UDP, bridge"))?;
    let host_udp = udp_socket(addr, None).map_err(err("UDP, host"))?;
    let tcp = tcp_listener(addr, &config.device).map_err(err("TCP"))?;
    let to_tokio_udp = |fd: OwnedFd| {
        let s = std::net::UdpSocket::from(fd);
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    };
    let bridge_udp = to_tokio_udp(bridge_udp).map_err(io_err("UDP, bridge"))?;
    let host_udp = to_tokio_udp(host_udp).map_err(io_err("UDP, host"))?;
    let tcp = {
        let l = std::net::TcpListener::from(tcp);
        l.set_nonblocking(true).map_err(io_err("TCP"))?;
        TcpListener::from_std(l).map_err(io_err("TCP"))?
    };
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        zone,
        upstreams: config.upstreams.clone(),
        rotation: AtomicUsize::new(0),
        forwarding: Arc::new(Semaphore::new(MAX_FORWARDING)),
        counters: Arc::clone(&counters),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_udp(Arc::new(bridge_udp), Arc::clone(&shared)));
    tasks.spawn(serve_udp(Arc::new(host_udp), Arc::clone(&shared)));
    tasks.spawn(serve_tcp(tcp, shared));
    tracing::info!(%addr, upstreams = ?config.upstreams, "DNS server listening");
    Ok(Server {
        counters,
        _tasks: tasks,
    })
}

fn v4(addr: SocketAddr) -> Result<SockaddrIn, nix::Error> {
    match addr {
        SocketAddr::V4(a) => Ok(SockaddrIn::from(a)),
        SocketAddr::V6(_) => Err(nix::Error::EAFNOSUPPORT),
    }
}

fn udp_socket(addr: SocketAddr, device: Option<&str>) -> Result<OwnedFd, nix::Error> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Two sockets on one address: allowed when both say so.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if let Some(dev) = device {
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(dev))?;
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &v4(addr)?)?;
    Ok(fd)
}

fn tcp_listener(addr: SocketAddr, device: &str) -> Result<OwnedFd, nix::Error> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(device),
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &v4(addr)?)?;
    listen(&fd, nix::sys::socket::Backlog::new(64)?)?;
    Ok(fd)
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive");
                continue;
            }
        };
        let query = &buf[..n];
        match shared.decide(query, true) {
            Outcome::Reply(bytes) => {
                let _ = socket.send_to(&bytes, from).await;
            }
            Outcome::Ignore => {}
            Outcome::Forward => {
                // A permit or nothing: a flood is dropped here, not queued.
                let Ok(permit) = Arc::clone(&shared.forwarding).try_acquire_owned() else {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let query = query.to_vec();
                let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
                tokio::spawn(async move {
                    let bytes = forward(&shared, &query).await;
                    drop(permit);
                    if let Some(bytes) = bytes {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let clients = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&clients).try_acquire_owned() else {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, &shared).await;
            drop(permit);
        });
    }
}

/// Length-prefixed queries, one after another, until the client is done or
/// silent for [`TCP_IDLE`].
async fn serve_tcp_client(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = vec![0u8; TCP_MAX];
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let len = usize::from(len?);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..len]))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let query = &buf[..len];
        let bytes = match shared.decide(query, false) {
            Outcome::Reply(b) => b,
            Outcome::Ignore => return Ok(()),
            Outcome::Forward => {
                let Ok(_permit) = shared.forwarding.try_acquire() else {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                match forward(shared, query).await {
                    Some(b) => b,
                    None => return Ok(()),
                }
            }
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Ok(());
        };
        stream.write_u16(len).await?;
        stream.write_all(&bytes).await?;
    }
}

/// Asks the upstream servers in turn; SERVFAIL when none answers in time.
async fn forward(shared: &Shared, query: &[u8]) -> Option<Vec<u8>> {
    for upstream in &shared.upstreams {
        match ask(*upstream, query).await {
            Ok(answer) => return Some(answer),
            Err(e) => tracing::debug!(%upstream, error = %e, "upstream DNS server"),
        }
    }
    shared
        .counters
        .upstream_failed
        .fetch_add(1, Ordering::Relaxed);
    answer::servfail(query)
}

/// One query to one upstream over UDP, from a socket of its own (so the
/// answer is matched by the socket and the id stays the client's).
async fn ask(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; UDP_BUF];
    let id = query.get(..2);
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        // Only the answer to this query (same id) counts.
        if buf.get(..2) == id && n >= 12 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// The name servers of a resolv.conf (port 53), in order.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_the_nameservers_in_order() {
        let conf = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver ::1\nnameserver bad\noptions ndots:2\n";
        assert_eq!(
            upstreams_of(conf),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
