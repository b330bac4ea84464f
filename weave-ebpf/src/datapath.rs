//! The datapath port: where the bridge hands frames for other hosts to the
//! agent.
//!
//! Every frame is tagged with its destination peer (XDP metadata, see
//! `weave_common::datapath`): `PEER_MACS`, which the agent fills from what
//! it learns on frames from peers, maps the destination MAC to the peer it
//! lives behind; broadcast, multicast and unknown MACs flood. The frame is
//! then redirected into the agent's `AF_XDP` socket (`XSKS`, slot = receive
//! queue). Without a socket (the plain data plane) it passes to the kernel,
//! where the plain path's capture socket reads it.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_meta, programs::XdpContext,
};
use weave_common::{
    Counter,
    datapath::{DEST_FLOOD, META_LEN, mac_key, meta},
    frame::{ARP_LEN, ARP_SPA, ARP_TPA, ETH_DST, ETH_HLEN, ETH_P_ARP, ETH_TYPE},
};

use crate::{PEER_MACS, XSKS, count};

/// Turns the program's result into the XDP action. A failure is counted and
/// the frame dropped: never handed on as if nothing happened.
#[inline(always)]
pub(crate) fn xdp_action(result: Result<u32, Counter>) -> u32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
pub(crate) fn try_datapath(ctx: &XdpContext) -> Result<u32, Counter> {
    count(Counter::DatapathFrames);
    if arp_about_dns(ctx) {
        return Err(Counter::DatapathDnsArpDropped);
    }
    let dest = destination(ctx)?;
    if !tag(ctx, dest) {
        count(Counter::DatapathUntagged);
    }
    // On failure (no socket in the slot) the action is the flags' low bits.
    if let Ok(action) = XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
        count(Counter::DatapathToAgent);
        Ok(action)
    } else {
        count(Counter::DatapathPassed);
        Ok(xdp_action::XDP_PASS)
    }
}

/// Whether the frame is ARP about the DNS address (from or for it): every
/// host has that address on its bridge, so its ARP stays on the host.
#[inline(always)]
fn arp_about_dns(ctx: &XdpContext) -> bool {
    let dns = crate::port::dns_addr();
    let start = ctx.data();
    if dns == 0 || start + ARP_LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the ARP_LEN bytes lie inside the packet (checked just above).
    let frame: [u8; ARP_LEN] = unsafe { *(start as *const [u8; ARP_LEN]) };
    if u16::from_be_bytes([frame[ETH_TYPE], frame[ETH_TYPE + 1]]) != ETH_P_ARP {
        return false;
    }
    let at = |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
    at(ARP_SPA) == dns || at(ARP_TPA) == dns
}

/// The peer the frame goes to, or [`DEST_FLOOD`]. Frames too short for an
/// Ethernet header are dropped.
#[inline(always)]
fn destination(ctx: &XdpContext) -> Result<u16, Counter> {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return Err(Counter::DropUnsupported);
    }
    // SAFETY: the six bytes lie inside the packet (checked just above).
    let dst: [u8; 6] = unsafe { *((start + ETH_DST) as *const [u8; 6]) };
    if dst[0] & 1 != 0 {
        return Ok(DEST_FLOOD);
    }
    // SAFETY: the value is a plain u32 copied out at once; the agent replaces
    // it whole (a map update), so a concurrent write cannot tear what we read.
    match unsafe { PEER_MACS.get(mac_key(dst)) } {
        Some(peer) => Ok((*peer & 0xfff) as u16),
        None => Ok(DEST_FLOOD),
    }
}

/// Writes the destination tag in front of the frame; false when the driver
/// leaves no room for metadata (the agent then looks the MAC up itself).
#[inline(always)]
fn tag(ctx: &XdpContext, dest: u16) -> bool {
    // SAFETY: the context pointer the kernel passed to the program.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(META_LEN as i32)) } != 0 {
        return false;
    }
    let at = ctx.metadata();
    if at + META_LEN > ctx.data() {
        return false;
    }
    // SAFETY: [at, at + 4) is the metadata area just made (checked above).
    unsafe {
        *(at as *mut u32) = meta(dest);
    }
    true
}
