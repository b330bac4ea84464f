//! Password mode on the `AF_XDP` path: frames sealed in place in their UMEM
//! chunk and opened in place where they were received, in the same wire
//! format as the plain path (`overlay::seal`), so that xdp and plain peers
//! interoperate.
//!
//! A chunk has room on both sides of its frame (the kernel leaves
//! `DATA_OFFSET` bytes in front, and a frame is at most the MTU, far less
//! than the chunk): the VXLAN header and the counter go in the 16 bytes in
//! front of the frame, the tag in the 16 bytes behind it. Nothing is copied
//! for a frame with a single next hop; a frame flooded to several
//! neighbours (sealed under a different key for each) goes through the
//! plain path's scratch slots (`seal_slots`), as there it must be copied.
//!
//! - bridge to peers: [`seal_in_place`] on the frame the RX ring gave.
//! - peers to bridge: packets are [`open`]ed in place in the receive
//!   buffers where they arrived; a relayed one is sealed again in place
//!   with [`seal_in_place`] for the next hop (it takes exactly the bytes
//!   it arrived in: same frame, same overhead).

use std::net::SocketAddr;
use std::ops::Range;

use crate::overlay::counters::DropReason;
use crate::overlay::decide::routes::Routes;
use crate::overlay::wire::seal::{self, PeerKeys};
use crate::overlay::wire::vxlan;

/// Seals, in `chunk` (a chunk's bytes, or the receive buffers), the frame
/// of `len` bytes at `start` for the connection of `keys`, under VXLAN
/// header `vni`; returns where the sealed packet lies in `chunk`. Drops: no
/// room (`Oversize`), key used up (`SendFailed`).
pub(super) fn seal_in_place(
    chunk: &mut [u8],
    start: usize,
    len: usize,
    vni: u32,
    keys: &PeerKeys,
) -> Result<Range<usize>, DropReason> {
    let begin = start
        .checked_sub(seal::FRAME_OFFSET)
        .ok_or(DropReason::Oversize)?;
    let total = seal::FRAME_OFFSET + len + seal::TAG_LEN;
    let packet = chunk
        .get_mut(begin..begin + total)
        .ok_or(DropReason::Oversize)?;
    packet[..vxlan::HEADER_LEN].copy_from_slice(&vxlan::header(vni));
    let sealed = keys.send.seal(packet, len).map_err(|error| {
        tracing::debug!(%error, "xdp overlay: frame not sealed");
        DropReason::SendFailed
    })?;
    Ok(begin..begin + sealed)
}

/// Where, in `buffer`, the plain VXLAN packet of the `len` bytes received
/// at `start` from `sender` is: the packet itself without a password; in
/// password mode, opened in place with the sender's key. An unknown sender
/// is left to the verdict to count.
pub(super) fn open(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    sender: Option<SocketAddr>,
    routes: &Routes,
) -> Result<Range<usize>, DropReason> {
    let whole = start..start + len;
    if !routes.encrypted() {
        return Ok(whole);
    }
    let Some(neighbour) = sender.and_then(|a| routes.neighbour_at(&a)) else {
        return Ok(whole);
    };
    let packet = buffer.get_mut(whole).ok_or(DropReason::Oversize)?;
    let plain = seal::open_from(routes.keys(neighbour), packet)?;
    Ok(start + plain.start..start + plain.end)
}
