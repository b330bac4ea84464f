//! What the RX ring delivered, made ready to cross to peers: TCP
//! super-frames cut into segments, partial checksums finished.
//!
//! The bridge's datapath port keeps TCP segmentation offload on (see
//! `netlink::keep_tcp_segmentation_only`) and the datapath program runs as
//! generic, frags-aware XDP, so a container's TSO super-frame (up to 64 KiB)
//! reaches the agent whole, as one frame over several descriptors, instead
//! of being cut into MTU frames by the kernel before XDP. The agent cuts it
//! here (`wire::segment`), once per super-frame rather than paying XDP, the
//! `AF_XDP` copy and a ring slot per MTU frame, into chunks kept for that
//! (`umem::SEGMENT_CHUNKS`), each segment tagged like the super-frame was.
//! The segments then go on like any frame, out in UDP GSO datagrams with
//! iovecs pointing into their chunks; they share their super-frame's
//! headers, so its first segment's verdict serves them all
//! ([`Scratch::follows`]).
//!
//! The same offload leaves TCP and UDP checksums of smaller frames partial
//! (a veth's peer trusts them); `wire::partial_checksum` finishes those in
//! place.

use std::sync::atomic::{AtomicU64, Ordering};

use weave_common::datapath::META_LEN;

use super::umem::{BridgeRx, DATA_OFFSET, Frame, MAX_FRAME};
use crate::overlay::counters::DropReason;
use crate::overlay::engine::carry::Tally;
use crate::overlay::wire::partial_checksum;
use crate::overlay::wire::segment::SuperFrame;
use crate::overlay::wire::vxlan::ETHERNET_HEADER_LEN;

/// Most descriptors one frame can take: a 64 KiB frame over chunks of
/// 3840 bytes, and the kernel's own bound (`MAX_SKB_FRAGS` + 1).
const MAX_PIECES: usize = 18;

/// Scratch space of [`prepare`], allocated once.
#[derive(Default)]
pub(super) struct Scratch {
    staged: Vec<Frame>,
    done: Vec<Frame>,
    /// Whether each frame [`prepare`] gave is a segment after the first of
    /// its super-frame.
    follows: Vec<bool>,
}

impl Scratch {
    /// Whether frame `i` of the last [`prepare`] continues the super-frame
    /// of frame `i - 1`: same Ethernet header, same tag, so the same verdict.
    pub(super) fn follows(&self, i: usize) -> bool {
        self.follows.get(i).copied().unwrap_or(false)
    }
}

/// Rewrites `frames`, as received (a frame may span several descriptors),
/// into frames of at most `max_frame` bytes, one descriptor each: small
/// frames stay (their checksums finished), super-frames are replaced by
/// their segments, their own chunks given back to the kernel. What cannot
/// be cut is dropped and counted in `tally`; segments that find no chunk
/// are counted in `no_chunk`.
pub(super) fn prepare(
    half: &mut BridgeRx,
    frames: &mut Vec<Frame>,
    scratch: &mut Scratch,
    max_frame: usize,
    tally: &mut Tally<'_>,
    no_chunk: &AtomicU64,
) {
    let Scratch {
        staged,
        done,
        follows,
    } = scratch;
    follows.clear();
    if frames.iter().all(|f| !f.more && f.len <= max_frame) {
        for f in frames.iter_mut() {
            finish_checksum(half, f);
        }
        return;
    }
    staged.clear();
    let mut rest = frames.drain(..);
    // Every frame of `rest` ends in `staged` or `done`: none is lost.
    while let Some(first) = rest.next() {
        let mut parts: [Option<Frame>; MAX_PIECES] = Default::default();
        let mut count = 1;
        let mut more = first.more;
        parts[0] = Some(first);
        let mut overlong = false;
        while more {
            let Some(next) = rest.next() else { break };
            more = next.more;
            if count < MAX_PIECES {
                parts[count] = Some(next);
                count += 1;
            } else {
                overlong = true;
                done.push(next);
            }
        }
        let total: usize = parts.iter().flatten().map(|f| f.len).sum();
        if count == 1 && total <= max_frame {
            if let Some(mut f) = parts[0].take() {
                finish_checksum(half, &mut f);
                staged.push(f);
                follows.resize(staged.len(), false);
            }
            continue;
        }
        if overlong {
            tally.dropped(DropReason::Oversize, total, None);
        } else {
            let first = staged.len();
            cut(
                half,
                &parts[..count],
                total,
                max_frame,
                staged,
                tally,
                no_chunk,
            );
            follows.resize(staged.len(), true);
            if let Some(head) = follows.get_mut(first) {
                *head = false;
            }
        }
        done.extend(parts.into_iter().flatten());
    }
    drop(rest);
    std::mem::swap(frames, staged);
    half.give_back(done);
}

/// Finishes a partial TCP or UDP checksum of a frame that crosses whole.
fn finish_checksum(half: &BridgeRx, f: &mut Frame) {
    let chunk = half.mem.chunk_mut(&mut f.chunk);
    if let Some(frame) = chunk.get_mut(f.start..f.start + f.len) {
        partial_checksum::complete(frame);
    }
}

/// Cuts one super-frame (`parts`, `total` bytes) into segment chunks taken
/// from `half`, appended to `staged` with the super-frame's tag.
fn cut(
    half: &mut BridgeRx,
    parts: &[Option<Frame>],
    total: usize,
    max_frame: usize,
    staged: &mut Vec<Frame>,
    tally: &mut Tally<'_>,
    no_chunk: &AtomicU64,
) {
    let mem = &*half.mem;
    let mut pieces: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
    for (piece, part) in pieces.iter_mut().zip(parts.iter().flatten()) {
        *piece = mem.frame(part);
    }
    let pieces = &pieces[..parts.len()];
    let (Some(first), Ok(super_frame)) = (
        parts.first().and_then(Option::as_ref),
        SuperFrame::parse(pieces[0], total, max_frame - ETHERNET_HEADER_LEN),
    ) else {
        tally.dropped(DropReason::Oversize, total, None);
        return;
    };
    let tag = first
        .start
        .checked_sub(META_LEN)
        .and_then(|at| mem.chunk(&first.chunk).get(at..first.start))
        .and_then(|t| <[u8; META_LEN]>::try_from(t).ok())
        .unwrap_or_default();
    let offset = DATA_OFFSET as usize;
    for i in 0..super_frame.count() {
        let Some(mut chunk) = half.segment_chunks.pop() else {
            // More segments than chunks kept for them: the rest is lost,
            // as a full RX ring would lose it, and TCP sends it again.
            no_chunk.fetch_add((super_frame.count() - i) as u64, Ordering::Relaxed);
            return;
        };
        let bytes = mem.chunk_mut(&mut chunk);
        bytes[offset - META_LEN..offset].copy_from_slice(&tag);
        if let Some(len) = super_frame.write(pieces, i, &mut bytes[offset..offset + MAX_FRAME]) {
            staged.push(Frame {
                chunk,
                start: offset,
                len,
                more: false,
            });
        } else {
            half.segment_chunks.push(chunk);
            tally.dropped(DropReason::Malformed, total, None);
            return;
        }
    }
    tally.counts.segmented += 1;
}
