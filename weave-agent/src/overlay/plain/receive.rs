//! Peers to bridge: VXLAN packets received on the data port, their inner
//! frames injected into the datapath port, broadcasts passed on down the
//! origin's tree and packets for other peers relayed unchanged.

use std::os::fd::AsFd;

use super::verdict::{FromPeer, from_peer};
use super::{BATCH, Shared, batch_time};
use crate::overlay::counters::{Counts, DropReason, dropped};
use crate::overlay::mmsg::{RecvBatch, SendQueue};
use crate::overlay::routes::RoutesReader;
use crate::overlay::sys;
use crate::overlay::vxlan;

/// Relays and broadcasts passed on: room for a batch sent to four peers each.
const FORWARD_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared) {
    let mut packets = RecvBatch::new(BATCH, vxlan::HEADER_LEN + shared.max_frame);
    let mut inject = SendQueue::new(BATCH, libc::AF_PACKET);
    let mut forward = SendQueue::new(FORWARD_QUEUE, shared.udp_family);
    let mut verdicts: Vec<FromPeer> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&shared.routes);
    while !shared.stopping() {
        if !shared.receive(&mut packets, shared.udp.as_fd(), "udp") {
            continue;
        }
        let now = batch_time();
        let routes = reader.refresh(&shared.routes);
        let mut counts = Counts::default();
        verdicts.clear();
        {
            let mut macs = shared.macs();
            macs.expire(now);
            verdicts.extend((0..packets.len()).map(|i| {
                let packet = packets.get(i);
                let sender = sys::read_sockaddr(packet.addr);
                if packet.truncated {
                    match sender.and_then(|a| routes.neighbour_at(&a)) {
                        Some(_) => FromPeer::Drop(DropReason::Oversize),
                        None => FromPeer::Drop(DropReason::UnknownSender),
                    }
                } else {
                    from_peer(
                        sender,
                        packet.data,
                        shared.max_frame,
                        routes,
                        &mut macs,
                        now,
                    )
                }
            }));
        }

        let mut injected = inject.batch(shared.datapath.as_fd());
        let mut forwarded = forward.batch(shared.udp.as_fd());
        for (i, verdict) in verdicts.iter().enumerate() {
            let packet = packets.get(i);
            match *verdict {
                FromPeer::Deliver {
                    origin,
                    sender,
                    broadcast,
                } => {
                    injected.push(None, &packet.data[vxlan::HEADER_LEN..], None);
                    if broadcast {
                        for (child, addr) in routes.children(origin) {
                            if *child != sender && *child != origin {
                                forwarded.push(None, packet.data, Some(addr));
                            }
                        }
                    }
                }
                FromPeer::Relay { via } => forwarded.push(None, packet.data, Some(&via)),
                FromPeer::Drop(reason) => {
                    let from = sys::read_sockaddr(packet.addr);
                    dropped!(shared.counters, counts, reason, direction = "from peers", from = ?from, len = packet.len,);
                }
            }
        }
        let injected = injected.finish();
        let forwarded = forwarded.finish();
        counts.received += injected.sent;
        counts.relayed += forwarded.sent;
        for (outcome, direction) in [(injected, "into the bridge"), (forwarded, "to peers")] {
            if let Some(error) = outcome.first_error {
                counts.drop(DropReason::SendFailed, outcome.failed - 1);
                dropped!(shared.counters, counts, DropReason::SendFailed, direction = direction, error = %error,);
            }
        }
        shared.counters.add(&counts);
    }
}
