//! The few system calls the data planes need that std lacks: packet
//! sockets bound to one interface (capture, and injection of GSO frames),
//! a waker for the worker threads, and socket-address conversions for `recvmmsg`/`sendmmsg` (see `mmsg.rs`).
//! Each `unsafe` block is one libc call with arguments that live across it.

pub(super) mod gro;
pub(super) mod gso;
pub(super) mod inject;
pub(super) mod mmsg;

use std::ffi::CString;
use std::io;
use std::mem::zeroed;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::time::Duration;

/// C structs that the kernel takes all-zero as "nothing set": what the
/// batched receive and send buffers start as.
///
/// # Safety
/// All-zero bytes must be a valid value of the type.
pub(crate) unsafe trait ZeroedC: Sized {}

// SAFETY: plain C structs of integers and raw pointers (null is valid).
unsafe impl ZeroedC for libc::iovec {}
// SAFETY: as above.
unsafe impl ZeroedC for libc::mmsghdr {}
// SAFETY: as above.
unsafe impl ZeroedC for libc::sockaddr_storage {}
// SAFETY: an array of valid all-zero values.
unsafe impl<T: ZeroedC, const N: usize> ZeroedC for [T; N] {}

/// `n` all-zero values, for buffers allocated once.
pub(crate) fn zeroed_c<T: ZeroedC>(n: usize) -> Box<[T]> {
    // SAFETY: all-zero is a valid `T` (`ZeroedC`'s contract).
    (0..n).map(|_| unsafe { zeroed() }).collect()
}

/// Receive and send buffers asked for on the data sockets: a burst of a few
/// thousand frames waits there while a worker is busy.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// The index of interface `ifname` in the calling thread's network
/// namespace, or `None` when there is none by that name.
pub(crate) fn ifindex(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_option<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: `value` is a live T and its size is passed along.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Asks for `bytes` of receive and send buffer: beyond the sysctl limits
/// when allowed (root: SO_*BUFFORCE), else as much as they allow.
pub(crate) fn set_buffers(fd: BorrowedFd<'_>, bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_option(fd, libc::SOL_SOCKET, force, bytes).is_err() {
            // Best effort: the default buffer still works, just drops sooner.
            let _ = set_option(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
}

/// An `AF_PACKET` socket bound to interface `ifindex` that receives every
/// frame arriving there (`ETH_P_ALL`) but not those sent through it or by the
/// host's stack (`PACKET_IGNORE_OUTGOING`, Linux 4.20; on older kernels the
/// receiver must skip `PACKET_OUTGOING` itself), and that sends frames out of
/// that interface, bypassing its qdisc.
pub(crate) fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = unbound_packet_socket()?;
    // Best effort: see the doc comment.
    let _ = set_option(
        fd.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        1,
    );
    bind_packet_socket(fd, ifindex, libc::ETH_P_ALL as u16)
}

/// From <`linux/if_packet.h`>.
const PACKET_VNET_HDR: libc::c_int = 15;

/// An `AF_PACKET` socket that only sends, out of interface `ifindex`
/// (bypassing its qdisc), every frame behind a `struct virtio_net_hdr`
/// (`PACKET_VNET_HDR`), so that a frame can be a GSO super-frame.
pub(crate) fn injection_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = unbound_packet_socket()?;
    set_option(fd.as_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    // Protocol 0: bound to the interface, it still receives nothing.
    bind_packet_socket(fd, ifindex, 0)
}

/// An `AF_PACKET` socket that sends whole Ethernet frames out of interface
/// `ifindex`, bypassing its qdisc (so a frame leaves even before the kernel
/// has given a link that just came up its real qdisc), and receives nothing.
pub(crate) fn send_socket(ifindex: u32) -> io::Result<OwnedFd> {
    bind_packet_socket(unbound_packet_socket()?, ifindex, 0)
}

/// A raw packet socket with protocol 0, which receives nothing until bound
/// (so no frame of another interface slips in before `bind`), that sends
/// bypassing the qdisc (best effort) through large buffers.
fn unbound_packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            0,
        ))?)
    };
    let _ = set_option(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    set_buffers(fd.as_fd(), SOCKET_BUFFER);
    Ok(fd)
}

/// Binds packet socket `fd` to interface `ifindex`, receiving `protocol`
/// (an `ETH_P`_* value; 0 for nothing).
fn bind_packet_socket(fd: OwnedFd, ifindex: u32, protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `addr` is a live sockaddr_ll and its size is passed along.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The packet type of a frame received on a packet socket (`sll_pkttype`).
pub(crate) const fn packet_type(addr: &libc::sockaddr_storage) -> u8 {
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_ll.
    let ll = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_ll>() };
    ll.sll_pkttype
}

pub(crate) use libc::PACKET_OUTGOING;

/// `SO_MEMINFO` (asm-generic), for the count of packets the kernel dropped
/// because the socket's receive queue was full.
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

/// How many packets the kernel dropped for `fd` since it was opened, for a
/// full receive queue (UDP, and packet sockets, which count `tp_drops` there too).
pub(crate) fn socket_drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a live buffer of `len` bytes; the kernel writes at most that.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    })?;
    Ok(u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
}

/// Makes blocking receives on `fd` give up after `timeout` (EAGAIN), so a
/// worker blocked there checks now and then whether it should stop.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv)
}

/// Writes `addr` as a C socket address for a socket of family `family`
/// (an IPv4 address becomes IPv4-mapped for an `AF_INET6` socket); returns
/// its length.
pub(crate) fn write_sockaddr(
    addr: &SocketAddr,
    family: libc::c_int,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let v6 = |out: &mut libc::sockaddr_storage, ip: Ipv6Addr, port: u16, flow: u32, scope: u32| {
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
        let sin6 = unsafe { &mut *(&raw mut *out).cast::<libc::sockaddr_in6>() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = port.to_be();
        sin6.sin6_flowinfo = flow;
        sin6.sin6_addr = libc::in6_addr {
            s6_addr: ip.octets(),
        };
        sin6.sin6_scope_id = scope;
        size_of::<libc::sockaddr_in6>() as libc::socklen_t
    };
    match addr {
        SocketAddr::V4(a) if family == libc::AF_INET6 => {
            v6(out, a.ip().to_ipv6_mapped(), a.port(), 0, 0)
        }
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut *out).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => v6(out, *a.ip(), a.port(), a.flowinfo(), a.scope_id()),
    }
}

/// Reads a C socket address; IPv4-mapped IPv6 addresses come back as IPv4,
/// so that they compare equal to the addresses the control plane gives.
pub(crate) fn read_sockaddr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4; everything else as it is.
pub(crate) const fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Waits up to `timeout` for `fd` to be readable; false on timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&raw mut poll, 1, ms) > 0 }
}

/// Whether any of `fds` (at most four) is readable now, without waiting:
/// one `poll` with a zero timeout, for a worker that spins before it sleeps.
pub(crate) fn any_readable(fds: &[BorrowedFd<'_>]) -> bool {
    let mut polls = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    debug_assert!(fds.len() <= polls.len(), "{} descriptors", fds.len());
    let n = fds.len().min(polls.len());
    for (poll, fd) in polls.iter_mut().zip(fds) {
        poll.fd = fd.as_raw_fd();
    }
    // SAFETY: `n` live pollfds; a zero timeout never blocks.
    unsafe { libc::poll(polls.as_mut_ptr(), n as libc::nfds_t, 0) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_readable_sees_a_queued_datagram_without_waiting() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let idle = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!any_readable(&[rx.as_fd(), idle.as_fd()]));
        idle.send_to(&[1], rx.local_addr().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !any_readable(&[idle.as_fd(), rx.as_fd()]) {
            assert!(std::time::Instant::now() < deadline, "never readable");
        }
    }

    #[test]
    fn socket_addresses_round_trip() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let v4: SocketAddr = "192.168.250.1:6784".parse().unwrap();
        write_sockaddr(&v4, libc::AF_INET, &mut storage);
        assert_eq!(read_sockaddr(&storage), Some(v4));
        // Through an IPv6 socket: mapped on the way out, plain IPv4 back.
        let len = write_sockaddr(&v4, libc::AF_INET6, &mut storage);
        assert_eq!(len as usize, size_of::<libc::sockaddr_in6>());
        assert_eq!(libc::c_int::from(storage.ss_family), libc::AF_INET6);
        assert_eq!(read_sockaddr(&storage), Some(v4));
        let v6: SocketAddr = "[fd00::1]:6784".parse().unwrap();
        write_sockaddr(&v6, libc::AF_INET6, &mut storage);
        assert_eq!(read_sockaddr(&storage), Some(v6));
    }

    #[test]
    fn socket_drops_counts_a_full_receive_queue() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(rx.as_fd()).unwrap(), 0);
        // The smallest buffer the kernel allows holds a few datagrams at most;
        // loopback delivers synchronously, so the rest are dropped now.
        set_option(rx.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1).unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        assert!(socket_drops(rx.as_fd()).unwrap() > 100);
    }

    #[test]
    fn a_blocking_receive_times_out() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_recv_timeout(rx.as_fd(), Duration::from_millis(20)).unwrap();
        let started = std::time::Instant::now();
        let e = rx.recv(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(started.elapsed() >= Duration::from_millis(15));
    }
}
