//! Peers to bridge: VXLAN packets received in batches of GRO datagrams
//! (`gro`: a peer's GSO datagram of up to 64 packets crosses the receiving
//! stack as one), each packet copied into a transmit frame of the UMEM, and
//! carried out as its plan says: the inner frame sent into the bridge
//! through the AF_XDP TX ring (or, when a TCP stream's segments merge, as
//! GSO super-frames through `inject`), broadcasts passed on down the
//! origin's tree and packets for other peers relayed. In password mode
//! every packet is first opened in place with the sending neighbour's key
//! (dropped and counted if it does not authenticate or is a replay), a
//! relayed one sealed again in place for its next hop, and broadcasts
//! passed on sealed for each child through seal slots.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use xdpilone::xdp::XdpDesc;

use super::Shared;
use super::sealed::{self, SEALED_LEAD, seal_in_place};
use super::umem::{BridgeTx, DATA_OFFSET, FRAME_SIZE, Memory, RING_SIZE, chunk_of};
use crate::overlay::carry::{Carrier, Onward, Tally, carry_out, send_sealed};
use crate::overlay::coalesce::{self, Run};
use crate::overlay::counters::DropReason;
use crate::overlay::engine::{BATCH, nothing_came};
use crate::overlay::gro::GroRecv;
use crate::overlay::gso;
use crate::overlay::inject::Injector;
use crate::overlay::macs::MacJournal;
use crate::overlay::mmsg::{Batch, SendQueue};
use crate::overlay::routes::{Routes, RoutesReader};
use crate::overlay::seal_slots::SealSlots;
use crate::overlay::sys;
use crate::overlay::verdict::{FromPeer, from_peer, from_peer_truncated};
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

/// Where packet `i`'s plain VXLAN packet lies in the UMEM (address and
/// length), or why it is dropped.
type Opened = Result<(u64, usize), DropReason>;

pub(super) fn run(shared: &Shared, mut half: BridgeTx, mut injector: Option<Injector>) {
    let core = &shared.core;
    let mem = half.mem.clone();
    let mut runs: Vec<Run> = Vec::with_capacity(RING_SIZE as usize);
    let mut recv = GroRecv::new(DATAGRAMS);
    let mut taken: Vec<u64> = Vec::with_capacity(RING_SIZE as usize);
    let mut arrivals: Vec<Arrival> = Vec::with_capacity(RING_SIZE as usize);
    let mut forward = SendQueue::new(FORWARD_QUEUE, core.udp_family);
    let mut verdicts: Vec<FromPeer> = Vec::with_capacity(RING_SIZE as usize);
    let mut deliver: Vec<XdpDesc> = Vec::with_capacity(RING_SIZE as usize);
    let mut reader = RoutesReader::new(&core.routes);
    let mut changes = MacJournal::default();
    let mut slots = SealSlots::new(core.max_frame);
    // Frames that enter the bridge (their chunks stay taken until the TX
    // ring gives them back).
    let mut kept: Vec<bool> = Vec::with_capacity(RING_SIZE as usize);
    // Where each packet's plain VXLAN packet is in the UMEM, or why not.
    let mut plain: Vec<Opened> = Vec::with_capacity(RING_SIZE as usize);
    while !core.stopping() {
        reclaim(&mut half);
        if half.free.is_empty() {
            // Every transmit frame is in the kernel's hands: push them on.
            kick(&half);
            std::thread::sleep(std::time::Duration::from_micros(50));
            continue;
        }
        // Only as many datagrams as the free frames can hold when full.
        let datagrams = (half.free.len() / gso::MAX_SEGMENTS).clamp(1, recv.capacity());
        let received = recv.recv(core.udp.as_fd(), datagrams);
        let now = Instant::now();
        match received {
            Ok(_) => {}
            Err(e) => {
                if !nothing_came(&e) {
                    core.back_off(&e, "udp receive");
                }
                // Frames left on the TX ring by a kick that ran out of rounds.
                kick(&half);
                continue;
            }
        }
        // Sealed packets start earlier, so that they open where plain ones are.
        let lead = if reader.refresh(&core.routes).encrypted() {
            SEALED_LEAD
        } else {
            0
        };
        let mut tally = Tally::new(&core.counters, "from peers");
        taken.clear();
        arrivals.clear();
        let mut no_frame = 0;
        for d in 0..recv.len() {
            let datagram = recv.get(d);
            let sender = sys::read_sockaddr(datagram.addr);
            if datagram.truncated {
                tally.dropped(DropReason::Oversize, datagram.bytes.len(), sender);
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
        let routes = reader.refresh(&core.routes);
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
        core.decide(n, now, &mut verdicts, Some(&mut changes), |macs, i| {
            let Arrival {
                truncated, sender, ..
            } = arrivals[i];
            if truncated {
                return from_peer_truncated(sender, routes);
            }
            let (at, len) = match plain[i] {
                Ok(packet) => packet,
                Err(reason) => return FromPeer::Drop(reason),
            };
            // SAFETY: the packet just received into this worker's frame.
            match unsafe { mem.frame(at, len) } {
                Some(packet) => from_peer(sender, packet, core.max_frame, routes, macs, now),
                None => FromPeer::Drop(DropReason::Oversize),
            }
        });

        deliver.clear();
        kept.clear();
        kept.resize(n, false);
        let mut forwarded = forward.batch(core.udp.as_fd());
        let mut out = ToBridge {
            mem: &mem,
            plain: &plain,
            arrivals: &arrivals,
            routes,
            deliver: &mut deliver,
            kept: &mut kept,
            forwarded: &mut forwarded,
        };
        carry_out(&verdicts, routes, &mut out, &mut slots, &mut tally);
        let mut relayed = tally.sends(forwarded.finish());
        // SAFETY: as above; the frames are queued or freed only after this.
        let frame_of = |i| unsafe { inner_frame(&mem, &plain, i) };
        let sealing = (&mut forward, core.udp.as_fd());
        relayed += send_sealed(&mut slots, frame_of, routes, sealing, &mut tally);
        tally.counts.relayed += relayed;
        // Packets whose frame does not enter the bridge are done with.
        half.free.extend(
            taken
                .iter()
                .zip(&kept)
                .filter(|(_, kept)| !**kept)
                .map(|(chunk, _)| *chunk),
        );
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
                tally.counts.received += tally.sends(injector.send(&runs, frame));
                tally.counts.coalesced += runs
                    .iter()
                    .filter(|r| r.count > 1)
                    .map(|r| r.count as u64)
                    .sum::<u64>();
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
            tally.counts.drop(DropReason::SendFailed, lost);
        }
        kick(&half);
        tally.counts.received += queued as u64;
        drop(tally);
        shared.mirror(&mut changes);
    }
}

/// Where each received packet's frames go: into the bridge through the TX
/// ring (its chunk then stays taken), on to peers straight from the UMEM
/// (sealed in place first for a relay in password mode), or through a seal
/// slot (a broadcast passed on sealed to several).
struct ToBridge<'b, 'q, 'd> {
    mem: &'d Memory,
    plain: &'d [Opened],
    arrivals: &'d [Arrival],
    routes: &'d Routes,
    deliver: &'b mut Vec<XdpDesc>,
    kept: &'b mut [bool],
    forwarded: &'b mut Batch<'q, 'd>,
}

impl Carrier for ToBridge<'_, '_, '_> {
    fn len(&self, packet: usize) -> usize {
        self.arrivals[packet].len
    }

    fn sender(&self, packet: usize) -> Option<SocketAddr> {
        self.arrivals[packet].sender
    }

    fn deliver(&mut self, packet: usize) {
        if let Ok((at, len)) = self.plain[packet] {
            self.deliver.push(XdpDesc {
                addr: at + vxlan::HEADER_LEN as u64,
                len: (len - vxlan::HEADER_LEN) as u32,
                options: 0,
            });
            self.kept[packet] = true;
        }
    }

    fn send_clear(&mut self, packet: usize, onward: &Onward) {
        // SAFETY: the packet's frame is this worker's (taken off the free
        // list, queued or freed only after the batch is sent).
        let frame = unsafe { inner_frame(self.mem, self.plain, packet) };
        let header = vxlan::header(onward.vni);
        self.forwarded.push(Some(header), frame, Some(&onward.to));
    }

    fn seal_in_place(&mut self, packet: usize, onward: &Onward) -> Option<Result<(), DropReason>> {
        let sealed = self.plain[packet]
            .and_then(|(at, len)| {
                let keys = self.routes.keys(onward.hop).ok_or(DropReason::NoRoute)?;
                let frame = at + vxlan::HEADER_LEN as u64;
                seal_in_place(self.mem, frame, len - vxlan::HEADER_LEN, onward.vni, keys)
            })
            // SAFETY: as in `send_clear`; the sealed packet lies in the
            // frame's chunk, which nothing else in the batch refers to (its
            // only use).
            .and_then(|(at, len)| unsafe { self.mem.frame(at, len) }.ok_or(DropReason::Oversize))
            .map(|sealed| self.forwarded.push(None, sealed, Some(&onward.to)));
        Some(sealed)
    }
}

/// The inner frame of packet `i`, once opened (empty if it was not).
///
/// # Safety
/// As for `Memory::frame`: the packet's frame belongs to the caller, and
/// nobody writes it while the slice lives.
unsafe fn inner_frame<'m>(mem: &'m Memory, plain: &[Opened], i: usize) -> &'m [u8] {
    match plain[i] {
        // SAFETY: the caller's contract.
        Ok((at, len)) if len >= vxlan::HEADER_LEN => {
            unsafe { mem.frame(at + vxlan::HEADER_LEN as u64, len - vxlan::HEADER_LEN) }
                .unwrap_or_default()
        }
        _ => &[],
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
