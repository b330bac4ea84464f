//! Batched sends with UDP generic segmentation offload (`UDP_SEGMENT`):
//! consecutive VXLAN packets to one peer with one VNI and one size travel
//! as a single datagram of up to [`MAX_SEGMENTS`] segments, which the
//! kernel (or the NIC) cuts up as late as possible. Over a veth underlay it
//! is never cut before the receiving socket, so the per-packet cost of the
//! UDP/IP stacks is paid once per up to 64 KiB. A receiver without `UDP_GRO`
//! gets ordinary datagrams (the kernel segments for it).
//!
//! One `sendmmsg` per batch as in `mmsg`, with the same zero-copy gathering
//! of [header, frame] iovecs. When the kernel refuses a `UDP_SEGMENT`
//! datagram (see [`refusal`]), its segments go one datagram each, and so do
//! later frames to that peer (or to every peer, when the kernel has no UDP
//! GSO at all): the refusal depends on the path, so peers whose path takes
//! GSO keep it. Every refused datagram is counted (`SendOutcome::gso_refused`),
//! and every segment that could not be sent either is counted as failed.

use std::io;
use std::marker::PhantomData;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, BorrowedFd};

use super::zeroed_c;
use std::ptr::null_mut;

use crate::overlay::sys::mmsg::SendOutcome;
use crate::overlay::sys::{read_sockaddr, write_sockaddr};
use crate::overlay::wire::vxlan;

/// Segments in one datagram (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// A datagram's payload stays below the IPv4 limit.
const MAX_DATAGRAM: usize = 65_000;
/// From <linux/udp.h>.
const UDP_SEGMENT: libc::c_int = 103;

/// Destinations remembered as refusing GSO, at most (more peers than this
/// on paths that refuse it: the list starts again, at the cost of one more
/// refused datagram each).
const MAX_REFUSED: usize = 256;

/// Room for one cmsg carrying a u16.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 24]);

pub(crate) struct GsoQueue {
    family: libc::c_int,
    /// Whether the kernel takes `UDP_SEGMENT` at all (false once it said it
    /// does not know it).
    gso: bool,
    /// Destinations whose datagrams the kernel refused with `UDP_SEGMENT`.
    refused: Vec<SocketAddr>,
    headers: Box<[[u8; vxlan::HEADER_LEN]]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[SegmentCmsg]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Segments in each message.
    segments: Box<[u32]>,
    len: usize,
    iov_len: usize,
    /// The open message: where it goes, its header, its segment size,
    /// its payload so far, and whether a short (last) segment closed it.
    open: Option<Open>,
}

#[derive(Clone, Copy)]
struct Open {
    to: SocketAddr,
    header: [u8; vxlan::HEADER_LEN],
    segment: usize,
    bytes: usize,
    closed: bool,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: as `mmsg::SendQueue`: pointers only within one batch, into the
// queue itself and into data the batch borrows.
unsafe impl Send for GsoQueue {}

impl GsoQueue {
    /// Room for `capacity` frames (and as many messages).
    pub(crate) fn new(capacity: usize, family: libc::c_int) -> Self {
        let capacity = capacity.max(1);
        Self {
            family,
            gso: true,
            refused: Vec::new(),
            headers: vec![[0; vxlan::HEADER_LEN]; capacity].into_boxed_slice(),
            iovs: zeroed_c(capacity * 2),
            addrs: zeroed_c(capacity),
            cmsgs: vec![SegmentCmsg([0; 24]); capacity].into_boxed_slice(),
            msgs: zeroed_c(capacity),
            segments: vec![0; capacity].into_boxed_slice(),
            len: 0,
            iov_len: 0,
            open: None,
        }
    }

    /// Whether datagrams to `to` may carry several segments.
    fn gso_to(&self, to: &SocketAddr) -> bool {
        self.gso && (self.refused.is_empty() || !self.refused.contains(to))
    }

    /// Remembers that the kernel refused a GSO datagram to `to` for `why`.
    fn refuse(&mut self, to: SocketAddr, why: Refusal, error: &io::Error) {
        match why {
            Refusal::Everywhere => {
                self.gso = false;
                tracing::info!(%error, "no UDP GSO in this kernel: sending one datagram per frame");
            }
            Refusal::Path => {
                if self.refused.contains(&to) {
                    return;
                }
                if self.refused.len() == MAX_REFUSED {
                    self.refused.clear();
                }
                self.refused.push(to);
                tracing::info!(%error, peer = %to, "UDP GSO refused on the way to a peer: sending it one datagram per frame");
            }
        }
    }

    pub(crate) fn batch<'q, 'd>(&'q mut self, fd: BorrowedFd<'q>) -> GsoBatch<'q, 'd> {
        self.len = 0;
        self.iov_len = 0;
        self.open = None;
        GsoBatch {
            queue: self,
            fd,
            outcome: SendOutcome::default(),
            _data: PhantomData,
        }
    }
}

pub(crate) struct GsoBatch<'q, 'd> {
    queue: &'q mut GsoQueue,
    fd: BorrowedFd<'q>,
    outcome: SendOutcome,
    _data: PhantomData<&'d [u8]>,
}

impl<'d> GsoBatch<'_, 'd> {
    /// Queues `frame` after `header` to `to`: into the open datagram when
    /// it can join it, else as the start of a new one.
    pub(crate) fn push(
        &mut self,
        header: [u8; vxlan::HEADER_LEN],
        frame: &'d [u8],
        to: &SocketAddr,
    ) {
        let size = vxlan::HEADER_LEN + frame.len();
        // A datagram joined needs two more iovecs too: a batch with more
        // segments than the queue has room for (a super-frame cut into
        // dozens) is flushed early rather than overrun.
        let joins = self.queue.gso_to(to)
            && self.queue.iov_len + 2 <= self.queue.iovs.len()
            && self.queue.open.is_some_and(|o| {
                !o.closed
                    && o.to == *to
                    && o.header == header
                    && size <= o.segment
                    && o.bytes + size <= MAX_DATAGRAM
                    && (self.queue.segments[self.queue.len - 1] as usize) < MAX_SEGMENTS
            });
        if !joins {
            if self.queue.len == self.queue.msgs.len()
                || self.queue.iov_len + 2 > self.queue.iovs.len()
            {
                self.flush();
            }
            self.start(header, to, size);
        }
        let q = &mut *self.queue;
        let m = q.len - 1;
        let i = q.iov_len;
        q.iovs[i] = libc::iovec {
            iov_base: q.headers[m].as_mut_ptr().cast(),
            iov_len: vxlan::HEADER_LEN,
        };
        q.iovs[i + 1] = libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        };
        q.iov_len += 2;
        q.msgs[m].msg_hdr.msg_iovlen += 2;
        q.segments[m] += 1;
        if let Some(open) = &mut q.open {
            open.bytes += size;
            // A shorter segment must be the last one.
            open.closed = size < open.segment;
        }
    }

    fn start(&mut self, header: [u8; vxlan::HEADER_LEN], to: &SocketAddr, size: usize) {
        let q = &mut *self.queue;
        let m = q.len;
        q.headers[m] = header;
        let addr_len = write_sockaddr(to, q.family, &mut q.addrs[m]);
        let msg = &mut q.msgs[m];
        msg.msg_hdr.msg_name = (&raw mut q.addrs[m]).cast();
        msg.msg_hdr.msg_namelen = addr_len;
        msg.msg_hdr.msg_iov = &raw mut q.iovs[q.iov_len];
        msg.msg_hdr.msg_iovlen = 0;
        msg.msg_hdr.msg_control = null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
        q.segments[m] = 0;
        q.len += 1;
        q.open = Some(Open {
            to: *to,
            header,
            segment: size,
            bytes: 0,
            closed: false,
        });
    }

    /// Sends what is queued and tells how it went (in frames).
    pub(crate) fn finish(mut self) -> SendOutcome {
        self.flush();
        std::mem::take(&mut self.outcome)
    }

    fn flush(&mut self) {
        let q = &mut *self.queue;
        // Datagrams of several segments say their segment size.
        for m in 0..q.len {
            // Push only joins frames to destinations that may take it.
            if q.segments[m] > 1 {
                // SAFETY: the message's first iovecs are its first segment.
                let segment = unsafe {
                    let iov = q.msgs[m].msg_hdr.msg_iov;
                    (*iov).iov_len + (*iov.add(1)).iov_len
                };
                write_segment_cmsg(&mut q.cmsgs[m], segment as u16);
                q.msgs[m].msg_hdr.msg_control = q.cmsgs[m].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure computation.
                q.msgs[m].msg_hdr.msg_controllen =
                    unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            }
        }
        let mut start = 0;
        while start < q.len {
            // SAFETY: messages start..len point at iovecs, headers, addresses
            // and cmsgs inside the queue, and at frames borrowed for 'd.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    q.msgs[start..].as_mut_ptr(),
                    (q.len - start) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A refused datagram goes again one datagram per segment;
                // so does any later one of this flush that the kernel refuses
                // too (its cmsg was written before the first refusal).
                if q.segments[start] > 1
                    && let Some(why) = refusal(&error)
                {
                    self.outcome.gso_refused += 1;
                    if let Some(to) = read_sockaddr(&q.addrs[start]) {
                        q.refuse(to, why, &error);
                    }
                    send_segments(
                        self.fd,
                        &q.msgs[start],
                        q.segments[start],
                        &mut self.outcome,
                    );
                    start += 1;
                    continue;
                }
                self.outcome.failed += u64::from(q.segments[start]);
                self.outcome.first_error.get_or_insert(error);
                start += 1;
            } else {
                let n = n as usize;
                self.outcome.sent += q.segments[start..start + n]
                    .iter()
                    .map(|&s| u64::from(s))
                    .sum::<u64>();
                start += n;
            }
        }
        q.len = 0;
        q.iov_len = 0;
        q.open = None;
    }
}

impl Drop for GsoBatch<'_, '_> {
    fn drop(&mut self) {
        self.queue.len = 0;
        self.queue.iov_len = 0;
        self.queue.open = None;
    }
}

/// Why the kernel refused a datagram of several segments, if it did:
/// - `EIO`: the route passes through `IPsec` (xfrm), or (before Linux 6.11)
///   the egress device cannot checksum (`ethtool -K DEV tx off`); since
///   6.11 the kernel checksums in software and sends it;
/// - `EMSGSIZE`: a segment is larger than the path MTU (a route with a
///   smaller, locked MTU), where a single datagram is fragmented instead;
/// - `EINVAL`: a socket with UDP checksums off (`SO_NO_CHECK`), or more
///   segments than the kernel's `UDP_MAX_SEGMENTS`;
/// - `ENOPROTOOPT`, `EOPNOTSUPP`: no UDP GSO in this kernel, for any peer.
fn refusal(error: &io::Error) -> Option<Refusal> {
    match error.raw_os_error()? {
        libc::EIO | libc::EMSGSIZE | libc::EINVAL => Some(Refusal::Path),
        libc::ENOPROTOOPT | libc::EOPNOTSUPP => Some(Refusal::Everywhere),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// This destination's path (or this socket) cannot take it.
    Path,
    /// The kernel cannot, whatever the destination.
    Everywhere,
}

/// Sends the segments of `msg` one datagram each, counting into `outcome`
/// those that went and those that did not (with the first error).
fn send_segments(
    fd: BorrowedFd<'_>,
    msg: &libc::mmsghdr,
    segments: u32,
    outcome: &mut SendOutcome,
) {
    let iov = msg.msg_hdr.msg_iov;
    for s in 0..segments as usize {
        // SAFETY: all-zero is a valid msghdr.
        let mut one: libc::msghdr = unsafe { zeroed() };
        one.msg_name = msg.msg_hdr.msg_name;
        one.msg_namelen = msg.msg_hdr.msg_namelen;
        // SAFETY: segment `s` is the message's iovecs 2s and 2s + 1.
        one.msg_iov = unsafe { iov.add(2 * s) };
        one.msg_iovlen = 2;
        loop {
            // SAFETY: `one` points at live iovecs and the address.
            if unsafe { libc::sendmsg(fd.as_raw_fd(), &raw const one, 0) } >= 0 {
                outcome.sent += 1;
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                outcome.failed += 1;
                outcome.first_error.get_or_insert(error);
                break;
            }
        }
    }
}

fn write_segment_cmsg(buf: &mut SegmentCmsg, segment: u16) {
    buf.0 = [0; 24];
    let cmsg = std::ptr::from_mut(buf).cast::<libc::cmsghdr>();
    // SAFETY: the buffer is aligned for cmsghdr (`SegmentCmsg` is aligned
    // to 8) and CMSG_SPACE(2) <= 24.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(segment);
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd as _;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::overlay::sys::gro::{self, GroRecv};

    /// Runs `f` on a thread in a network namespace of its own (gone with the
    /// thread), whose loopback is up and whose route to 127.0.0.2 has a
    /// locked MTU of 600 bytes: a GSO datagram of larger segments to
    /// 127.0.0.2 is refused (EMSGSIZE), a single datagram is fragmented.
    fn in_netns_with_a_narrow_path<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare(2) of this thread's network namespace only.
                let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert!(
                    unshared == 0,
                    "this test needs root (CAP_SYS_ADMIN) for a network namespace of its own: {}",
                    io::Error::last_os_error()
                );
                // Children of this thread start in its namespace.
                for args in [
                    &["link", "set", "lo", "up"][..],
                    &[
                        "route",
                        "add",
                        "local",
                        "127.0.0.2/32",
                        "dev",
                        "lo",
                        "table",
                        "local",
                        "mtu",
                        "lock",
                        "600",
                    ],
                ] {
                    let status = Command::new("ip").args(args).status().expect("running ip");
                    assert!(status.success(), "ip {args:?}: {status}");
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn receiver(ip: &str) -> (UdpSocket, SocketAddr) {
        let rx = UdpSocket::bind((ip, 0)).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let addr = rx.local_addr().unwrap();
        (rx, addr)
    }

    /// The next `count` datagrams on `rx`: (segment size, segments), with
    /// `UDP_GRO` on (whole GSO datagrams) or off (one datagram per segment).
    fn receive(rx: &UdpSocket, count: usize) -> Vec<(usize, Vec<Vec<u8>>)> {
        let mut recv = GroRecv::new(count);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got
            .iter()
            .map(|(_, s): &(usize, Vec<_>)| s.len())
            .sum::<usize>()
            < count
        {
            assert!(Instant::now() < deadline, "only got {got:?}");
            match recv.recv(rx.as_fd(), count, true) {
                Ok(n) => got.extend((0..n).map(|i| {
                    let d = recv.get(i);
                    (d.segment, d.segments().map(<[u8]>::to_vec).collect())
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        got
    }

    fn packet(vni: u32, frame: &[u8]) -> Vec<u8> {
        [&vxlan::header(vni)[..], frame].concat()
    }

    /// Regression: the first refused datagram of a flush was split, the
    /// next ones (their cmsg already written) were refused too and dropped.
    /// Now each goes one datagram per segment; the refusals are counted; a
    /// later batch sends to that peer without trying GSO, and another peer,
    /// whose path takes it, keeps GSO.
    #[test]
    fn every_refused_datagram_of_a_flush_is_split_and_counted() {
        in_netns_with_a_narrow_path(|| {
            let (narrow, narrow_addr) = receiver("127.0.0.2");
            let (wide, wide_addr) = receiver("127.0.0.1");
            gro::enable(wide.as_fd()).expect("UDP_GRO (Linux 5.0)");
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            // To the narrow peer: five frames and a short one (closing the
            // datagram), five more (a second datagram); to the wide one, five.
            let mut frames: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
            frames.extend((0..5u8).map(|n| (vec![n; 1000], narrow_addr)));
            frames.push((vec![5; 500], narrow_addr));
            frames.extend((6..11u8).map(|n| (vec![n; 1000], narrow_addr)));
            frames.extend((11..16u8).map(|n| (vec![n; 1000], wide_addr)));
            let mut queue = GsoQueue::new(16, libc::AF_INET);
            let mut batch = queue.batch(tx.as_fd());
            for (frame, to) in &frames {
                batch.push(vxlan::header(7), frame, to);
            }
            let outcome = batch.finish();
            assert_eq!(
                (outcome.sent, outcome.failed, outcome.gso_refused),
                (16, 0, 2),
                "{:?}",
                outcome.first_error
            );
            assert_eq!(queue.refused, [narrow_addr]);
            // Fragmented on the way, reassembled: one datagram per frame.
            let got = receive(&narrow, 11);
            let expected: Vec<_> = frames[..11]
                .iter()
                .map(|(f, _)| (8 + f.len(), vec![packet(7, f)]))
                .collect();
            assert_eq!(got, expected);
            let got = receive(&wide, 5);
            assert_eq!(got.len(), 1, "one GSO datagram to the peer that takes it");
            assert_eq!(
                got[0].1,
                frames[11..]
                    .iter()
                    .map(|(f, _)| packet(7, f))
                    .collect::<Vec<_>>()
            );

            // Next batch: no more refusals, the narrow peer gets singles.
            let mut batch = queue.batch(tx.as_fd());
            for (frame, to) in &frames[..5] {
                batch.push(vxlan::header(7), frame, to);
            }
            let outcome = batch.finish();
            assert_eq!(
                (outcome.sent, outcome.failed, outcome.gso_refused),
                (5, 0, 0)
            );
            assert_eq!(receive(&narrow, 5).len(), 5);
        });
    }

    /// Regression: segments that could not be sent one by one either were
    /// not counted anywhere. With "don't fragment" on the socket, a single
    /// datagram larger than the narrow path fails too: every one counts.
    #[test]
    fn segments_that_fail_one_by_one_are_counted_as_failed() {
        in_netns_with_a_narrow_path(|| {
            let (_narrow, narrow_addr) = receiver("127.0.0.2");
            let (wide, wide_addr) = receiver("127.0.0.1");
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let do_not_fragment: libc::c_int = libc::IP_PMTUDISC_DO;
            // SAFETY: setsockopt with a live c_int of the size given.
            let set = unsafe {
                libc::setsockopt(
                    tx.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    (&raw const do_not_fragment).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "{}", io::Error::last_os_error());
            let frames: Vec<Vec<u8>> = (0..4u8).map(|n| vec![n; 1000]).collect();
            let mut queue = GsoQueue::new(16, libc::AF_INET);
            let mut batch = queue.batch(tx.as_fd());
            for frame in &frames {
                batch.push(vxlan::header(7), frame, &narrow_addr);
            }
            for frame in &frames[..3] {
                batch.push(vxlan::header(7), frame, &wide_addr);
            }
            let outcome = batch.finish();
            assert_eq!(
                (outcome.sent, outcome.failed, outcome.gso_refused),
                (3, 4, 1)
            );
            assert_eq!(
                outcome.first_error.and_then(|e| e.raw_os_error()),
                Some(libc::EMSGSIZE)
            );
            assert_eq!(receive(&wide, 3).len(), 3);
        });
    }

    /// Frames of one size to one peer go as one datagram; a receiver without
    /// `UDP_GRO` still gets one datagram per frame, in order, intact.
    #[test]
    fn segments_arrive_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut frames: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; 100]).collect();
        frames.push(vec![10; 40]); // shorter: closes the datagram
        frames.push(vec![11; 100]); // starts a new one
        let mut queue = GsoQueue::new(16, libc::AF_INET);
        let mut batch = queue.batch(tx.as_fd());
        for frame in &frames {
            batch.push(vxlan::header(7), frame, &to);
        }
        let outcome = batch.finish();
        assert_eq!(
            (outcome.sent, outcome.failed),
            (12, 0),
            "{:?}",
            outcome.first_error
        );
        let mut buf = [0u8; 2048];
        for frame in &frames {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..8], &vxlan::header(7));
            assert_eq!(&buf[8..n], &**frame);
        }
    }
}
