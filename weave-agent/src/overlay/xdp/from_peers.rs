//! Peers to bridge: VXLAN packets received in batches of GRO datagrams
//! (`gro`: a peer's GSO datagram of up to 64 packets crosses the receiving
//! stack as one), read where they were received, and carried out as their
//! plan says: the inner frames of a TCP stream merged into GSO super-frames
//! and sent into the bridge through `inject` straight from the receive
//! buffers; otherwise copied into transmit frames of the UMEM for the
//! `AF_XDP` TX ring (the only copy this direction makes, and only for
//! frames that take that way); broadcasts passed on down the origin's
//! tree and packets for other peers relayed. In password mode every packet
//! is first opened in place with the sending neighbour's key (dropped and
//! counted if it does not authenticate or is a replay), a relayed one
//! sealed again in place for its next hop, and broadcasts passed on sealed
//! for each child through seal slots. Data-path heartbeats are diverted to
//! the mesh before any of this.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Shared;
use super::sealed::{self, seal_in_place};
use super::umem::{BridgeTx, DATA_OFFSET, Frame, RING_SIZE};
use crate::overlay::counters::DropReason;
use crate::overlay::decide::macs::MacJournal;
use crate::overlay::decide::routes::RoutesReader;
use crate::overlay::decide::verdict::{FromPeer, FromPeerBatch};
use crate::overlay::engine::carry::{
    Carrier, Onward, Tally, carry_out, for_each_sole_seal, send_sealed,
};
use crate::overlay::engine::seal_slots::SealSlots;
use crate::overlay::engine::{self, BATCH, nothing_came};
use crate::overlay::sys;
use crate::overlay::sys::gro::GroRecv;
use crate::overlay::sys::gso;
use crate::overlay::sys::inject::Injector;
use crate::overlay::sys::mmsg::{Batch, SendQueue};
use crate::overlay::wire::coalesce::{self, Run};
use crate::overlay::wire::vxlan;

/// Relays and broadcasts passed on: room for a batch sent to four peers each.
const FORWARD_QUEUE: usize = BATCH * 4;
/// Datagrams taken in one receive; with GRO each holds up to
/// `gso::MAX_SEGMENTS` packets from a peer that sends with GSO.
const DATAGRAMS: usize = 16;

/// A received packet: where it lies in the receive buffers, and who sent it.
#[derive(Clone, Copy)]
struct Arrival {
    at: usize,
    len: usize,
    sender: Option<SocketAddr>,
}

/// Where, in the receive buffers, packet `i`'s plain VXLAN packet lies, or
/// why it is dropped.
type Opened = Result<Range<usize>, DropReason>;

/// The peers-to-bridge direction: the transmitting half of the UMEM, the
/// packet socket for super-frames, and the buffers of its batches,
/// allocated once. Run by whichever worker holds it (see `drive`), one
/// batch at a time.
pub(super) struct PeersToBridge {
    shared: Arc<Shared>,
    half: BridgeTx,
    injector: Option<Injector>,
    runs: Vec<Run>,
    recv: GroRecv,
    arrivals: Vec<Arrival>,
    plain: Vec<Opened>,
    verdicts: Vec<FromPeer>,
    /// Password mode: relays sealed again where they lie.
    in_place: Vec<Option<Opened>>,
    /// Which packets' frames enter the bridge, then those packets in order.
    kept: Vec<bool>,
    to_bridge: Vec<usize>,
    /// The frames copied into transmit chunks for the TX ring.
    deliver: Vec<Frame>,
    forward: SendQueue,
    reader: RoutesReader,
    changes: MacJournal,
    slots: SealSlots,
    /// Whether the last batch sent frames into the bridge.
    fed_the_bridge: bool,
}

impl PeersToBridge {
    pub(super) fn new(shared: Arc<Shared>, half: BridgeTx, injector: Option<Injector>) -> Self {
        let core = &shared.core;
        let capacity = DATAGRAMS * gso::MAX_SEGMENTS;
        Self {
            runs: Vec::with_capacity(capacity),
            recv: GroRecv::new(DATAGRAMS),
            arrivals: Vec::with_capacity(capacity),
            plain: Vec::with_capacity(capacity),
            verdicts: Vec::with_capacity(capacity),
            in_place: Vec::with_capacity(capacity),
            kept: Vec::with_capacity(capacity),
            to_bridge: Vec::with_capacity(capacity),
            deliver: Vec::with_capacity(RING_SIZE as usize),
            forward: SendQueue::new(FORWARD_QUEUE, core.udp_family),
            reader: RoutesReader::new(&core.routes),
            changes: MacJournal::default(),
            slots: SealSlots::new(core.max_frame),
            fed_the_bridge: false,
            injector,
            half,
            shared,
        }
    }

    /// Whether the last batch sent frames into the bridge: replies to them
    /// (a ping's) may already wait in the other direction's RX ring.
    pub(super) const fn fed_the_bridge(&self) -> bool {
        self.fed_the_bridge
    }

    /// Carries one batch of datagrams from peers, without waiting; false
    /// when none was queued.
    pub(super) fn run_batch(&mut self) -> bool {
        let Self {
            shared,
            half,
            injector,
            runs,
            recv,
            arrivals,
            plain,
            verdicts,
            in_place,
            kept,
            to_bridge,
            deliver,
            forward,
            reader,
            changes,
            slots,
            fed_the_bridge,
        } = self;
        let core = &shared.core;
        *fed_the_bridge = false;
        half.reclaim();
        if half.free.is_empty() {
            // Every transmit chunk is in the kernel's hands: push them on,
            // and give it a moment (work remains: this is no idle wait).
            half.kick();
            std::thread::sleep(std::time::Duration::from_micros(50));
            return true;
        }
        // Only as many datagrams as the free chunks can hold when full
        // (should none of it merge, all of it takes the TX ring).
        let datagrams = (half.free.len() / gso::MAX_SEGMENTS).clamp(1, recv.capacity());
        let received = recv.recv(core.udp.as_fd(), datagrams, false);
        let now = Instant::now();
        if let Err(e) = received {
            if !nothing_came(&e) {
                engine::back_off(&e, "udp receive");
            }
            // Frames left on the TX ring by a kick that ran out of rounds.
            half.kick();
            return false;
        }
        let mut tally = Tally::new(&core.counters, "from peers");
        arrivals.clear();
        for d in 0..recv.len() {
            let datagram = recv.get(d);
            let sender = sys::read_sockaddr(datagram.addr);
            if datagram.truncated {
                tally.dropped(DropReason::Oversize, datagram.bytes.len(), sender);
                continue;
            }
            let mut at = datagram.at;
            for packet in datagram.segments() {
                let len = packet.len();
                // Heartbeats go to the mesh, before anything reads them as
                // VXLAN (even the last, shorter segment of a GRO datagram).
                if !core.heartbeats.divert(packet, sender) {
                    arrivals.push(Arrival { at, len, sender });
                }
                at += len;
            }
        }
        let n = arrivals.len();
        let routes = reader.refresh(&core.routes);
        let buffers = recv.buffers_mut();
        plain.clear();
        plain.extend(
            arrivals
                .iter()
                .map(|a| sealed::open(buffers, a.at, a.len, a.sender, routes)),
        );
        let mut batch = FromPeerBatch::default();
        core.decide(n, now, verdicts, Some(changes), |macs, i| match &plain[i] {
            Ok(range) => match buffers.get(range.clone()) {
                Some(packet) => batch.from_peer(
                    arrivals[i].sender,
                    packet,
                    core.max_frame,
                    routes,
                    macs,
                    now,
                ),
                None => FromPeer::Drop(DropReason::Oversize),
            },
            Err(reason) => FromPeer::Drop(*reason),
        });
        in_place.clear();
        in_place.resize(n, None);
        let inner_len = |buffers: &[u8], i: usize| inner_frame(buffers, &plain[i]).len();
        for_each_sole_seal(
            verdicts,
            routes,
            buffers,
            inner_len,
            |buffers, i, onward| {
                let sealed = plain[i].clone().and_then(|packet| {
                    let keys = routes.keys(onward.hop).ok_or(DropReason::NoRoute)?;
                    let frame = packet.start + vxlan::HEADER_LEN;
                    let len = packet.len() - vxlan::HEADER_LEN;
                    seal_in_place(buffers, frame, len, onward.vni, keys)
                });
                in_place[i] = Some(sealed);
            },
        );

        let buffers = recv.buffers();
        kept.clear();
        kept.resize(n, false);
        let mut forwarded = forward.batch(core.udp.as_fd());
        let mut out = ToBridge {
            buffers,
            plain,
            in_place,
            arrivals,
            kept,
            forwarded: &mut forwarded,
        };
        carry_out(verdicts, routes, &mut out, slots, &mut tally);
        let mut relayed = tally.sends(forwarded.finish());
        let frame_of = |i| inner_frame(buffers, &plain[i]);
        let sealing = (&mut *forward, core.udp.as_fd());
        // Relayed frames too big for the next hop with DF are dropped: an
        // answer injected here would come back out of the port it entered.
        relayed += send_sealed(slots, frame_of, routes, sealing, None, &mut tally);
        tally.counts.relayed += relayed;

        // Segments of a TCP stream that arrived together enter the bridge as
        // one GSO super-frame, through the injector, straight from the
        // receive buffers; then the whole batch goes that way, to stay in
        // order. Otherwise the frames are copied into transmit chunks.
        to_bridge.clear();
        to_bridge.extend((0..n).filter(|&i| kept[i]));
        let frame = |k: usize| frame_of(to_bridge[k]);
        let mut delivered = 0;
        let mut injected_all = false;
        if let Some(injector) = injector.as_mut() {
            coalesce::plan(to_bridge.len(), frame, runs);
            if runs.len() < to_bridge.len() {
                delivered = tally.sends(injector.send(runs, frame));
                tally.counts.received += delivered;
                tally.counts.coalesced += runs
                    .iter()
                    .filter(|r| r.count > 1)
                    .map(|r| r.count as u64)
                    .sum::<u64>();
                injected_all = true;
            }
        }
        let mut no_chunk = 0;
        let copied = if injected_all { 0 } else { to_bridge.len() };
        for k in 0..copied {
            let inner = frame(k);
            let Some(mut chunk) = half.free.pop() else {
                no_chunk += 1;
                continue;
            };
            let start = DATA_OFFSET as usize;
            // `from_peer` admits frames of at most the MTU, which fits a
            // chunk; the slice's bounds say so again.
            let room = half.mem.chunk_mut(&mut chunk);
            let Some(room) = room.get_mut(start..start + inner.len()) else {
                half.free.push(chunk);
                tally.counts.drop(DropReason::Oversize, 1);
                continue;
            };
            room.copy_from_slice(inner);
            deliver.push(Frame {
                chunk,
                start,
                len: inner.len(),
                more: false,
            });
        }
        if no_chunk > 0 {
            shared.no_frame.fetch_add(no_chunk, Ordering::Relaxed);
        }
        let queued = half.transmit(deliver);
        // The TX ring is as large as the pool of transmit chunks, so none
        // can be left over; but never lose track of one.
        if !deliver.is_empty() {
            tally
                .counts
                .drop(DropReason::SendFailed, deliver.len() as u64);
            half.free.extend(deliver.drain(..).map(|f| f.chunk));
        }
        half.kick();
        tally.counts.received += queued as u64;
        *fed_the_bridge = delivered > 0 || queued > 0;
        drop(tally);
        shared.mirror(changes);
        true
    }
}

/// Where each received packet's frames go: into the bridge (marked, and
/// sent once the batch is planned), on to peers straight from the receive
/// buffers (sealed in place first for a relay in password mode), or
/// through a seal slot (a broadcast passed on sealed to several).
struct ToBridge<'b, 'q, 'd> {
    buffers: &'d [u8],
    plain: &'d [Opened],
    in_place: &'d [Option<Opened>],
    arrivals: &'d [Arrival],
    kept: &'b mut [bool],
    forwarded: &'b mut Batch<'q, 'd>,
}

impl Carrier for ToBridge<'_, '_, '_> {
    fn len(&self, frame: usize) -> usize {
        self.arrivals[frame].len
    }

    fn inner_len(&self, frame: usize) -> usize {
        inner_frame(self.buffers, &self.plain[frame]).len()
    }

    fn sender(&self, frame: usize) -> Option<SocketAddr> {
        self.arrivals[frame].sender
    }

    fn deliver(&mut self, frame: usize) {
        self.kept[frame] = true;
    }

    fn send_clear(&mut self, frame: usize, onward: &Onward) {
        let frame = inner_frame(self.buffers, &self.plain[frame]);
        let header = vxlan::header(onward.vni);
        self.forwarded.push(Some(header), frame, Some(&onward.to));
    }

    fn seal_in_place(&mut self, frame: usize, onward: &Onward) -> Option<Result<(), DropReason>> {
        let sealed = self.in_place[frame].clone()?.map(|range| {
            self.forwarded
                .push(None, &self.buffers[range], Some(&onward.to));
        });
        Some(sealed)
    }
}

/// The inner frame of a packet in `buffers`, once opened (empty if it was not).
fn inner_frame<'a>(buffers: &'a [u8], packet: &Opened) -> &'a [u8] {
    match packet {
        Ok(range) => buffers
            .get(range.start + vxlan::HEADER_LEN..range.end)
            .unwrap_or_default(),
        Err(_) => &[],
    }
}
