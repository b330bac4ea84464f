//! Password mode on the AF_XDP path: frames sealed and opened in place in
//! their UMEM chunk, in the same wire format as the plain path
//! (`overlay::seal`), so that xdp and plain peers interoperate.
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
//! - peers to bridge: packets are received [`SEALED_LEAD`] bytes earlier in
//!   their chunk than plain ones, so that once [`open`] has decrypted them
//!   the plain VXLAN packet sits where it would have without a password
//!   (the inner frame at `DATA_OFFSET`, ready for the TX ring); a relayed
//!   one is sealed again in place with [`seal_in_place`] for the next hop.

use std::net::SocketAddr;

use super::umem::Memory;
use crate::overlay::counters::DropReason;
use crate::overlay::routes::Routes;
use crate::overlay::seal::{self, PeerKeys};
use crate::overlay::vxlan;

/// How much earlier in its chunk a sealed packet is received than a plain
/// one: the counter between the VXLAN header and the frame.
pub(super) const SEALED_LEAD: u64 = seal::COUNTER_LEN as u64;

/// Seals, for the connection of `keys`, the frame of `len` bytes at UMEM
/// address `frame` (its chunk owned by the caller, as for `Memory::frame`)
/// under VXLAN header `vni`; returns the sealed packet's address and length.
/// Drops: no room in the chunk (`Oversize`), key used up (`SendFailed`).
pub(super) fn seal_in_place(
    mem: &Memory,
    frame: u64,
    len: usize,
    vni: u32,
    keys: &PeerKeys,
) -> Result<(u64, usize), DropReason> {
    let start = frame
        .checked_sub(seal::FRAME_OFFSET as u64)
        .ok_or(DropReason::Oversize)?;
    let total = seal::FRAME_OFFSET + len + seal::TAG_LEN;
    // `at` checks that the whole sealed packet lies inside one chunk.
    let at = mem.at(start, total).ok_or(DropReason::Oversize)?;
    // SAFETY: inside the chunk (checked by `at`), which the caller owns and
    // of which it holds no other reference while this one lives.
    let packet = unsafe { std::slice::from_raw_parts_mut(at, total) };
    packet[..vxlan::HEADER_LEN].copy_from_slice(&vxlan::header(vni));
    let sealed = keys.send.seal(packet, len).map_err(|error| {
        tracing::debug!(%error, "xdp overlay: frame not sealed");
        DropReason::SendFailed
    })?;
    Ok((start, sealed))
}

/// Where the plain VXLAN packet of the `len` bytes received at UMEM
/// address `at` from `sender` is: the packet itself without a password;
/// in password mode, opened in place with the sender's key (see the
/// module docs). An unknown sender is left to the verdict to count.
pub(super) fn open(
    mem: &Memory,
    at: u64,
    len: usize,
    sender: Option<SocketAddr>,
    routes: &Routes,
) -> Result<(u64, usize), DropReason> {
    if !routes.encrypted() {
        return Ok((at, len));
    }
    let Some(neighbour) = sender.and_then(|a| routes.neighbour_at(&a)) else {
        return Ok((at, len));
    };
    let ptr = mem.at(at, len).ok_or(DropReason::Oversize)?;
    // SAFETY: the packet just received into a transmit frame the caller
    // owns, of which it holds no other reference while this one lives.
    let packet = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let plain = seal::open_from(routes.keys(neighbour), packet)?;
    Ok((at + plain.start as u64, plain.len()))
}
