//! Bridge to peers: frames the datapath program redirected into the AF_XDP
//! socket, tagged with their destination peer, wrapped in VXLAN and sent to
//! the peers their verdict names straight from the UMEM; consecutive frames
//! of one size for one peer leave as one UDP GSO datagram (`gso`). In
//! password mode a frame is sealed in place in its chunk for its next hop
//! (`sealed`), or through scratch slots when flooded to several.

use std::os::fd::AsFd;

use weave_common::datapath::{META_LEN, meta_dest};
use xdpilone::xdp::XdpDesc;

use super::peer_macs::Pending;
use super::sealed::seal_in_place;
use super::umem::{BridgeRx, Memory, chunk_of};
use super::{BATCH, STOP_CHECK, Shared, wait_readable};
use crate::overlay::counters::{Counts, DropReason, dropped};
use crate::overlay::forwarding::ShortId;
use crate::overlay::gso::GsoQueue;
use crate::overlay::mmsg::SendQueue;
use crate::overlay::plain::sealed::Sealed;
use crate::overlay::plain::verdict::{FromBridge, from_bridge, from_bridge_tagged};
use crate::overlay::routes::RoutesReader;
use crate::overlay::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared, mut half: BridgeRx) {
    let mem = half.mem.clone();
    let mut descs: Vec<XdpDesc> = Vec::with_capacity(BATCH);
    let mut queue = GsoQueue::new(SEND_QUEUE, shared.udp_family);
    let mut verdicts: Vec<FromBridge> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&shared.routes);
    let mut pending = Pending::default();
    // Password mode: floods, sealed for each child in scratch slots.
    let mut flooded = Sealed::new(shared.max_frame);
    let mut flood_queue = SendQueue::new(SEND_QUEUE, shared.udp_family);
    while !shared.stopping() {
        if half.rx.available() == 0 && !wait_readable(mem.borrowed_fd(), STOP_CHECK) {
            continue;
        }
        descs.clear();
        {
            let mut ring = half.rx.receive(BATCH as u32);
            descs.extend(ring.by_ref());
            ring.release();
        }
        if descs.is_empty() {
            continue;
        }
        let now = std::time::Instant::now();
        let routes = reader.refresh(&shared.routes);
        let mut counts = Counts::default();
        verdicts.clear();
        {
            let mut macs = shared.macs();
            macs.expire(now);
            verdicts.extend(descs.iter().map(|desc| {
                // SAFETY: the frame came out of the RX ring and goes back to
                // the fill ring only after this batch.
                let Some(frame) = (unsafe { mem.frame(desc.addr, desc.len as usize) }) else {
                    return FromBridge::Drop(DropReason::Malformed);
                };
                match take_tag(&mem, desc.addr) {
                    Some(dest) => from_bridge_tagged(
                        frame,
                        shared.max_frame,
                        ShortId(dest),
                        routes,
                        &mut macs,
                        now,
                    ),
                    None => {
                        untagged(shared);
                        from_bridge(frame, shared.max_frame, routes, &mut macs, now)
                    }
                }
            }));
            if let Some(journal) = &mut macs.journal {
                pending.take_from(journal);
            }
        }

        let me = routes.me();
        let encrypted = routes.encrypted();
        let flood_vni = ShortId::vni(me, ShortId::BROADCAST);
        let flood_header = vxlan::header(flood_vni);
        let mut batch = queue.batch(shared.udp.as_fd());
        for (i, (desc, verdict)) in descs.iter().zip(&verdicts).enumerate() {
            match *verdict {
                FromBridge::Unicast { peer, via } if encrypted => {
                    // Never in clear: without a hop (so without keys), dropped.
                    let sealed = routes
                        .next_hop(peer)
                        .and_then(|(hop, _)| routes.keys(hop))
                        .ok_or(DropReason::NoRoute)
                        .and_then(|keys| {
                            let vni = ShortId::vni(me, peer);
                            seal_in_place(&mem, desc.addr, desc.len as usize, vni, keys)
                        });
                    // SAFETY: as above; the sealed packet lies in the frame's chunk.
                    match sealed.map(|(at, len)| unsafe { mem.frame(at, len) }) {
                        Ok(Some(packet)) => {
                            // Sealed packets of one size still share a GSO datagram.
                            let (header, rest) = packet.split_at(vxlan::HEADER_LEN);
                            let header = header.try_into().unwrap_or_default();
                            batch.push(header, rest, &via);
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            dropped!(
                                shared.counters,
                                counts,
                                reason,
                                direction = "to peers",
                                len = desc.len,
                            );
                        }
                    }
                    continue;
                }
                FromBridge::Flood if encrypted => {
                    for (child, addr) in routes.children(me) {
                        flooded.push(i, flood_vni, *child, *addr);
                    }
                    continue;
                }
                _ => {}
            }
            // SAFETY: as above; `batch` is finished before the frames go back.
            let Some(frame) = (unsafe { mem.frame(desc.addr, desc.len as usize) }) else {
                continue;
            };
            match *verdict {
                FromBridge::Flood => {
                    for (_, addr) in routes.children(me) {
                        batch.push(flood_header, frame, addr);
                    }
                }
                FromBridge::Unicast { peer, via } => {
                    let header = vxlan::header(ShortId::vni(me, peer));
                    batch.push(header, frame, &via);
                }
                FromBridge::Local => {}
                FromBridge::Drop(reason) => {
                    dropped!(
                        shared.counters,
                        counts,
                        reason,
                        direction = "to peers",
                        len = desc.len,
                    );
                }
            }
        }
        let mut outcome = batch.finish();
        if encrypted {
            outcome.merge(flooded.send(
                // SAFETY: as above; the frames go back only after this.
                |i| unsafe { mem.frame(descs[i].addr, descs[i].len as usize) }.unwrap_or_default(),
                routes,
                &mut flood_queue,
                shared.udp.as_fd(),
                &shared.counters,
                &mut counts,
            ));
        }
        // Every frame of the batch is done with: back to the kernel. A
        // reservation can be shorter than asked (it trusts a cached view of
        // the ring first), so repeat until every frame is back: a frame
        // left out would be lost to the fill ring for good.
        let mut rest = &descs[..];
        while !rest.is_empty() {
            let mut fill = half.fill.fill(rest.len() as u32);
            let n = fill.insert(rest.iter().map(|d| chunk_of(d.addr))) as usize;
            fill.commit();
            drop(fill);
            if n == 0 {
                // Cannot happen: the ring holds every receive frame.
                debug_assert!(false, "fill ring full");
                break;
            }
            rest = &rest[n..];
        }

        counts.sent += outcome.sent;
        counts.gso_refused += outcome.gso_refused;
        if let Some(error) = outcome.first_error {
            counts.drop(DropReason::SendFailed, outcome.failed - 1);
            dropped!(shared.counters, counts, DropReason::SendFailed, direction = "to peers", error = %error,);
        }
        shared.counters.add(&counts);
        shared.mirror(&mut pending);
    }
}

/// The destination the datapath program wrote in front of the frame at
/// `addr`, if it wrote one; clears it, so that a stale tag can never be
/// read for a later frame of the same chunk.
fn take_tag(mem: &Memory, addr: u64) -> Option<u16> {
    let at = mem.at(addr.checked_sub(META_LEN as u64)?, META_LEN)?;
    if chunk_of(addr - META_LEN as u64) != chunk_of(addr) {
        return None;
    }
    // SAFETY: four bytes inside the chunk this worker owns until it goes
    // back to the fill ring (checked by `at` and just above).
    let word = unsafe {
        let word = at.cast::<u32>().read_unaligned();
        at.cast::<u32>().write_unaligned(0);
        word
    };
    meta_dest(word)
}

/// A frame reached the agent without a destination tag (no room for XDP
/// metadata, or a kernel whose copy mode drops it): the remote table is
/// consulted instead. Logged once, as it says something about the kernel.
fn untagged(shared: &Shared) {
    if !shared
        .untagged_seen
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "a frame reached the xdp data plane without a destination tag: looking destinations up in userspace"
        );
    }
}
