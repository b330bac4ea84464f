//! Frames into the bridge through a send-only packet socket with virtio-net
//! headers (PACKET_VNET_HDR), for runs that `coalesce` merged: the only way
//! from userspace to hand the kernel a GSO super-frame (AF_XDP's TX ring
//! carries no offload metadata). A run of segments leaves as the
//! super-frame's header followed by each segment's payload, gathered
//! straight from where the segments lie (no copy in userspace); a lone
//! frame as it is. One `sendmmsg` per up to [`MESSAGES`] runs, in order.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::null_mut;

use super::coalesce::{self, MAX_HEADER, MAX_SEGMENTS, PLAIN_VNET_HDR, Run, Segment, VNET_HDR_LEN};
use super::sys;

/// Runs sent per `sendmmsg`.
const MESSAGES: usize = 64;
/// From <linux/if_packet.h>.
const PACKET_VNET_HDR: libc::c_int = 15;

/// What a send achieved, in frames (a super-frame counts its segments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub sent: u64,
    pub failed: u64,
    pub first_error: Option<i32>,
}

pub struct Injector {
    fd: OwnedFd,
    headers: Box<[[u8; VNET_HDR_LEN + MAX_HEADER]]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Frames in each queued message.
    frames: [u32; MESSAGES],
}

// SAFETY: the raw pointers point into the injector's own boxes and into
// frames borrowed for one `send` only; rewritten before each use.
unsafe impl Send for Injector {}

impl Injector {
    /// A packet socket that sends out of interface `ifindex` (bypassing its
    /// qdisc, like the AF_XDP TX ring) and receives nothing (protocol 0).
    pub fn open(ifindex: u32) -> io::Result<Injector> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by socket(2), owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        sys::set_int_option(fd.as_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        // Best effort: without it frames pass the (noqueue) qdisc layer.
        let _ = sys::set_int_option(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        sys::set_buffers(fd.as_fd(), sys::SOCKET_BUFFER);
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_ifindex = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // SAFETY: `addr` is a live sockaddr_ll and its size is passed along.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Injector {
            fd,
            headers: vec![[0; VNET_HDR_LEN + MAX_HEADER]; MESSAGES].into_boxed_slice(),
            // SAFETY (both): all-zero is a valid value of these C structs.
            iovs: (0..MESSAGES * (MAX_SEGMENTS + 1))
                .map(|_| unsafe { zeroed() })
                .collect(),
            msgs: (0..MESSAGES).map(|_| unsafe { zeroed() }).collect(),
            frames: [0; MESSAGES],
        })
    }

    /// Sends `runs` over frames `frame(i)`, in order.
    pub fn send<'f>(&mut self, runs: &[Run], frame: impl Fn(usize) -> &'f [u8]) -> Injected {
        let mut outcome = Injected::default();
        for batch in runs.chunks(MESSAGES) {
            let mut iov = 0;
            let mut queued = 0;
            for run in batch {
                let m = queued;
                let start = iov;
                if run.count == 1 {
                    self.iovs[iov] = iovec(&PLAIN_VNET_HDR);
                    self.iovs[iov + 1] = iovec(frame(run.first));
                    iov += 2;
                } else {
                    let first = frame(run.first);
                    let last = frame(run.first + run.count - 1);
                    let payloads =
                        (run.first..run.first + run.count).map(|i| (i, Segment::parse(frame(i))));
                    let bytes: usize = payloads
                        .clone()
                        .map(|(_, s)| s.map_or(0, |s| s.payload().len()))
                        .sum();
                    let Some(len) = coalesce::super_header(
                        first,
                        bytes,
                        coalesce::psh(last),
                        &mut self.headers[m],
                    ) else {
                        debug_assert!(false, "a run of frames that are not segments");
                        outcome.failed += run.count as u64;
                        continue;
                    };
                    self.iovs[iov] = iovec(&self.headers[m][..len]);
                    iov += 1;
                    for (i, segment) in payloads {
                        let payload = segment.map_or(&[][..], |s| &frame(i)[s.payload()]);
                        self.iovs[iov] = iovec(payload);
                        iov += 1;
                    }
                }
                let msg = &mut self.msgs[m];
                msg.msg_hdr.msg_name = null_mut();
                msg.msg_hdr.msg_namelen = 0;
                msg.msg_hdr.msg_iov = &raw mut self.iovs[start];
                msg.msg_hdr.msg_iovlen = iov - start;
                msg.msg_hdr.msg_control = null_mut();
                msg.msg_hdr.msg_controllen = 0;
                msg.msg_hdr.msg_flags = 0;
                self.frames[m] = run.count as u32;
                queued += 1;
            }
            self.flush(queued, &mut outcome);
        }
        outcome
    }

    /// Sends messages `0..queued`; a message the kernel refuses is counted
    /// and skipped.
    fn flush(&mut self, queued: usize, outcome: &mut Injected) {
        let mut done = 0;
        while done < queued {
            // SAFETY: messages done..queued point at live iovecs (into
            // `self` and the frames borrowed by `send`).
            let sent = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs[done..].as_mut_ptr(),
                    (queued - done) as libc::c_uint,
                    0,
                )
            };
            if sent <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                outcome.failed += u64::from(self.frames[done]);
                outcome
                    .first_error
                    .get_or_insert(error.raw_os_error().unwrap_or(0));
                done += 1;
                continue;
            }
            let sent = sent as usize;
            outcome.sent += self.frames[done..done + sent]
                .iter()
                .map(|&f| u64::from(f))
                .sum::<u64>();
            done += sent;
        }
    }
}

fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    }
}
