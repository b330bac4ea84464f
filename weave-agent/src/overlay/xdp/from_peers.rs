//! Peers to bridge: VXLAN packets received in batches of GRO datagrams
//! (`gro`: a peer's GSO datagram of up to 64 packets crosses the receiving
//! stack as one), each packet copied into a transmit frame of the UMEM, the
//! inner frames sent into the bridge through the AF_XDP TX ring (or, when
//! a TCP stream's segments merge, as GSO super-frames through `inject`),
//! broadcasts passed on down the origin's tree and packets for other peers
//! relayed unchanged. In password mode every packet is first
//! opened in place with the sending neighbour's key (dropped and counted if
//! it does not authenticate or is a replay), a relayed one sealed again in
//! place for its next hop, and broadcasts passed on sealed for each child.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use xdpilone::xdp::XdpDesc;

use super::peer_macs::Pending;
use super::sealed::{self, SEALED_LEAD, seal_in_place};
use super::umem::{BridgeTx, DATA_OFFSET, FRAME_SIZE, RING_SIZE, chunk_of};
use super::{BATCH, MIRROR_SYNC, Shared, nothing_came};
use crate::overlay::coalesce::{self, Run};
use crate::overlay::counters::{Counts, DropReason, dropped};
use crate::overlay::forwarding::ShortId;
use crate::overlay::gro::GroRecv;
use crate::overlay::gso;
use crate::overlay::inject::Injector;
use crate::overlay::mmsg::SendQueue;
use crate::overlay::plain::sealed::Sealed;
use crate::overlay::plain::verdict::{FromPeer, from_peer};
use crate::overlay::routes::RoutesReader;
use crate::overlay::sys;
use crate::overlay::vxlan;

/// Relays and broadcasts passed on: room for a batch sent to four peers each.
const FORWARD_QUEUE: usize = BATCH * 4;
/// Where a received packet starts in its chunk: its VXLAN header ends where
/// the inner frame must start for the TX ring.
const PACKET_OFFSET: u64 = DATA_OFFSET - vxlan::HEADER_LEN as u64;
/// Room for a packet: the rest of the chunk.
const PACKET_ROOM: usize = (FRAME_SIZE as u64 - PACKET_OFFSET) as usize;
/// Datagrams taken in one receive; with GRO each holds up to
/// `gso::MAX_SEGMENTS` packets from a peer that sends with GSO.
const DATAGRAMS: usize = 16;

/// A packet received into a transmit frame: its length, whether it was too
/// long for the frame (then not copied), and who sent it.
#[derive(Clone, Copy)]
struct Arrival {
    len: usize,
    truncated: bool,
    sender: Option<SocketAddr>,
}

pub(super) fn run(shared: &Shared, mut half: BridgeTx, mut injector: Option<Injector>) {
    let mem = half.mem.clone();
    let mut runs: Vec<Run> = Vec::with_capacity(RING_SIZE as usize);
    let mut recv = GroRecv::new(DATAGRAMS);
    let mut taken: Vec<u64> = Vec::with_capacity(RING_SIZE as usize);
    let mut arrivals: Vec<Arrival> = Vec::with_capacity(RING_SIZE as usize);
    let mut forward = SendQueue::new(FORWARD_QUEUE, shared.udp_family);
    let mut verdicts: Vec<FromPeer> = Vec::with_capacity(RING_SIZE as usize);
    let mut deliver: Vec<XdpDesc> = Vec::with_capacity(RING_SIZE as usize);
    let mut reader = RoutesReader::new(&shared.routes);
    let mut pending = Pending::default();
    let mut last_sync = Instant::now();
    let mut passed_on = Sealed::new(shared.max_frame);
    // Where each packet's plain VXLAN packet is in the UMEM, or why not.
    let mut plain: Vec<Result<(u64, usize), DropReason>> = Vec::with_capacity(RING_SIZE as usize);
    while !shared.stopping() {
        reclaim(&mut half);
        if half.free.is_empty() {
            // Every transmit frame is in the kernel's hands: push them on.
            kick(&half);
            std::thread::sleep(std::time::Duration::from_micros(50));
            continue;
        }
        // Only as many datagrams as the free frames can hold when full.
        let datagrams = (half.free.len() / gso::MAX_SEGMENTS).clamp(1, recv.capacity());
        let received = recv.recv(shared.udp.as_fd(), datagrams);
        let now = Instant::now();
        if now.duration_since(last_sync) >= MIRROR_SYNC {
            last_sync = now;
            shared.resync_mirror();
        }
        match received {
            Ok(_) => {}
            Err(e) => {
                if !nothing_came(&e) {
                    shared.back_off(&e, "udp receive");
                }
                // Frames left on the TX ring by a kick that ran out of rounds.
                kick(&half);
                continue;
            }
        }
        // Sealed packets start earlier, so that they open where plain ones are.
        let lead = if reader.refresh(&shared.routes).encrypted() {
            SEALED_LEAD
        } else {
            0
        };
        let mut counts = Counts::default();
        taken.clear();
        arrivals.clear();
        let mut no_frame = 0;
        for d in 0..recv.len() {
            let datagram = recv.get(d);
            let sender = sys::read_sockaddr(datagram.addr);
            if datagram.truncated {
                dropped!(shared.counters, counts, DropReason::Oversize, direction = "from peers", from = ?sender, len = datagram.bytes.len(),);
                continue;
            }
            for packet in datagram.segments() {
                let Some(chunk) = half.free.pop() else {
                    no_frame += 1;
                    continue;
                };
                // Too long for a chunk: counted by the verdict.
                let truncated = packet.len() > PACKET_ROOM + lead as usize;
                if !truncated {
                    let Some(at) = mem.at(chunk + PACKET_OFFSET - lead, packet.len()) else {
                        debug_assert!(false, "chunk {chunk} outside the UMEM");
                        half.free.push(chunk);
                        continue;
                    };
                    // SAFETY: `at` is a transmit frame off the free list
                    // (nobody, the kernel included, touches it until it is
                    // queued), with room for the packet (checked by `at`).
                    unsafe { std::ptr::copy_nonoverlapping(packet.as_ptr(), at, packet.len()) };
                }
                taken.push(chunk);
                arrivals.push(Arrival {
                    len: packet.len(),
                    truncated,
                    sender,
                });
            }
        }
        if no_frame > 0 {
            shared.no_frame.fetch_add(no_frame, Ordering::Relaxed);
        }
        let n = arrivals.len();
        let routes = reader.refresh(&shared.routes);
        let encrypted = routes.encrypted();
        plain.clear();
        plain.extend((0..n).map(|i| {
            let Arrival {
                len,
                truncated,
                sender,
            } = arrivals[i];
            let at = taken[i] + PACKET_OFFSET - lead;
            if truncated {
                // Counted by the verdict.
                return Ok((at, 0));
            }
            sealed::open(&mem, at, len, sender, routes)
        }));
        verdicts.clear();
        {
            let mut macs = shared.macs();
            macs.expire(now);
            verdicts.extend((0..n).map(|i| {
                let Arrival {
                    truncated, sender, ..
                } = arrivals[i];
                if truncated {
                    return match sender.and_then(|a| routes.neighbour_at(&a)) {
                        Some(_) => FromPeer::Drop(DropReason::Oversize),
                        None => FromPeer::Drop(DropReason::UnknownSender),
                    };
                }
                let (at, len) = match plain[i] {
                    Ok(packet) => packet,
                    Err(reason) => return FromPeer::Drop(reason),
                };
                // SAFETY: the packet just received into this worker's frame.
                match unsafe { mem.frame(at, len) } {
                    Some(packet) => {
                        from_peer(sender, packet, shared.max_frame, routes, &mut macs, now)
                    }
                    None => FromPeer::Drop(DropReason::Oversize),
                }
            }));
            if let Some(journal) = &mut macs.journal {
                pending.take_from(journal);
            }
        }

        deliver.clear();
        let mut forwarded = forward.batch(shared.udp.as_fd());
        for (i, verdict) in verdicts.iter().enumerate() {
            let chunk = taken[i];
            let (at, len) = *plain[i].as_ref().unwrap_or(&(chunk + PACKET_OFFSET, 0));
            match *verdict {
                FromPeer::Relay { via } if encrypted => {
                    // SAFETY: as above.
                    let vni = unsafe { mem.frame(at, len) }.and_then(|p| vxlan::parse(p).ok());
                    let sealed = match (routes.neighbour_at(&via), vni) {
                        (Some(hop), Some(v)) => routes
                            .keys(hop)
                            .ok_or(DropReason::NoRoute)
                            .and_then(|keys| {
                                let frame = at + vxlan::HEADER_LEN as u64;
                                seal_in_place(&mem, frame, len - vxlan::HEADER_LEN, v.vni, keys)
                            }),
                        _ => Err(DropReason::NoRoute),
                    };
                    // SAFETY: as above; the sealed packet lies in the frame's chunk.
                    match sealed.map(|(at, len)| unsafe { mem.frame(at, len) }) {
                        Ok(Some(packet)) => forwarded.push(None, packet, Some(&via)),
                        Ok(None) => {}
                        Err(reason) => {
                            dropped!(
                                shared.counters,
                                counts,
                                reason,
                                direction = "relayed",
                                len = len,
                            );
                        }
                    }
                    half.free.push(chunk);
                    continue;
                }
                FromPeer::Deliver {
                    origin,
                    sender,
                    broadcast: true,
                } if encrypted => {
                    let vni = ShortId::vni(origin, ShortId::BROADCAST);
                    for (child, addr) in routes.children(origin) {
                        if *child != sender && *child != origin {
                            passed_on.push(i, vni, *child, *addr);
                        }
                    }
                }
                _ => {}
            }
            // SAFETY: as above; the frame is queued on the TX ring only after
            // `forwarded` is finished.
            let packet = unsafe { mem.frame(at, len.min(PACKET_ROOM)) };
            let Some(packet) = packet else {
                half.free.push(chunk);
                continue;
            };
            match *verdict {
                FromPeer::Deliver {
                    origin,
                    sender,
                    broadcast,
                } => {
                    deliver.push(XdpDesc {
                        addr: at + vxlan::HEADER_LEN as u64,
                        len: (len - vxlan::HEADER_LEN) as u32,
                        options: 0,
                    });
                    if broadcast && !encrypted {
                        for (child, addr) in routes.children(origin) {
                            if *child != sender && *child != origin {
                                forwarded.push(None, packet, Some(addr));
                            }
                        }
                    }
                }
                FromPeer::Relay { via } => {
                    forwarded.push(None, packet, Some(&via));
                    half.free.push(chunk);
                }
                FromPeer::Drop(reason) => {
                    let from = arrivals[i].sender;
                    dropped!(shared.counters, counts, reason, direction = "from peers", from = ?from, len = len,);
                    half.free.push(chunk);
                }
            }
        }
        let mut forwarded = forwarded.finish();
        if encrypted {
            let plain = &plain;
            forwarded.merge(passed_on.send(
                // SAFETY: as above; the frames are queued only after this.
                |i| {
                    match plain[i] {
                        Ok((at, len)) => unsafe {
                            mem.frame(
                                at + vxlan::HEADER_LEN as u64,
                                len.saturating_sub(vxlan::HEADER_LEN),
                            )
                        }
                        .unwrap_or_default(),
                        Err(_) => &[],
                    }
                },
                routes,
                &mut forward,
                shared.udp.as_fd(),
                &shared.counters,
                &mut counts,
            ));
        }
        // Segments of a TCP stream that arrived together enter the bridge as
        // one GSO super-frame, through the injector; then the whole batch
        // goes that way, to stay in order.
        if let Some(injector) = injector.as_mut() {
            // SAFETY (both): the frames are this worker's until they are
            // queued or freed below, after the injector is done with them.
            let frame = |i: usize| {
                unsafe { mem.frame(deliver[i].addr, deliver[i].len as usize) }.unwrap_or_default()
            };
            coalesce::plan(deliver.len(), frame, &mut runs);
            if runs.len() < deliver.len() {
                let injected = injector.send(&runs, frame);
                counts.received += injected.sent;
                counts.coalesced += runs
                    .iter()
                    .filter(|r| r.count > 1)
                    .map(|r| r.count as u64)
                    .sum::<u64>();
                if let Some(error) = injected.first_error {
                    counts.drop(DropReason::SendFailed, injected.failed - 1);
                    dropped!(shared.counters, counts, DropReason::SendFailed, direction = "to the bridge", error = %error,);
                }
                half.free.extend(deliver.iter().map(|d| chunk_of(d.addr)));
                deliver.clear();
            }
        }
        // A reservation can be shorter than asked (it trusts a cached view
        // of the ring first): repeat until everything is queued or the ring
        // is really full.
        let mut queued = 0;
        while queued < deliver.len() {
            let mut tx = half.tx.transmit((deliver.len() - queued) as u32);
            let n = tx.insert(deliver[queued..].iter().copied()) as usize;
            tx.commit();
            drop(tx);
            if n == 0 {
                break;
            }
            queued += n;
        }
        // The TX ring is as large as the pool of transmit frames, so this
        // cannot happen; but never lose track of a frame.
        for desc in &deliver[queued..] {
            half.free.push(chunk_of(desc.addr));
        }
        if queued < deliver.len() {
            let lost = (deliver.len() - queued) as u64;
            counts.drop(DropReason::SendFailed, lost);
        }
        kick(&half);
        counts.received += queued as u64;
        counts.relayed += forwarded.sent;
        if let Some(error) = forwarded.first_error {
            counts.drop(DropReason::SendFailed, forwarded.failed - 1);
            dropped!(shared.counters, counts, DropReason::SendFailed, direction = "to peers", error = %error,);
        }
        shared.counters.add(&counts);
        shared.mirror(&mut pending);
    }
}

/// Takes back the transmit frames the kernel is done with.
fn reclaim(half: &mut BridgeTx) {
    let mut done = half.completion.complete(RING_SIZE);
    while let Some(addr) = done.read() {
        half.free.push(chunk_of(addr));
    }
    done.release();
}

/// Makes the kernel transmit what the TX ring holds: in copy mode it only
/// does so inside `sendto`, at most 32 frames per call. Bounded, so that a
/// peer that takes nothing (its queue full) cannot hold the worker here.
fn kick(half: &BridgeTx) {
    let mut rounds = half.tx.pending() / 32 + 2;
    while half.tx.pending() > 0 && rounds > 0 {
        half.tx.wake();
        rounds -= 1;
    }
}
