//! MACs the decapsulation program saw behind neighbours, read from its ring
//! (`FASTDP_LEARNT`): frames it decapsulates never cross the agent, so
//! without these reports the agent would age the senders' MACs out and
//! their replies would flood through the slow path.

use std::os::fd::AsFd as _;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use weave_common::fastdp::Learnt;

use crate::mac::Mac;
use crate::overlay::forwarding::ShortId;

/// Most events handed on at once (the learner takes a lock per call).
const BATCH: usize = 256;

/// Waits up to `timeout` for reports, then hands every one to `learn` in
/// batches. Events of the wrong size cannot come from our program and are
/// skipped.
pub(crate) fn drain(
    ring: &mut RingBuf<MapData>,
    timeout: Duration,
    batch: &mut Vec<(Mac, ShortId)>,
    mut learn: impl FnMut(&[(Mac, ShortId)]),
) {
    if !crate::overlay::sys::wait_readable(ring.as_fd(), timeout) {
        return;
    }
    batch.clear();
    while let Some(item) = ring.next() {
        if let Some(event) = parse(&item) {
            batch.push(event);
        }
        drop(item);
        if batch.len() == BATCH {
            learn(batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        learn(batch);
    }
}

/// One ring event: a [`Learnt`] (MAC, then the peer as a native u16).
fn parse(bytes: &[u8]) -> Option<(Mac, ShortId)> {
    let bytes: &[u8; size_of::<Learnt>()] = bytes.try_into().ok()?;
    let mac = [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]];
    let peer = u16::from_ne_bytes([bytes[6], bytes[7]]);
    (peer < ShortId::BROADCAST.0).then_some((Mac(mac), ShortId(peer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_garbage_does_not() {
        let mut event = [2, 0, 0, 0, 0, 9, 0, 0];
        event[6..].copy_from_slice(&0x123u16.to_ne_bytes());
        assert_eq!(
            parse(&event),
            Some((Mac([2, 0, 0, 0, 0, 9]), ShortId(0x123)))
        );
        assert_eq!(parse(&event[..7]), None);
        event[6..].copy_from_slice(&0xfffu16.to_ne_bytes());
        assert_eq!(parse(&event), None);
    }
}
