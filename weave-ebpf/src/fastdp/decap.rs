//! Decapsulation: VXLAN from a direct fastdp neighbour, for this peer, whose
//! inner frame is one unicast IPv4 packet, loses its outer headers and
//! enters the bridge through the datapath port, as frames from the agent
//! do: the bridge learns where the sender is, and the container port's
//! isolation classifier still judges the frame.
//!
//! Nothing is decapsulated in password mode (the flag is off): sealed frames
//! look like plain VXLAN from the outside and only the agent can open them.

use aya_ebpf::{
    bindings::{
        BPF_CSUM_LEVEL_DEC, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_ADJ_ROOM_NO_CSUM_RESET, BPF_F_INGRESS,
        bpf_adj_room_mode,
    },
    helpers::{bpf_csum_level, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_skb_ecn_set_ce},
    programs::TcContext,
};
use weave_common::{
    Counter,
    datapath::mac_key,
    fastdp::{
        ADJ_ROOM_DECAP_L4_UDP, ENCAP_LEN, FLAG_DECAP_L4_UDP, FLAG_ENABLED, LOCAL_BRIDGE,
        LOCAL_CONTAINER, Learnt, RELEARN_AFTER_S, Seen, SenderKey, segmented_bytes,
    },
    frame::{ETH_HLEN, ETH_P_IPV4},
};

use super::{TCX_NEXT, Way, be16, count_traffic, is_group};
use crate::{FASTDP_CONFIG, FASTDP_LEARNT, FASTDP_SEEN, FASTDP_SENDERS, LOCAL_MACS, count};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Outer IPv4 header (no options), UDP header, VXLAN header.
const OUTER_IP: usize = ETH_HLEN;
const OUTER_UDP: usize = OUTER_IP + 20;
const VXLAN: usize = OUTER_UDP + 8;
const INNER: usize = VXLAN + 8;
/// ECN "congestion experienced" in the low bits of the TOS byte.
const ECN_CE: u8 = 0x03;
/// `skb->pkt_type` of a packet addressed to this host.
const PACKET_HOST: u32 = 0;

#[inline(always)]
pub(crate) fn try_decap(ctx: &TcContext) -> Result<i32, Counter> {
    // Not VXLAN to our data port: not ours, and not counted.
    let Some((config_flags, me, bridge_port, data_port)) = FASTDP_CONFIG
        .get(0)
        .map(|c| (c.flags, c.me, c.bridge_port, c.data_port))
    else {
        return Ok(TCX_NEXT);
    };
    let Ok(outer) = ctx.load::<[u8; INNER]>(0) else {
        return Ok(TCX_NEXT);
    };
    let len = ctx.len() as usize;
    if be16(&outer, 12) != ETH_P_IPV4 || outer[OUTER_IP + 9] != IPPROTO_UDP {
        return Ok(TCX_NEXT);
    }
    // IP options move the UDP header: look for the port where it is, so a
    // packet to our port is counted below (it is left to the agent).
    let header_len = usize::from(outer[OUTER_IP] & 0x0f) * 4;
    let dport = if header_len == 20 {
        be16(&outer, OUTER_UDP + 2)
    } else {
        let at = ETH_HLEN + header_len + 2;
        ctx.load::<[u8; 2]>(at).map_or(0, u16::from_be_bytes)
    };
    if dport != data_port {
        return Ok(TCX_NEXT);
    }
    if config_flags & FLAG_ENABLED == 0 {
        return Err(Counter::FastdpToAgentDisabled);
    }
    // SAFETY: the skb pointer the kernel passed to the program; plain fields
    // of the context, each read once.
    let (pkt_type, vlan, gso_size, gso_segs) = unsafe {
        let skb = ctx.skb.skb;
        (
            (*skb).pkt_type,
            (*skb).vlan_present,
            (*skb).gso_size,
            (*skb).gso_segs,
        )
    };
    let ip_total = usize::from(be16(&outer, OUTER_IP + 2));
    let udp_len = usize::from(be16(&outer, OUTER_UDP + 4));
    // One whole, unfragmented datagram without IP options. The length rules
    // also refuse UDP GRO aggregates (many datagrams in one skb), which the
    // agent's socket unpacks.
    if pkt_type != PACKET_HOST
        || vlan != 0
        || outer[OUTER_IP] != 0x45
        || be16(&outer, OUTER_IP + 6) & 0x3fff != 0
        || ip_total + ETH_HLEN != len
        || udp_len + 20 != ip_total
    {
        return Err(Counter::FastdpToAgentInner);
    }
    let key = SenderKey {
        ip: [
            outer[OUTER_IP + 12],
            outer[OUTER_IP + 13],
            outer[OUTER_IP + 14],
            outer[OUTER_IP + 15],
        ],
        port: be16(&outer, OUTER_UDP),
        zero: 0,
    };
    // SAFETY: a plain value copied out at once; the agent writes entries whole.
    let sender = *unsafe { FASTDP_SENDERS.get(key) }.ok_or(Counter::FastdpToAgentUnknownSender)?;
    if outer[OUTER_IP + 16..OUTER_IP + 20] != sender.local_ip {
        return Err(Counter::FastdpToAgentUnknownSender);
    }
    let vni = u32::from_be_bytes([0, outer[VXLAN + 4], outer[VXLAN + 5], outer[VXLAN + 6]]);
    let (origin, dest) = ((vni >> 12) as u16, (vni & 0xfff) as u16);
    // Only the neighbour's own frames to us: relayed and flooded frames need
    // the agent's forwarding.
    if outer[VXLAN] & 0x08 == 0 || dest != me || origin != sender.peer || origin == me {
        return Err(Counter::FastdpToAgentNotForUs);
    }

    let inner = ctx
        .load::<[u8; ETH_HLEN + 4]>(INNER)
        .map_err(|_| Counter::FastdpToAgentInner)?;
    if is_group(&inner[0..6])
        || is_group(&inner[6..12])
        || be16(&inner, 12) != ETH_P_IPV4
        || usize::from(be16(&inner, ETH_HLEN + 2)) + ENCAP_LEN + ETH_HLEN != len
    {
        return Err(Counter::FastdpToAgentInner);
    }
    let src = [inner[6], inner[7], inner[8], inner[9], inner[10], inner[11]];
    let dst = [inner[0], inner[1], inner[2], inner[3], inner[4], inner[5]];
    // SAFETY: plain integers copied out at once.
    if unsafe { LOCAL_MACS.get(mac_key(src)) }.is_some() {
        return Err(Counter::FastdpToAgentSpoofed);
    }
    // What the frame stands for, read while the inner headers are where
    // they arrived: one frame, or a super-frame's segments.
    let (segments, headers) = if gso_size == 0 {
        (1, 0)
    } else {
        let ip_header = usize::from(inner[ETH_HLEN] & 0x0f) * 4;
        let protocol = ctx
            .load::<u8>(INNER + ETH_HLEN + 9)
            .map_err(|_| Counter::FastdpToAgentInner)?;
        let l4_header = if protocol == IPPROTO_TCP {
            let offset = ctx
                .load::<u8>(INNER + ETH_HLEN + ip_header + 12)
                .map_err(|_| Counter::FastdpToAgentInner)?;
            usize::from(offset >> 4) * 4
        } else {
            8
        };
        (u64::from(gso_segs.max(1)), ETH_HLEN + ip_header + l4_header)
    };
    // Checksum state kept (`NO_CSUM_RESET`), then lowered one level below:
    // a NIC's verdict on the inner checksum, if it gave one, survives.
    let mut shrink = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO) | u64::from(BPF_F_ADJ_ROOM_NO_CSUM_RESET);
    if gso_size != 0 {
        if config_flags & FLAG_DECAP_L4_UDP != 0 {
            shrink |= ADJ_ROOM_DECAP_L4_UDP;
        } else {
            // Without that flag the tunnel GSO state stays on the skb, which
            // is harmless only when nothing segments it again: delivery to a
            // local container, or to the host's own stack through the bridge
            // (an exposed host). The host does not forward such a frame on:
            // the sender's classifier let it through only for an address of
            // the sender's subnet, which on the bridge is the host's own
            // (`weave expose`), and passed up instead it would be lost (the
            // agent's socket cannot take a tunnel super-frame).
            // SAFETY: plain integers copied out at once.
            let local = unsafe { LOCAL_MACS.get(mac_key(dst)) }.copied();
            if !matches!(local, Some(LOCAL_CONTAINER | LOCAL_BRIDGE)) {
                return Err(Counter::FastdpToAgentGsoRestricted);
            }
        }
    }

    ctx.adjust_room(
        -(ENCAP_LEN as i32),
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        shrink,
    )
    .map_err(|_| Counter::FastdpDecapFailed)?;
    // The outer Ethernet header is still in front: the inner one replaces it.
    let inner_eth = [
        inner[0], inner[1], inner[2], inner[3], inner[4], inner[5], inner[6], inner[7], inner[8],
        inner[9], inner[10], inner[11], inner[12], inner[13],
    ];
    if ctx.store(0, &inner_eth, 0).is_err() {
        count(Counter::FastdpDropRewrite);
        return Ok(aya_ebpf::bindings::TC_ACT_SHOT);
    }
    // SAFETY: the context pointer the kernel passed; both helpers only
    // adjust checksum state and the inner ECN bits of this skb.
    unsafe {
        // The outer UDP checksum was the one a NIC may have verified.
        bpf_csum_level(ctx.skb.skb, u64::from(BPF_CSUM_LEVEL_DEC));
        if outer[OUTER_IP + 1] & ECN_CE == ECN_CE {
            bpf_skb_ecn_set_ce(ctx.skb.skb);
        }
    }
    learn(src, origin);
    let inner_len = (len - ENCAP_LEN) as u64;
    count_traffic(
        origin,
        Way::Received,
        segments,
        segmented_bytes(inner_len, segments, headers as u64),
    );
    count(Counter::FastdpDecap);
    if gso_size != 0 {
        count(Counter::FastdpDecapGso);
    }
    // SAFETY: a plain helper call on an interface index the agent wrote.
    Ok(unsafe { bpf_redirect(bridge_port, u64::from(BPF_F_INGRESS)) } as i32)
}

/// Tells the agent that `mac` sends from behind `peer` when that is new, has
/// changed, or was last said [`RELEARN_AFTER_S`] ago: frames that bypass the
/// agent must still keep its table of MACs behind peers alive.
#[inline(always)]
fn learn(mac: [u8; 6], peer: u16) {
    // SAFETY: a helper without arguments.
    let now = (unsafe { bpf_ktime_get_coarse_ns() } >> 30) as u32;
    let key = mac_key(mac);
    // SAFETY: a plain value copied out at once.
    if let Some(seen) = unsafe { FASTDP_SEEN.get(key) }.copied()
        && seen.peer == peer
        && now.wrapping_sub(seen.at_s) < RELEARN_AFTER_S
    {
        return;
    }
    if FASTDP_LEARNT
        .output::<Learnt>(Learnt { mac, peer }, 0)
        .is_err()
    {
        // Not remembered either: the next frame tries again.
        count(Counter::FastdpLearnLost);
        return;
    }
    let _ = FASTDP_SEEN.insert(
        key,
        Seen {
            peer,
            zero: 0,
            at_s: now,
        },
        0,
    );
}
