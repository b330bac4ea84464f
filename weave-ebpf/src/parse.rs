//! Extracts the facts the isolation rules need from an skb.
//!
//! Reads go through `bpf_skb_load_bytes`, which also works when headers sit
//! in a non-linear part of the skb and fails cleanly on short frames: every
//! failure makes the frame `Unsupported`, which the rules drop.

use aya_ebpf::programs::TcContext;
use weave_common::{
    datapath::mac_key,
    fastdp::LOCAL_BRIDGE,
    frame::{
        ARP_LEN, ARP_SHA, ARP_SPA, ARP_TPA, ETH_DST, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4, ETH_SRC,
        ETH_TYPE, IPV4_DST, IPV4_MIN_LEN, IPV4_SRC,
    },
    isolation::{Frame, GATEWAY_REPLY_MARK, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::LOCAL_MACS;

/// The fragment offset's bits of the IPv4 flags-and-offset field.
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// ARP for IPv4 over Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4.
const ARP_IPV4_OVER_ETHERNET: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];

#[inline(always)]
pub(crate) fn frame(ctx: &TcContext) -> Frame {
    let Ok(eth) = ctx.load::<[u8; ETH_HLEN]>(0) else {
        return Frame::Unsupported;
    };
    let eth_src = mac(&eth, ETH_SRC);
    match u16::from_be_bytes([eth[ETH_TYPE], eth[ETH_TYPE + 1]]) {
        ETH_P_IPV4 => ipv4(ctx, eth_src, mac(&eth, ETH_DST)),
        ETH_P_ARP => arp(ctx, eth_src),
        // VLAN tags, IPv6 and everything else.
        _ => Frame::Unsupported,
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Frame {
    let Ok(ip) = ctx.load::<[u8; IPV4_MIN_LEN - ETH_HLEN]>(ETH_HLEN) else {
        return Frame::Unsupported;
    };
    // Version 4 with a header of at least five words.
    if ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
        return Frame::Unsupported;
    }
    let proto = ip[9];
    // Ports only in the first fragment (offset 0) of UDP and TCP; the
    // header length is in words (5..=15), so the offset is bounded.
    let first = u16::from_be_bytes([ip[6], ip[7]]) & FRAGMENT_OFFSET == 0;
    let (sport, dport) = if first && (proto == IPPROTO_UDP || proto == IPPROTO_TCP) {
        let at = ETH_HLEN + usize::from(ip[0] & 0x0f) * 4;
        match ctx.load::<[u8; 4]>(at) {
            Ok(p) => (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ),
            Err(_) => return Frame::Unsupported,
        }
    } else {
        (0, 0)
    };
    Frame::Ipv4 {
        eth_src,
        src: be32(&ip, IPV4_SRC - ETH_HLEN),
        dst: be32(&ip, IPV4_DST - ETH_HLEN),
        proto,
        sport,
        dport,
        to_bridge: is_bridge(eth_dst),
        // SAFETY: `skb` is the context pointer the kernel passed to the program.
        host_reply: unsafe { (*ctx.skb.skb).mark } & GATEWAY_REPLY_MARK != 0,
    }
}

/// Whether `mac` is this host's bridge (the agent writes it into
/// `LOCAL_MACS` when it makes the bridge).
#[inline(always)]
fn is_bridge(mac: [u8; 6]) -> bool {
    // SAFETY: the value is a plain u32 copied out at once; the agent
    // replaces entries whole, so a concurrent write cannot tear it.
    matches!(unsafe { LOCAL_MACS.get(mac_key(mac)) }, Some(&LOCAL_BRIDGE))
}

#[inline(always)]
fn arp(ctx: &TcContext, eth_src: [u8; 6]) -> Frame {
    let Ok(arp) = ctx.load::<[u8; ARP_LEN - ETH_HLEN]>(ETH_HLEN) else {
        return Frame::Unsupported;
    };
    if arp[..6] != ARP_IPV4_OVER_ETHERNET {
        return Frame::Unsupported;
    }
    Frame::Arp {
        eth_src,
        sha: mac(&arp, ARP_SHA - ETH_HLEN),
        spa: be32(&arp, ARP_SPA - ETH_HLEN),
        tpa: be32(&arp, ARP_TPA - ETH_HLEN),
    }
}

// The offsets below are constants, so the bounds checks fold away and no
// panic path reaches the verifier.

#[inline(always)]
fn mac(bytes: &[u8], at: usize) -> [u8; 6] {
    [
        bytes[at],
        bytes[at + 1],
        bytes[at + 2],
        bytes[at + 3],
        bytes[at + 4],
        bytes[at + 5],
    ]
}

#[inline(always)]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
