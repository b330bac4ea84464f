//! The datapath port: where the bridge hands frames to the agent.
//!
//! Today it only counts and passes. The AF_XDP issue adds an `XskMap` and
//! makes `try_datapath` return `XSKS.redirect(ctx.rx_queue_index(), XDP_PASS)`,
//! mapping a failed redirect to a counted `Err`.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use weave_common::Counter;

use crate::count;

/// Turns the program's result into the XDP action. A failure is counted and
/// the frame dropped: never handed on as if nothing happened.
#[inline(always)]
pub fn xdp_action(result: Result<u32, Counter>) -> u32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
pub fn try_datapath(_ctx: &XdpContext) -> Result<u32, Counter> {
    count(Counter::DatapathFrames);
    Ok(xdp_action::XDP_PASS)
}
