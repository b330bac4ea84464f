//! Peers to bridge: VXLAN packets received on the data port, their inner
//! frames injected into the datapath port, broadcasts passed on down the
//! origin's tree and packets for other peers relayed, as their plan says.
//! In password mode every packet is first opened in place with the sending
//! neighbour's key (dropped and counted if it does not authenticate or is a
//! replay), and what is passed on is sealed again for its next hop.
//! Data-path heartbeats are taken out of each batch first, for the mesh.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsFd as _;
use std::time::Instant;

use super::Shared;
use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::{Routes, RoutesReader};
use crate::overlay::decide::verdict::{FromPeer, FromPeerBatch, from_peer_truncated};
use crate::overlay::engine::BATCH;
use crate::overlay::engine::carry::{Carrier, Onward, Tally, carry_out, send_sealed};
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::sys;
use crate::overlay::sys::mmsg::{Batch, RecvBatch, SendQueue};
use crate::overlay::wire::seal;
use crate::overlay::wire::vxlan;

/// Relays and broadcasts passed on: room for a batch sent to four peers each.
const FORWARD_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared) {
    let core = &shared.core;
    // Room for sealed packets, whether or not the mesh uses a password.
    let mut packets = RecvBatch::new(BATCH, vxlan::HEADER_LEN + seal::OVERHEAD + core.max_frame);
    let mut slots = SealSlots::new(core.max_frame);
    // Where each packet's plain VXLAN packet is in its slot, or why not.
    let mut plain: Vec<Result<Range<usize>, DropReason>> = Vec::with_capacity(BATCH);
    let mut inject = SendQueue::new(BATCH, libc::AF_PACKET);
    let mut forward = SendQueue::new(FORWARD_QUEUE, core.udp_family);
    let mut verdicts: Vec<FromPeer> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&core.routes);
    while !core.stopping() {
        if !super::receive(&mut packets, core.udp.as_fd(), "udp") {
            continue;
        }
        // Heartbeats go to the mesh, before anything reads them as VXLAN.
        packets.retain(|data, from| !core.heartbeats.divert(data, from));
        if packets.len() == 0 {
            continue;
        }
        let now = Instant::now();
        let routes = reader.refresh(&core.routes);
        open_all(&mut packets, routes, &mut plain);
        let mut batch = FromPeerBatch::default();
        core.decide(packets.len(), now, &mut verdicts, None, |macs, i| {
            let packet = packets.get(i);
            let sender = sys::read_sockaddr(packet.addr);
            if packet.truncated {
                from_peer_truncated(sender, routes)
            } else {
                match &plain[i] {
                    Err(reason) => FromPeer::Drop(*reason),
                    Ok(range) => batch.from_peer(
                        sender,
                        payload(packet.data, range),
                        core.max_frame,
                        routes,
                        macs,
                        now,
                    ),
                }
            }
        });
        let mut tally = Tally::new(&core.counters, "from peers");
        let mut injected = inject.batch(shared.datapath.as_fd());
        let mut forwarded = forward.batch(core.udp.as_fd());
        let mut out = ToBridge {
            packets: &packets,
            plain: &plain,
            injected: &mut injected,
            forwarded: &mut forwarded,
        };
        carry_out(&verdicts, routes, &mut out, &mut slots, &mut tally);
        tally.counts.received += tally.sends(injected.finish());
        let mut relayed = tally.sends(forwarded.finish());
        let frame_of = |i| inner_frame(&packets, &plain, i);
        let sealing = (&mut forward, core.udp.as_fd());
        // Relayed frames too big for the next hop with DF are dropped: an
        // answer injected here would come back out of the port it entered.
        relayed += send_sealed(&mut slots, frame_of, routes, sealing, None, &mut tally);
        tally.counts.relayed += relayed;
    }
}

/// Where each received packet's frames go: into the bridge through the
/// packet socket, or on to peers in clear (sealed ones through seal slots).
struct ToBridge<'b, 'q, 'd> {
    packets: &'d RecvBatch,
    plain: &'d [Result<Range<usize>, DropReason>],
    injected: &'b mut Batch<'q, 'd>,
    forwarded: &'b mut Batch<'q, 'd>,
}

impl Carrier for ToBridge<'_, '_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.packets.get(frame).len
    }

    fn inner_len(&self, frame: usize) -> usize {
        inner_frame(self.packets, self.plain, frame).len()
    }

    fn sender(&self, frame: usize) -> Option<SocketAddr> {
        sys::read_sockaddr(self.packets.get(frame).addr)
    }

    fn deliver(&mut self, frame: usize) {
        let frame = inner_frame(self.packets, self.plain, frame);
        self.injected.push(None, frame, None);
    }

    fn send_clear(&mut self, frame: usize, onward: &Onward) {
        let frame = inner_frame(self.packets, self.plain, frame);
        let header = vxlan::header(onward.vni);
        self.forwarded.push(Some(header), frame, Some(&onward.to));
    }
}

/// Password mode: opens every packet of the batch in place with its
/// sender's key; records where each plain VXLAN packet now is, or why the
/// packet is to be dropped. Without a password, every packet is plain.
fn open_all(
    packets: &mut RecvBatch,
    routes: &Routes,
    plain: &mut Vec<Result<Range<usize>, DropReason>>,
) {
    plain.clear();
    for i in 0..packets.len() {
        let (sender, len, truncated) = {
            let p = packets.get(i);
            (sys::read_sockaddr(p.addr), p.data.len(), p.truncated)
        };
        if !routes.encrypted() || truncated {
            plain.push(Ok(0..len));
            continue;
        }
        // An unknown sender is left to the verdict, which counts it as such.
        let Some(neighbour) = sender.and_then(|a| routes.neighbour_at(&a)) else {
            plain.push(Ok(0..len));
            continue;
        };
        plain.push(seal::open_from(routes.keys(neighbour), packets.data_mut(i)));
    }
}

/// The plain VXLAN packet in a slot, or nothing.
fn payload<'a>(data: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    data.get(range.clone()).unwrap_or_default()
}

/// The inner frame of packet `i`, once opened (empty if it was not).
fn inner_frame<'a>(
    packets: &'a RecvBatch,
    plain: &[Result<Range<usize>, DropReason>],
    i: usize,
) -> &'a [u8] {
    match &plain[i] {
        Ok(range) => payload(packets.get(i).data, range)
            .get(vxlan::HEADER_LEN..)
            .unwrap_or_default(),
        Err(_) => &[],
    }
}
