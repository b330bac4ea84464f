//! The isolation classifiers on a container port.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use weave_common::{
    Counter, Endpoint, EndpointAddr, Verdict,
    isolation::{self, Frame, MAX_EXPOSED},
};

use crate::{DNS_ADDR, ENDPOINTS, EXPOSED, count, parse};

/// Turns a classification into the TC action, counting it either way.
#[inline(always)]
pub(crate) fn tc_action(result: Result<(), Counter>, passed: Counter) -> i32 {
    match result {
        Ok(()) => {
            count(passed);
            TC_ACT_OK
        }
        Err(reason) => {
            count(reason);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
pub(crate) fn try_from_container(ctx: &TcContext) -> Result<(), Counter> {
    classify(ctx, isolation::from_container)
}

#[inline(always)]
pub(crate) fn try_to_container(ctx: &TcContext) -> Result<(), Counter> {
    classify(ctx, isolation::to_container)
}

#[inline(always)]
fn classify(ctx: &TcContext, rule: fn(&Endpoint, &Frame, u32) -> Verdict) -> Result<(), Counter> {
    let endpoint = endpoint(ctx)?;
    let frame = parse::frame(ctx);
    match rule(endpoint, &frame, dns_addr()) {
        Verdict::Pass => Ok(()),
        Verdict::PassDns => {
            count(Counter::DnsPassed);
            Ok(())
        }
        Verdict::PassGateway => {
            count(Counter::GatewayPassed);
            Ok(())
        }
        Verdict::ViaGateway(addr) if exposed_in(addr) => {
            count(Counter::GatewayPassed);
            Ok(())
        }
        Verdict::ViaGateway(_) => Err(Counter::DropOtherSubnet),
        Verdict::Drop(reason) => Err(reason),
    }
}

/// Whether this host is exposed in `addr`'s subnet (`EXPOSED`), and so
/// its gateway.
#[inline(always)]
fn exposed_in(addr: EndpointAddr) -> bool {
    let mut i = 0;
    while i < MAX_EXPOSED {
        if let Some(&slot) = EXPOSED.get(i)
            && isolation::serves(slot, addr)
        {
            return true;
        }
        i += 1;
    }
    false
}

/// The agent's DNS address, 0 when weaveDNS is off (or not yet written).
#[inline(always)]
pub(crate) fn dns_addr() -> u32 {
    DNS_ADDR.get(0).copied().unwrap_or(0)
}

/// The endpoint of the port the frame crosses: the host-side veth is
/// `skb->dev` at both TC ingress and TC egress.
#[inline(always)]
fn endpoint(ctx: &TcContext) -> Result<&Endpoint, Counter> {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the agent writes an entry before attaching and removes it only
    // after detaching; a concurrent rewrite changes the value in place with
    // the same layout, so a torn read can only mix two valid endpoints.
    unsafe { ENDPOINTS.get(ifindex) }.ok_or(Counter::DropUnknownPort)
}
