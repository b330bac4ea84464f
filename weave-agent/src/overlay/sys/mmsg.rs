//! Batched socket I/O: `recvmmsg` into buffers allocated once, `sendmmsg`
//! of (optional VXLAN header, frame) pairs gathered straight from those
//! buffers, so the hot path neither allocates nor copies frames.

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::null_mut;

use super::zeroed_c;

use crate::overlay::sys::{read_sockaddr, write_sockaddr};
use crate::overlay::wire::vxlan;

/// One datagram or frame of a [`RecvBatch`].
pub(crate) struct Received<'a> {
    /// What fits in the slot (all of it unless `truncated`).
    pub data: &'a [u8],
    /// Its real length.
    pub len: usize,
    pub truncated: bool,
    /// Where it came from (`sockaddr_in/in6`, or `sockaddr_ll` on a packet socket).
    pub addr: &'a libc::sockaddr_storage,
}

/// `count` receive slots of `slot` bytes each, reused for every batch.
pub(crate) struct RecvBatch {
    slot: usize,
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
    received: usize,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: the raw pointers in `iovs` and `msgs` point only into the batch's
// own boxes, and are rewritten before each use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(crate) fn new(count: usize, slot: usize) -> Self {
        let count = count.max(1);
        Self {
            slot,
            bufs: vec![0u8; count * slot].into_boxed_slice(),
            iovs: zeroed_c(count),
            addrs: zeroed_c(count),
            msgs: zeroed_c(count),
            received: 0,
        }
    }

    /// Waits for at least one datagram on `fd` (up to the socket's receive
    /// timeout: `WouldBlock` then), and takes whatever else is queued, up to
    /// the batch size, without waiting more. Forgets the previous batch.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let base = self.bufs.as_mut_ptr();
        for (i, ((iov, addr), msg)) in self
            .iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.msgs.iter_mut())
            .enumerate()
        {
            // SAFETY: i * slot + slot <= bufs.len(), so the slot is in bounds.
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.slot;
            msg.msg_hdr.msg_name = (&raw mut *addr).cast();
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = null_mut();
            msg.msg_hdr.msg_controllen = 0;
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: every mmsghdr points at a live iovec over a live slot and
        // a live sockaddr_storage, all owned by `self`, borrowed mutably here.
        // MSG_TRUNC makes msg_len the real length of a longer datagram;
        // MSG_WAITFORONE stops waiting once one has arrived.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    pub(crate) const fn len(&self) -> usize {
        self.received
    }

    pub(crate) fn get(&self, i: usize) -> Received<'_> {
        assert!(
            i < self.received,
            "slot {i} of a batch of {}",
            self.received
        );
        let len = self.msgs[i].msg_len as usize;
        let kept = len.min(self.slot);
        let start = i * self.slot;
        Received {
            data: &self.bufs[start..start + kept],
            len,
            truncated: len > self.slot || self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            addr: &self.addrs[i],
        }
    }
}

impl RecvBatch {
    /// The received bytes of slot `i`, writable (to open a sealed packet in place).
    pub(crate) fn data_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(
            i < self.received,
            "slot {i} of a batch of {}",
            self.received
        );
        let kept = (self.msgs[i].msg_len as usize).min(self.slot);
        let start = i * self.slot;
        &mut self.bufs[start..start + kept]
    }

    /// Keeps only the datagrams for which `keep(data, sender)` is true, in
    /// their order; moves nothing while every datagram is kept.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&[u8], Option<SocketAddr>) -> bool) {
        let mut kept = 0;
        for i in 0..self.received {
            let (data, addr) = {
                let r = self.get(i);
                (r.data, read_sockaddr(r.addr))
            };
            if !keep(data, addr) {
                continue;
            }
            if kept != i {
                let (from, to) = (i * self.slot, kept * self.slot);
                self.bufs.copy_within(from..from + self.slot, to);
                self.addrs[kept] = self.addrs[i];
                self.msgs[kept].msg_len = self.msgs[i].msg_len;
                self.msgs[kept].msg_hdr.msg_flags = self.msgs[i].msg_hdr.msg_flags;
            }
            kept += 1;
        }
        self.received = kept;
    }
}

impl SendOutcome {
    /// Adds up two outcomes (of one worker's batches).
    pub(crate) fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.gso_refused += other.gso_refused;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// What a [`Batch`] did.
#[derive(Debug, Default)]
pub(crate) struct SendOutcome {
    pub sent: u64,
    pub failed: u64,
    /// UDP GSO datagrams the kernel refused (their frames went again one
    /// datagram each, and count in `sent` or `failed`).
    pub gso_refused: u64,
    /// The first error, to log.
    pub first_error: Option<io::Error>,
}

/// Storage for up to `capacity` messages of one `sendmmsg`, reused.
pub(crate) struct SendQueue {
    /// Family of the socket the messages go to, for their addresses.
    family: libc::c_int,
    headers: Box<[[u8; vxlan::HEADER_LEN]]>,
    iovs: Box<[[libc::iovec; 2]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    addr_lens: Box<[libc::socklen_t]>,
    msgs: Box<[libc::mmsghdr]>,
    len: usize,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: between batches the queue holds no pointer (a Batch empties it
// when dropped); within one, only into itself and into data the Batch borrows.
unsafe impl Send for SendQueue {}

impl SendQueue {
    /// `family`: `AF_INET` or `AF_INET6` for a UDP socket (messages carry a
    /// destination); anything else for a bound packet socket (they don't).
    pub(crate) fn new(capacity: usize, family: libc::c_int) -> Self {
        let capacity = capacity.max(1);
        Self {
            family,
            headers: vec![[0; vxlan::HEADER_LEN]; capacity].into_boxed_slice(),
            iovs: zeroed_c(capacity),
            addrs: zeroed_c(capacity),
            addr_lens: vec![0; capacity].into_boxed_slice(),
            msgs: zeroed_c(capacity),
            len: 0,
        }
    }

    /// Starts a batch of messages to `fd` whose data lives at least `'d`.
    pub(crate) fn batch<'q, 'd>(&'q mut self, fd: BorrowedFd<'q>) -> Batch<'q, 'd> {
        self.len = 0;
        Batch {
            queue: self,
            fd,
            outcome: SendOutcome::default(),
            _data: PhantomData,
        }
    }
}

/// Messages queued for one `sendmmsg` (more if they don't fit): borrows the
/// frames it sends, so they cannot change before it is finished.
pub(crate) struct Batch<'q, 'd> {
    queue: &'q mut SendQueue,
    fd: BorrowedFd<'q>,
    outcome: SendOutcome,
    _data: PhantomData<&'d [u8]>,
}

impl<'d> Batch<'_, 'd> {
    /// Queues `data`, after `header` if any, to `to` (ignored on a packet
    /// socket); sends the queue first when it is full.
    pub(crate) fn push(
        &mut self,
        header: Option<[u8; vxlan::HEADER_LEN]>,
        data: &'d [u8],
        to: Option<&SocketAddr>,
    ) {
        if self.queue.len == self.queue.msgs.len() {
            self.flush();
        }
        let q = &mut *self.queue;
        let i = q.len;
        let data_iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        let iovs = if let Some(h) = header {
            q.headers[i] = h;
            q.iovs[i] = [
                libc::iovec {
                    iov_base: q.headers[i].as_mut_ptr().cast(),
                    iov_len: vxlan::HEADER_LEN,
                },
                data_iov,
            ];
            2
        } else {
            q.iovs[i][0] = data_iov;
            1
        };
        q.addr_lens[i] = match to {
            Some(addr) if q.family == libc::AF_INET || q.family == libc::AF_INET6 => {
                write_sockaddr(addr, q.family, &mut q.addrs[i])
            }
            _ => 0,
        };
        let msg = &mut q.msgs[i];
        msg.msg_hdr.msg_name = if q.addr_lens[i] == 0 {
            null_mut()
        } else {
            (&raw mut q.addrs[i]).cast()
        };
        msg.msg_hdr.msg_namelen = q.addr_lens[i];
        msg.msg_hdr.msg_iov = q.iovs[i].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = iovs;
        msg.msg_hdr.msg_control = null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
        q.len += 1;
    }

    /// Sends what is queued and tells how it went.
    pub(crate) fn finish(mut self) -> SendOutcome {
        self.flush();
        std::mem::take(&mut self.outcome)
    }

    fn flush(&mut self) {
        let q = &mut *self.queue;
        let mut start = 0;
        while start < q.len {
            // SAFETY: messages start..len point at iovecs, headers and
            // addresses inside the queue and at frames borrowed for 'd.
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
                // Message `start` failed: skip it, send the rest.
                self.outcome.failed += 1;
                self.outcome.first_error.get_or_insert(error);
                start += 1;
            } else {
                self.outcome.sent += n as u64;
                start += n as usize;
            }
        }
        q.len = 0;
    }
}

impl Drop for Batch<'_, '_> {
    /// Unsent messages are forgotten, and with them every borrowed pointer.
    fn drop(&mut self) {
        self.queue.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd as _;

    use super::*;

    #[test]
    fn sends_and_receives_batches_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let frames: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; 20 + usize::from(n)]).collect();
        // A queue of 4: the batch is sent in three sendmmsg calls.
        let mut queue = SendQueue::new(4, libc::AF_INET);
        let mut batch = queue.batch(tx.as_fd());
        for (n, frame) in frames.iter().enumerate() {
            batch.push(Some(vxlan::header(n as u32)), frame, Some(&to));
        }
        let outcome = batch.finish();
        assert_eq!((outcome.sent, outcome.failed), (10, 0));

        // Slots of 32 bytes: the largest datagrams (8 + 29) are truncated.
        let mut recv = RecvBatch::new(16, 32);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 10 {
            assert!(std::time::Instant::now() < deadline, "got {}", got.len());
            match recv.recv(rx.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let r = recv.get(i);
                        assert_eq!(read_sockaddr(r.addr), Some(tx.local_addr().unwrap()));
                        got.push((r.len, r.truncated, r.data.to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        for (n, (len, truncated, data)) in got.into_iter().enumerate() {
            assert_eq!(len, 8 + 20 + n);
            assert_eq!(truncated, len > 32);
            assert_eq!(&data[..8], &vxlan::header(n as u32));
            assert!(data[8..].iter().all(|&b| b == n as u8));
        }
    }

    /// Datagrams dropped from a batch leave the others whole and in order.
    #[test]
    fn retain_keeps_the_rest_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..6u8 {
            tx.send_to(&vec![n; 10 + usize::from(n)], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut recv = RecvBatch::new(16, 32);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 3 {
            assert!(std::time::Instant::now() < deadline, "got {got:?}");
            if recv.recv(rx.as_fd()).is_err() {
                continue;
            }
            recv.retain(|data, from| {
                assert_eq!(from, Some(tx.local_addr().unwrap()));
                data[0] % 2 == 1
            });
            for i in 0..recv.len() {
                let r = recv.get(i);
                assert_eq!(read_sockaddr(r.addr), Some(tx.local_addr().unwrap()));
                got.push((r.len, r.data.to_vec()));
            }
        }
        let odd: Vec<(usize, Vec<u8>)> = [1u8, 3, 5]
            .into_iter()
            .map(|n| (10 + usize::from(n), vec![n; 10 + usize::from(n)]))
            .collect();
        assert_eq!(got, odd);
    }
}
