//! Bridge to peers: frames captured on the datapath port, wrapped in VXLAN
//! and sent to the peers their verdict names (sealed for each next hop in
//! password mode).

use std::os::fd::AsFd;

use super::sealed::Sealed;
use super::verdict::{FromBridge, from_bridge};
use super::{BATCH, Shared, batch_time};
use crate::overlay::counters::{Counts, DropReason, dropped};
use crate::overlay::forwarding::ShortId;
use crate::overlay::mmsg::{RecvBatch, SendQueue};
use crate::overlay::routes::RoutesReader;
use crate::overlay::sys;
use crate::overlay::vxlan;

/// Most frames flood to a few peers: room for a batch sent to four each
/// before the queue is flushed early.
const SEND_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared) {
    let mut frames = RecvBatch::new(BATCH, shared.max_frame);
    let mut queue = SendQueue::new(SEND_QUEUE, shared.udp_family);
    let mut verdicts: Vec<FromBridge> = Vec::with_capacity(BATCH);
    let mut reader = RoutesReader::new(&shared.routes);
    let mut sealed = Sealed::new(shared.max_frame);
    while !shared.stopping() {
        if !shared.receive(&mut frames, shared.datapath.as_fd(), "datapath") {
            continue;
        }
        let now = batch_time();
        let routes = reader.refresh(&shared.routes);
        let mut counts = Counts::default();
        verdicts.clear();
        {
            let mut macs = shared.macs();
            macs.expire(now);
            verdicts.extend((0..frames.len()).map(|i| {
                let frame = frames.get(i);
                if sys::packet_type(frame.addr) == sys::PACKET_OUTGOING {
                    // Sent by this host (a kernel without
                    // PACKET_IGNORE_OUTGOING shows them): not for peers.
                    FromBridge::Local
                } else if frame.truncated {
                    FromBridge::Drop(DropReason::Oversize)
                } else {
                    from_bridge(frame.data, shared.max_frame, routes, &mut macs, now)
                }
            }));
        }

        let me = routes.me();
        let encrypted = routes.encrypted();
        let flood_vni = ShortId::vni(me, ShortId::BROADCAST);
        let flood_header = vxlan::header(flood_vni);
        let mut batch = queue.batch(shared.udp.as_fd());
        for (i, verdict) in verdicts.iter().enumerate() {
            let frame = frames.get(i);
            match *verdict {
                FromBridge::Flood => {
                    for (child, addr) in routes.children(me) {
                        if encrypted {
                            sealed.push(i, flood_vni, *child, *addr);
                        } else {
                            batch.push(Some(flood_header), frame.data, Some(addr));
                        }
                    }
                }
                FromBridge::Unicast { peer, via } => {
                    let vni = ShortId::vni(me, peer);
                    if !encrypted {
                        batch.push(Some(vxlan::header(vni)), frame.data, Some(&via));
                    } else if let Some((hop, _)) = routes.next_hop(peer) {
                        // Never in clear: without a hop (so without keys), dropped.
                        sealed.push(i, vni, hop, via);
                    } else {
                        dropped!(
                            shared.counters,
                            counts,
                            DropReason::NoRoute,
                            direction = "to peers",
                            len = frame.len,
                        );
                    }
                }
                FromBridge::Local => {}
                FromBridge::Drop(reason) => {
                    dropped!(
                        shared.counters,
                        counts,
                        reason,
                        direction = "to peers",
                        len = frame.len,
                    );
                }
            }
        }
        let mut outcome = batch.finish();
        if encrypted {
            outcome.merge(sealed.send(
                |i| frames.get(i).data,
                routes,
                &mut queue,
                shared.udp.as_fd(),
                &shared.counters,
                &mut counts,
            ));
        }
        counts.sent += outcome.sent;
        if let Some(error) = outcome.first_error {
            counts.drop(DropReason::SendFailed, outcome.failed - 1);
            dropped!(shared.counters, counts, DropReason::SendFailed, direction = "to peers", error = %error,);
        }
        shared.counters.add(&counts);
    }
}
