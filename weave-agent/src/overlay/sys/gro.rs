//! Batched receives with UDP generic receive offload (`UDP_GRO`), the
//! counterpart of `gso`: a datagram a peer sent with `UDP_SEGMENT` reaches
//! the socket whole, as one buffer of up to 64 segments of one size, instead
//! of being cut into one skb per VXLAN packet before the socket queue. Over
//! a veth underlay that saves the receiving IP/UDP stack and socket queue
//! a pass per packet; `recvmmsg` then hands over several such datagrams
//! per call.
//!
//! A datagram sent without GSO (a plain peer, a lone packet) arrives as
//! one segment. Kernels without `UDP_GRO` only ever give those.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::null_mut;

use super::zeroed_c;

/// From <linux/udp.h>.
const UDP_GRO: libc::c_int = 104;
/// Room for the largest UDP payload (65507 bytes over IPv4).
const BUFFER: usize = 1 << 16;

/// Room for one cmsg carrying an int (the segment size).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 24]);

/// Asks the kernel to keep GSO datagrams whole up to this socket.
pub(crate) fn enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live int and its size is passed along.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One received datagram: its bytes, cut into segments of `segment` bytes
/// (the last one may be shorter).
pub(crate) struct Datagram<'a> {
    pub bytes: &'a [u8],
    /// Where `bytes` start in [`GroRecv::buffers`].
    pub at: usize,
    pub segment: usize,
    /// Where it came from.
    pub addr: &'a libc::sockaddr_storage,
    /// It did not fit the buffer (or its control data did not): not to be used.
    pub truncated: bool,
}

impl<'a> Datagram<'a> {
    /// Its segments; an empty datagram is one empty segment, so that it is
    /// judged (and counted as a drop) like any other packet, not skipped.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let empty = self.bytes.is_empty().then_some(self.bytes);
        self.bytes.chunks(self.segment.max(1)).chain(empty)
    }
}

/// `count` receive buffers of 64 KiB, reused for every batch.
pub(crate) struct GroRecv {
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[SegmentCmsg]>,
    msgs: Box<[libc::mmsghdr]>,
    received: usize,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: the raw pointers in `iovs` and `msgs` point only into the
// receiver's own boxes, and are rewritten before each use.
unsafe impl Send for GroRecv {}

impl GroRecv {
    pub(crate) fn new(count: usize) -> Self {
        let count = count.max(1);
        Self {
            bufs: vec![0; count * BUFFER].into_boxed_slice(),
            iovs: zeroed_c(count),
            addrs: zeroed_c(count),
            cmsgs: vec![SegmentCmsg([0; 24]); count].into_boxed_slice(),
            msgs: zeroed_c(count),
            received: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Receives up to `count` datagrams: takes whatever is queued, after
    /// waiting for the first if `wait` (up to the socket's receive timeout);
    /// `WouldBlock` when none came.
    pub(crate) fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        count: usize,
        wait: bool,
    ) -> io::Result<usize> {
        self.received = 0;
        let n = count.clamp(1, self.msgs.len());
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * BUFFER..].as_mut_ptr().cast(),
                iov_len: BUFFER,
            };
            let msg = &mut self.msgs[i];
            msg.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = &raw mut self.iovs[i];
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = size_of::<SegmentCmsg>();
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: messages 0..n point at live iovecs, addresses and control
        // buffers owned by `self`, of the lengths given.
        let got = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                if wait {
                    libc::MSG_WAITFORONE
                } else {
                    libc::MSG_DONTWAIT
                },
                null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = got as usize;
        Ok(self.received)
    }

    pub(crate) const fn len(&self) -> usize {
        self.received
    }

    /// Every receive buffer, back to back: where datagrams' packets are
    /// read and rewritten in place (opened, sealed again) by offset
    /// ([`Datagram::at`]).
    pub(crate) fn buffers(&self) -> &[u8] {
        &self.bufs
    }

    pub(crate) fn buffers_mut(&mut self) -> &mut [u8] {
        &mut self.bufs
    }

    /// Datagram `i` of the last batch.
    pub(crate) fn get(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let msg = &self.msgs[i];
        let len = (msg.msg_len as usize).min(BUFFER);
        let truncated = msg.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        Datagram {
            bytes: &self.bufs[i * BUFFER..i * BUFFER + len],
            at: i * BUFFER,
            segment: segment_size(&msg.msg_hdr).unwrap_or(len),
            addr: &self.addrs[i],
            truncated,
        }
    }
}

/// The segment size the kernel reported for a GRO datagram, if any.
fn segment_size(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` was filled in by recvmmsg, its control pointer and
    // length describe this receiver's cmsg buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header CMSG_FIRSTHDR/NXTHDR returned lies
        // inside the control buffer, its data (an int for UDP_GRO) too.
        unsafe {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd as _;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::overlay::sys::gso::GsoQueue;
    use crate::overlay::wire::vxlan;

    /// Everything that arrives within the deadline, as (segment size, segments).
    fn receive(rx: &UdpSocket, segments: usize) -> Vec<(usize, Vec<Vec<u8>>)> {
        let mut recv = GroRecv::new(4);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got
            .iter()
            .map(|(_, s): &(usize, Vec<_>)| s.len())
            .sum::<usize>()
            < segments
        {
            assert!(Instant::now() < deadline, "got {got:?}");
            match recv.recv(rx.as_fd(), 4, true) {
                Ok(n) => {
                    for i in 0..n {
                        let d = recv.get(i);
                        assert!(!d.truncated);
                        got.push((d.segment, d.segments().map(<[u8]>::to_vec).collect()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        got
    }

    #[test]
    fn a_gso_datagram_arrives_whole_and_cuts_into_its_packets() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        enable(rx.as_fd()).expect("UDP_GRO (Linux 5.0)");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // Ten frames of 100 bytes and a short last one: one GSO datagram.
        let frames: Vec<Vec<u8>> = (0..11u8)
            .map(|n| vec![n; if n == 10 { 30 } else { 100 }])
            .collect();
        let mut queue = GsoQueue::new(16, libc::AF_INET);
        let mut batch = queue.batch(tx.as_fd());
        for frame in &frames {
            batch.push(vxlan::header(7), frame, &to);
        }
        assert_eq!(batch.finish().sent, 11);

        let got = receive(&rx, 11);
        assert_eq!(got.len(), 1, "one datagram, kept whole");
        let (segment, packets) = &got[0];
        assert_eq!(*segment, vxlan::HEADER_LEN + 100);
        for (packet, frame) in packets.iter().zip(&frames) {
            assert_eq!(&packet[..vxlan::HEADER_LEN], &vxlan::header(7));
            assert_eq!(&packet[vxlan::HEADER_LEN..], &**frame);
        }
    }

    #[test]
    fn without_waiting_an_empty_socket_says_so_at_once() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A receive that waited would block for good: no timeout set.
        let mut recv = GroRecv::new(4);
        let e = recv.recv(rx.as_fd(), 4, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[3; 40], rx.local_addr().unwrap()).unwrap();
        assert_eq!(receive(&rx, 1), vec![(40, vec![vec![3; 40]])]);
    }

    #[test]
    fn an_empty_datagram_is_one_empty_segment() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        enable(rx.as_fd()).expect("UDP_GRO (Linux 5.0)");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[], rx.local_addr().unwrap()).unwrap();
        assert_eq!(receive(&rx, 1), vec![(0, vec![vec![]])]);
    }

    #[test]
    fn an_ordinary_datagram_is_one_segment() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        enable(rx.as_fd()).expect("UDP_GRO (Linux 5.0)");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1; 300], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[2; 20], rx.local_addr().unwrap()).unwrap();
        let got = receive(&rx, 2);
        assert_eq!(
            got,
            vec![(300, vec![vec![1; 300]]), (20, vec![vec![2; 20]])]
        );
    }
}
