//! Peers to bridge: VXLAN packets received on the data port, their inner
//! frames injected into the datapath port, broadcasts passed on down the
//! origin's tree and packets for other peers relayed unchanged. In password
//! mode every packet is first opened in place with the sending neighbour's
//! key (dropped and counted if it does not authenticate or is a replay),
//! and what is passed on is sealed again for its next hop.

use std::ops::Range;
use std::os::fd::AsFd;

use super::sealed::Sealed;
use super::verdict::{FromPeer, from_peer};
use super::{BATCH, Shared, batch_time};
use crate::overlay::counters::{Counts, DropReason, dropped};
use crate::overlay::forwarding::ShortId;
use crate::overlay::mmsg::{RecvBatch, SendQueue};
use crate::overlay::routes::{Routes, RoutesReader};
use crate::overlay::seal::{self, OpenError};
use crate::overlay::sys;
use crate::overlay::vxlan;

/// Relays and broadcasts passed on: room for a batch sent to four peers each.
const FORWARD_QUEUE: usize = BATCH * 4;

pub(super) fn run(shared: &Shared) {
    // Room for sealed packets, whether or not the mesh uses a password.
    let mut packets = RecvBatch::new(BATCH, vxlan::HEADER_LEN + seal::OVERHEAD + shared.max_frame);
    let mut sealed = Sealed::new(shared.max_frame);
    // Where each packet's plain VXLAN packet is in its slot, or why not.
    let mut plain: Vec<Result<Range<usize>, DropReason>> = Vec::with_capacity(BATCH);
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
        let encrypted = routes.encrypted();
        open_all(&mut packets, routes, &mut plain);
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
                } else if let Err(reason) = &plain[i] {
                    FromPeer::Drop(*reason)
                } else {
                    from_peer(
                        sender,
                        payload(packet.data, &plain[i]),
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
            let data = payload(packet.data, &plain[i]);
            match *verdict {
                FromPeer::Deliver {
                    origin,
                    sender,
                    broadcast,
                } => {
                    injected.push(None, &data[vxlan::HEADER_LEN..], None);
                    if broadcast {
                        let vni = ShortId::vni(origin, ShortId::BROADCAST);
                        for (child, addr) in routes.children(origin) {
                            if *child != sender && *child != origin {
                                if encrypted {
                                    sealed.push(i, vni, *child, *addr);
                                } else {
                                    forwarded.push(None, data, Some(addr));
                                }
                            }
                        }
                    }
                }
                FromPeer::Relay { via } => {
                    if !encrypted {
                        forwarded.push(None, data, Some(&via));
                    } else if let (Some(hop), Ok(v)) =
                        (routes.neighbour_at(&via), vxlan::parse(data))
                    {
                        sealed.push(i, v.vni, hop, via);
                    } else {
                        dropped!(
                            shared.counters,
                            counts,
                            DropReason::NoRoute,
                            direction = "relayed",
                            len = packet.len,
                        );
                    }
                }
                FromPeer::Drop(reason) => {
                    let from = sys::read_sockaddr(packet.addr);
                    dropped!(shared.counters, counts, reason, direction = "from peers", from = ?from, len = packet.len,);
                }
            }
        }
        let injected = injected.finish();
        let mut forwarded = forwarded.finish();
        if encrypted {
            let packets = &packets;
            let plain = &plain;
            forwarded.merge(sealed.send(
                |i| &payload(packets.get(i).data, &plain[i])[vxlan::HEADER_LEN..],
                routes,
                &mut forward,
                shared.udp.as_fd(),
                &shared.counters,
                &mut counts,
            ));
        }
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
        let opened = match routes.keys(neighbour) {
            None => Err(DropReason::Unauthenticated),
            Some(keys) => keys
                .recv
                .open_as_vxlan(packets.data_mut(i))
                .map_err(|e| match e {
                    OpenError::Replayed(_) => DropReason::Replayed,
                    OpenError::Truncated { .. } => DropReason::Malformed,
                    OpenError::Forged => DropReason::Unauthenticated,
                }),
        };
        plain.push(opened);
    }
}

/// The plain VXLAN packet in a slot: all of it, or what `open_all` left.
fn payload<'a>(data: &'a [u8], plain: &Result<Range<usize>, DropReason>) -> &'a [u8] {
    match plain {
        Ok(range) => data.get(range.clone()).unwrap_or_default(),
        Err(_) => &[],
    }
}
