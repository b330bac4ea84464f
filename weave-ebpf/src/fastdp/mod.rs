//! fastdp: VXLAN in the kernel for unencrypted traffic between directly
//! connected peers that both run it (see `docs/fastdp.md`).
//!
//! - [`encap`]: TCX egress of the bridge's datapath port (`vethwe-bridge`),
//!   where frames for other hosts leave the bridge as whole TSO super-frames.
//! - [`decap`]: TCX ingress of each underlay interface.
//! - [`probe`]: run once by the agent through `BPF_PROG_TEST_RUN` to learn
//!   whether this kernel can clear tunnel GSO state on decapsulation.
//!
//! Each program takes only what it is sure of and returns [`TCX_NEXT`] for
//! everything else *before touching the packet*, so the frame continues to
//! the agent's path (`AF_XDP` or plain) exactly as if fastdp were not there.

pub(crate) mod decap;
pub(crate) mod encap;
pub(crate) mod probe;

use aya_ebpf::bindings::TC_ACT_UNSPEC;
use weave_common::Counter;

use crate::{FASTDP_TRAFFIC, count};

/// "Not mine": the next program on the hook, then the kernel, carries on.
pub(crate) const TCX_NEXT: i32 = TC_ACT_UNSPEC;

/// Turns a program's result into its TC action: a reason to leave the frame
/// alone is counted and the frame passed on unchanged.
#[inline(always)]
pub(crate) fn tc_action(result: Result<i32, Counter>) -> i32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            TCX_NEXT
        }
    }
}

#[inline(always)]
pub(crate) const fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
pub(crate) const fn is_group(mac: &[u8]) -> bool {
    mac[0] & 1 != 0
}

/// Which way a frame went, for [`count_traffic`].
#[derive(Clone, Copy)]
pub(crate) enum Way {
    Sent,
    Received,
}

/// Adds a frame that stands for `segments` frames of `bytes` in all to
/// what fastdp carried with neighbour `peer`, on this CPU.
#[inline(always)]
pub(crate) fn count_traffic(peer: u16, way: Way, segments: u64, bytes: u64) {
    if let Some(slot) = FASTDP_TRAFFIC.get_ptr_mut(u32::from(peer)) {
        // SAFETY: a per-CPU slot is only touched by programs running on this
        // CPU, and BPF programs are not preempted by each other on one CPU.
        let slot = unsafe { &mut *slot };
        match way {
            Way::Sent => {
                slot.sent_frames += segments;
                slot.sent_bytes += bytes;
            }
            Way::Received => {
                slot.received_frames += segments;
                slot.received_bytes += bytes;
            }
        }
    }
}
