//! Encapsulation: a unicast IPv4 frame for a MAC learnt behind a direct
//! fastdp neighbour leaves as VXLAN straight out of the underlay interface.
//!
//! `bpf_skb_adjust_room` grows the frame after its Ethernet header by the
//! tunnel headers plus a copy of that Ethernet header (`ENCAP_L2(14)` with
//! `ENCAP_L2_ETH`, so the kernel's UDP tunnel segmentation finds the inner
//! MAC header where a vxlan device would put it), keeping `gso_size`
//! (`FIXED_GSO`): a 64 KiB TSO frame stays whole until a device that cannot
//! carry it segments it. `bpf_redirect_neigh` then routes the outer packet
//! and resolves the next hop's MAC.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_ADJ_ROOM_NO_CSUM_RESET, TC_ACT_SHOT, bpf_adj_room_mode,
    },
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use weave_common::{
    Counter,
    datapath::mac_key,
    fastdp::{ENCAP_LEN, FLAG_ENABLED, segmented_bytes, tunnel_header, vni},
    frame::{ETH_HLEN, ETH_P_IPV4},
};

use super::{Way, be16, count_traffic, is_group};
use crate::{FASTDP_CONFIG, FASTDP_PEERS, PEER_MACS, count};

/// `BPF_ADJ_ROOM_ENCAP_L2(len)`: the inner L2 header's length, in the top byte.
const ENCAP_L2_ETH_HLEN: u64 = (ETH_HLEN as u64) << 56;
const GROW_FLAGS: u64 = BPF_F_ADJ_ROOM_FIXED_GSO as u64
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
    | BPF_F_ADJ_ROOM_NO_CSUM_RESET as u64
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
    | ENCAP_L2_ETH_HLEN;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
pub(crate) fn try_encap(ctx: &TcContext) -> Result<i32, Counter> {
    let config = FASTDP_CONFIG.get(0).ok_or(Counter::FastdpPassDisabled)?;
    if config.flags & FLAG_ENABLED == 0 {
        return Err(Counter::FastdpPassDisabled);
    }
    let eth = ctx
        .load::<[u8; ETH_HLEN]>(0)
        .map_err(|_| Counter::FastdpPassNotIpv4)?;
    if is_group(&eth[0..6]) || is_group(&eth[6..12]) {
        return Err(Counter::FastdpPassFlood);
    }
    // SAFETY: the skb pointer the kernel passed to the program; `protocol`
    // is a plain field of the context, read once.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    if be16(&eth, 12) != ETH_P_IPV4 || protocol != u32::from(ETH_P_IPV4.to_be()) {
        return Err(Counter::FastdpPassNotIpv4);
    }
    let dst = [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]];
    // SAFETY: plain integers copied out at once; the agent replaces entries
    // whole (map updates), so a concurrent write cannot tear what we read.
    let dest = unsafe { PEER_MACS.get(mac_key(dst)) }.ok_or(Counter::FastdpPassFlood)?;
    let dest = (*dest & 0xfff) as u16;
    // SAFETY: as above.
    let peer = *unsafe { FASTDP_PEERS.get(u32::from(dest)) }.ok_or(Counter::FastdpPassNoPeer)?;

    let ip = ctx
        .load::<[u8; 20]>(ETH_HLEN)
        .map_err(|_| Counter::FastdpPassNotIpv4)?;
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(&ip, 2));
    let len = ctx.len() as usize;
    // A whole packet, no more, no less: BIG TCP (`tot_len` 0) and torn
    // frames take the agent's path, which drops what it cannot carry.
    if ip[0] >> 4 != 4 || header_len < 20 || total + ETH_HLEN != len {
        return Err(Counter::FastdpPassNotIpv4);
    }
    if total + ENCAP_LEN > 0xffff {
        return Err(Counter::FastdpPassOversize);
    }
    // SAFETY: as for `protocol`.
    let (gso_size, gso_segs) = unsafe {
        let skb = ctx.skb.skb;
        ((*skb).gso_size as usize, (*skb).gso_segs)
    };
    // The path to the peer may take less than the overlay MTU makes: the
    // agent fragments or answers what does not fit (`wire::too_big`).
    let max_frame = match peer.frame_limit {
        0 => config.max_frame as usize,
        limit => usize::from(limit).min(config.max_frame as usize),
    };
    // What the frame stands for: one frame, or a super-frame's segments.
    let (segments, headers) = if gso_size == 0 {
        if len > max_frame {
            return Err(Counter::FastdpPassOversize);
        }
        (1, 0)
    } else {
        // Every segment, headers included, must fit the overlay MTU.
        let l4_header = match ip[9] {
            IPPROTO_TCP => {
                let offset = ctx
                    .load::<u8>(ETH_HLEN + header_len + 12)
                    .map_err(|_| Counter::FastdpPassNotIpv4)?;
                usize::from(offset >> 4) * 4
            }
            IPPROTO_UDP => 8,
            _ => return Err(Counter::FastdpPassOversize),
        };
        if header_len + l4_header + gso_size + ETH_HLEN > max_frame {
            return Err(Counter::FastdpPassOversize);
        }
        (gso_segs, ETH_HLEN + header_len + l4_header)
    };

    let tunnel = tunnel_header(
        &peer,
        config.data_port,
        vni(config.me, dest),
        ip[1] & 0x03,
        len as u16,
    );
    ctx.adjust_room(
        ENCAP_LEN as i32,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        GROW_FLAGS,
    )
    .map_err(|_| Counter::FastdpPassEncapFailed)?;
    // From here the frame is changed: a failure can only drop it.
    // The outer Ethernet header is a placeholder that `bpf_redirect_neigh`
    // overwrites; its destination must not be a group address.
    let mut outer = [0u8; ENCAP_LEN + ETH_HLEN];
    outer[12] = 0x08;
    let mut i = 0;
    while i < tunnel.len() {
        outer[ETH_HLEN + i] = tunnel[i];
        i += 1;
    }
    let mut i = 0;
    while i < ETH_HLEN {
        outer[ENCAP_LEN + i] = eth[i];
        i += 1;
    }
    if ctx.store(0, &outer, 0).is_err() {
        count(Counter::FastdpDropRewrite);
        return Ok(TC_ACT_SHOT);
    }
    count(Counter::FastdpEncap);
    if gso_size != 0 {
        count(Counter::FastdpEncapGso);
    }
    let segments = u64::from(segments.max(1));
    let bytes = segmented_bytes(len as u64, segments, headers as u64);
    count_traffic(dest, Way::Sent, segments, bytes);
    // SAFETY: no neighbour parameters (the kernel routes `remote_ip` itself).
    Ok(unsafe { bpf_redirect_neigh(peer.ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}
