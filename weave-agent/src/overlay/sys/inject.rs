//! Frames into the bridge through a send-only packet socket with virtio-net
//! headers (`PACKET_VNET_HDR`), for runs that `coalesce` merged: the only way
//! from userspace to hand the kernel a GSO super-frame (`AF_XDP`'s TX ring
//! carries no offload metadata). A run of segments leaves as the
//! super-frame's header followed by each segment's payload, gathered
//! straight from where the segments lie (no copy in userspace); a lone
//! frame as it is. One `sendmmsg` per up to [`MESSAGES`] runs, in order.

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::ptr::null_mut;

use super::zeroed_c;

use crate::overlay::sys;
use crate::overlay::sys::mmsg::SendOutcome;
use crate::overlay::wire::coalesce::{
    self, MAX_HEADER, MAX_SEGMENTS, PLAIN_VNET_HDR, Run, Segment, VNET_HDR_LEN,
};

/// Runs sent per `sendmmsg`.
const MESSAGES: usize = 64;

pub(crate) struct Injector {
    fd: OwnedFd,
    headers: Box<[[u8; VNET_HDR_LEN + MAX_HEADER]]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Frames in each queued message.
    frames: [u32; MESSAGES],
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: the raw pointers point into the injector's own boxes and into
// frames borrowed for one `send` only; rewritten before each use.
unsafe impl Send for Injector {}

impl Injector {
    /// Opens the injection socket on interface `ifindex`.
    pub(crate) fn open(ifindex: u32) -> io::Result<Self> {
        Ok(Self {
            fd: sys::injection_socket(ifindex)?,
            headers: vec![[0; VNET_HDR_LEN + MAX_HEADER]; MESSAGES].into_boxed_slice(),
            iovs: zeroed_c(MESSAGES * (MAX_SEGMENTS + 1)),
            msgs: zeroed_c(MESSAGES),
            frames: [0; MESSAGES],
        })
    }

    /// Sends `runs` over frames `frame(i)`, in order.
    /// Counts in frames (a super-frame counts its segments).
    pub(crate) fn send<'f>(
        &mut self,
        runs: &[Run],
        frame: impl Fn(usize) -> &'f [u8],
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
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
                    let Some(len) =
                        coalesce::super_header(frame(run.first), run, &mut self.headers[m])
                    else {
                        debug_assert!(false, "a run of frames that are not segments");
                        outcome.failed += run.count as u64;
                        continue;
                    };
                    self.iovs[iov] = iovec(&self.headers[m][..len]);
                    iov += 1;
                    for i in run.first..run.first + run.count {
                        let f = frame(i);
                        let payload = Segment::parse(f).map_or(&[][..], |s| &f[s.payload()]);
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
    fn flush(&mut self, queued: usize, outcome: &mut SendOutcome) {
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
                outcome.first_error.get_or_insert(error);
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

const fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    }
}
