//! Batched sends with UDP generic segmentation offload (`UDP_SEGMENT`):
//! consecutive VXLAN packets to one peer with one VNI and one size travel
//! as a single datagram of up to [`MAX_SEGMENTS`] segments, which the
//! kernel (or the NIC) cuts up as late as possible. Over a veth underlay it
//! is never cut before the receiving socket, so the per-packet cost of the
//! UDP/IP stacks is paid once per up to 64 KiB. A receiver without UDP_GRO
//! gets ordinary datagrams (the kernel segments for it).
//!
//! One `sendmmsg` per batch as in `mmsg`, with the same zero-copy gathering
//! of [header, frame] iovecs; when the kernel refuses `UDP_SEGMENT`, the
//! queue stops asking and sends one datagram per segment.

use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::null_mut;

use super::mmsg::SendOutcome;
use super::sys::write_sockaddr;
use super::vxlan;

/// Segments in one datagram (the kernel's UDP_MAX_SEGMENTS is 64 or more).
pub const MAX_SEGMENTS: usize = 64;
/// A datagram's payload stays below the IPv4 limit.
const MAX_DATAGRAM: usize = 65_000;
/// From <linux/udp.h>.
const UDP_SEGMENT: libc::c_int = 103;

/// Room for one cmsg carrying a u16.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 24]);

pub struct GsoQueue {
    family: libc::c_int,
    /// Whether the kernel takes UDP_SEGMENT (false after it refused once).
    gso: bool,
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

// SAFETY: as `mmsg::SendQueue`: pointers only within one batch, into the
// queue itself and into data the batch borrows.
unsafe impl Send for GsoQueue {}

impl GsoQueue {
    /// Room for `capacity` frames (and as many messages).
    pub fn new(capacity: usize, family: libc::c_int) -> Self {
        let capacity = capacity.max(1);
        Self {
            family,
            gso: true,
            headers: vec![[0; vxlan::HEADER_LEN]; capacity].into_boxed_slice(),
            // SAFETY (all): all-zero is a valid value of these C structs.
            iovs: (0..capacity * 2).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![SegmentCmsg([0; 24]); capacity].into_boxed_slice(),
            msgs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            segments: vec![0; capacity].into_boxed_slice(),
            len: 0,
            iov_len: 0,
            open: None,
        }
    }

    pub fn batch<'q, 'd>(&'q mut self, fd: BorrowedFd<'q>) -> GsoBatch<'q, 'd> {
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

pub struct GsoBatch<'q, 'd> {
    queue: &'q mut GsoQueue,
    fd: BorrowedFd<'q>,
    outcome: SendOutcome,
    _data: PhantomData<&'d [u8]>,
}

impl<'d> GsoBatch<'_, 'd> {
    /// Queues `frame` after `header` to `to`: into the open datagram when
    /// it can join it, else as the start of a new one.
    pub fn push(&mut self, header: [u8; vxlan::HEADER_LEN], frame: &'d [u8], to: &SocketAddr) {
        let size = vxlan::HEADER_LEN + frame.len();
        let joins = self.queue.gso
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
    pub fn finish(mut self) -> SendOutcome {
        self.flush();
        std::mem::take(&mut self.outcome)
    }

    fn flush(&mut self) {
        let q = &mut *self.queue;
        // Datagrams of several segments say their segment size.
        for m in 0..q.len {
            if q.segments[m] > 1 && q.gso {
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
                if q.segments[start] > 1
                    && q.gso
                    && matches!(
                        error.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    )
                {
                    // No UDP GSO here: send this datagram's segments one by one.
                    q.gso = false;
                    tracing::info!(%error, "UDP GSO refused: sending one datagram per frame");
                    self.outcome.sent +=
                        send_segments(self.fd, &mut q.msgs[start], q.segments[start]);
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

/// Sends the segments of `msg` one datagram each; returns how many went.
fn send_segments(fd: BorrowedFd<'_>, msg: &mut libc::mmsghdr, segments: u32) -> u64 {
    let iov = msg.msg_hdr.msg_iov;
    let mut sent = 0;
    for s in 0..segments as usize {
        // SAFETY: one message of two iovecs out of the original's.
        let mut one: libc::msghdr = unsafe { zeroed() };
        one.msg_name = msg.msg_hdr.msg_name;
        one.msg_namelen = msg.msg_hdr.msg_namelen;
        one.msg_iov = unsafe { iov.add(2 * s) };
        one.msg_iovlen = 2;
        // SAFETY: `one` points at live iovecs and the address.
        if unsafe { libc::sendmsg(fd.as_raw_fd(), &one, 0) } >= 0 {
            sent += 1;
        }
    }
    sent
}

fn write_segment_cmsg(buf: &mut SegmentCmsg, segment: u16) {
    buf.0 = [0; 24];
    // SAFETY: the buffer is aligned for cmsghdr and CMSG_SPACE(2) <= 24.
    unsafe {
        let cmsg = buf.0.as_mut_ptr().cast::<libc::cmsghdr>();
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(segment);
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::*;

    /// Frames of one size to one peer go as one datagram; a receiver without
    /// UDP_GRO still gets one datagram per frame, in order, intact.
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
            assert_eq!(&buf[8..n], &frame[..]);
        }
    }
}
