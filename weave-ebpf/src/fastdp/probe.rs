//! Whether this kernel accepts `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (after 6.18):
//! the agent runs this program once on a synthetic VXLAN packet through
//! `BPF_PROG_TEST_RUN` and reads the helper's result as the return value
//! (0: accepted; -EINVAL: unknown flag).

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, bpf_adj_room_mode},
    programs::TcContext,
};
use weave_common::fastdp::{ADJ_ROOM_DECAP_L4_UDP, ENCAP_LEN};

#[inline(always)]
pub(crate) fn try_probe(ctx: &TcContext) -> i32 {
    match ctx.adjust_room(
        -(ENCAP_LEN as i32),
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_FIXED_GSO) | ADJ_ROOM_DECAP_L4_UDP,
    ) {
        Ok(()) => 0,
        Err(error) => error as i32,
    }
}
