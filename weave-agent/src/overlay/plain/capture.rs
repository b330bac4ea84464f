//! Bridge to peers: frames captured on the datapath port, wrapped in VXLAN
//! and sent to the peers their verdict names.

use std::os::fd::AsFd;

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
        let flood_header = vxlan::header(ShortId::vni(me, ShortId::BROADCAST));
        let mut batch = queue.batch(shared.udp.as_fd());
        for (i, verdict) in verdicts.iter().enumerate() {
            let frame = frames.get(i);
            match *verdict {
                FromBridge::Flood => {
                    for (_, addr) in routes.children(me) {
                        batch.push(Some(flood_header), frame.data, Some(addr));
                    }
                }
                FromBridge::Unicast { peer, via } => {
                    let header = vxlan::header(ShortId::vni(me, peer));
                    batch.push(Some(header), frame.data, Some(&via));
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
        let outcome = batch.finish();
        counts.sent += outcome.sent;
        if let Some(error) = outcome.first_error {
            counts.drop(DropReason::SendFailed, outcome.failed - 1);
            dropped!(shared.counters, counts, DropReason::SendFailed, direction = "to peers", error = %error,);
        }
        shared.counters.add(&counts);
    }
}
