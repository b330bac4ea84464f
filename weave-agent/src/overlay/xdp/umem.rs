//! The `AF_XDP` sockets on the datapath port and their UMEM: one memory area
//! of [`FRAMES`] frames, split once into two pools that never mix, shared by
//! a receiving and a transmitting socket on the port's queue.
//!
//! - Bridge to peers: frames the kernel copies into from the fill ring
//!   (`BridgeRx`: fill + RX ring of the receiving socket); the agent sends
//!   them to peers straight from the UMEM and gives them back to the fill
//!   ring.
//! - Peers to bridge: frames the agent copies VXLAN packets into
//!   (`BridgeTx`: TX ring of the transmitting socket + completion ring);
//!   the inner frame goes out through the TX ring, and the frame is reused
//!   once the completion ring returns it.
//!
//! Each half belongs to one worker thread; both keep the [`Memory`] alive,
//! which unmaps the area only after the sockets and their rings are gone.
//! Copy mode only: veth has no zero-copy `AF_XDP`.
//!
//! Who may touch which bytes is checked by the compiler, not by comments: a
//! chunk's bytes are reachable only through a [`Chunk`], a token that exists
//! once per chunk that is in the agent's hands (taken from the RX ring, the
//! completion ring or the initial pool) and is consumed when the chunk goes
//! back to the kernel. Shared and exclusive borrows of a token give shared
//! and exclusive slices of its chunk; the only `unsafe` is here.

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
    User,
};

use crate::overlay::error::OverlayError;

/// Frame size: the kernel accepts 2048 or 4096 (a page) in aligned mode.
pub(super) const FRAME_SIZE: u32 = 4096;
/// Frames in the UMEM: half for each direction (16 MiB in all).
pub(super) const FRAMES: u32 = 4096;
/// Entries in each ring: one direction's frames fit in its rings.
pub(super) const RING_SIZE: u32 = FRAMES / 2;
/// Where a frame's data starts in its chunk: the kernel leaves
/// `XDP_PACKET_HEADROOM` (256) in front in copy mode; the agent does the same
/// for the frames it transmits, with the VXLAN header just before.
pub(super) const DATA_OFFSET: u64 = 256;
/// The largest frame a chunk holds.
pub(super) const MAX_FRAME: usize = (FRAME_SIZE as u64 - DATA_OFFSET) as usize;
/// Receive chunks kept out of the fill ring: the agent writes the segments
/// of the TCP super-frames it cuts into them (`segment_super_frames`), so
/// that segments travel the same way as frames the kernel wrote.
pub(super) const SEGMENT_CHUNKS: u32 = 512;
/// Bind flag `XDP_USE_SG` (`<linux/if_xdp.h>`, not in xdpilone): frames
/// larger than a chunk arrive as several descriptors.
const XDP_USE_SG: u16 = 1 << 4;
/// Descriptor option `XDP_PKT_CONTD`: the frame goes on in the next
/// descriptor.
const XDP_PKT_CONTD: u32 = 1;

/// The memory behind the UMEM, and the sockets. Fields drop in order: the
/// sockets and their registration first, the mapping last.
pub(super) struct Memory {
    receiver: User,
    _transmitter: User,
    _umem: Umem,
    area: Area,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the raw pointers are justified in the SAFETY comment above"
)]
// SAFETY: every field may be used from, and dropped on, any thread:
// - `receiver`: a socket descriptor (shared through an Arc inside xdpilone)
//   and its configuration; only `fd()` and `statistics_v2()` (getsockopt)
//   are called on it after `open`, both thread-safe system calls.
// - `_transmitter`, `_umem`: never used after `open`, only kept alive and
//   dropped (closing descriptors). xdpilone's `Umem` is not Send because
//   its rings must not be driven from two threads; the rings live in the
//   halves, each owned by one worker, and `_umem` itself is never driven.
// - `area`: plain memory shared with the kernel; no byte of it is reached
//   but through a `Chunk`, of which exactly one exists per chunk in the
//   agent's hands, so two threads can never alias a chunk.
unsafe impl Send for Memory {}
// SAFETY: as for Send; `&Memory` only hands out slices of chunks whose
// tokens the caller holds (shared or exclusive, as the token is borrowed).
unsafe impl Sync for Memory {}

/// One chunk of the UMEM in the agent's hands: the only way to its bytes
/// (see the module docs). Neither Copy nor Clone.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    /// The chunk's start, as an address in the UMEM.
    base: u64,
}

impl Chunk {
    /// The token for the chunk that UMEM address `addr` lies in.
    ///
    /// # Safety
    /// The chunk must have just been handed to the agent (read from the RX
    /// or completion ring, or never given to the kernel), and no other
    /// token for it may exist.
    unsafe fn handed_over(addr: u64) -> Self {
        Self {
            base: addr - addr % u64::from(FRAME_SIZE),
        }
    }

    /// The UMEM address `offset` bytes into the chunk, for a ring descriptor.
    pub(super) const fn addr(&self, offset: usize) -> u64 {
        self.base + offset as u64
    }
}

/// A frame in a chunk: `len` bytes from `start`; with `more`, the frame
/// goes on in the next descriptor's chunk (a multi-buffer frame).
#[derive(Debug)]
pub(super) struct Frame {
    pub chunk: Chunk,
    pub start: usize,
    pub len: usize,
    pub more: bool,
}

impl Frame {
    const fn desc(&self) -> XdpDesc {
        XdpDesc {
            addr: self.chunk.addr(self.start),
            len: self.len as u32,
            options: 0,
        }
    }
}

impl Memory {
    pub(super) fn fd(&self) -> RawFd {
        self.receiver.as_raw_fd()
    }

    /// The receiving socket, borrowed: for poll(2) and the XSKS map.
    pub(super) fn borrowed_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }

    /// Frames the kernel dropped on the way in: RX ring full, or no frame
    /// in the fill ring.
    pub(super) fn rx_dropped(&self) -> u64 {
        self.receiver.statistics_v2().map_or(0, |s| {
            s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs
        })
    }

    /// The bytes of `chunk`, all [`FRAME_SIZE`] of them.
    pub(super) fn chunk<'a>(&'a self, chunk: &'a Chunk) -> &'a [u8] {
        // SAFETY: a token's chunk lies inside the area (tokens are made
        // only for addresses the kernel or `open` gave, all inside it), and
        // its holder is the only one who can reach these bytes: while this
        // shared borrow of the token lives, nobody has an exclusive one.
        unsafe { std::slice::from_raw_parts(self.start_of(chunk), FRAME_SIZE as usize) }
    }

    /// The bytes of `chunk`, writable.
    pub(super) fn chunk_mut<'a>(&'a self, chunk: &'a mut Chunk) -> &'a mut [u8] {
        // SAFETY: as in `chunk`; the token is borrowed exclusively, so no
        // other slice of this chunk lives.
        unsafe { std::slice::from_raw_parts_mut(self.start_of(chunk), FRAME_SIZE as usize) }
    }

    /// The frame's bytes (empty if it does not lie inside its chunk).
    pub(super) fn frame<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.chunk(&frame.chunk)
            .get(frame.start..frame.start + frame.len)
            .unwrap_or_default()
    }

    fn start_of(&self, chunk: &Chunk) -> *mut u8 {
        debug_assert!(chunk.base < u64::from(FRAMES) * u64::from(FRAME_SIZE));
        // SAFETY: inside the area (see `chunk`).
        unsafe { self.area.ptr.as_ptr().add(chunk.base as usize) }
    }
}

/// An anonymous, page-aligned mapping; unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn map(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous private mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The bridge-to-peers half: frames arrive in the RX ring.
pub(super) struct BridgeRx {
    fill: FillQueue,
    pub rx: RingRx,
    pub mem: Arc<Memory>,
    /// Chunks for segments of super-frames, never in the kernel's hands
    /// (see [`SEGMENT_CHUNKS`]).
    pub segment_chunks: Vec<Chunk>,
}

/// Where the chunks for segments start: the last [`SEGMENT_CHUNKS`] of the
/// receive half.
const FIRST_SEGMENT_CHUNK: u64 = (RING_SIZE - SEGMENT_CHUNKS) as u64 * FRAME_SIZE as u64;

impl BridgeRx {
    /// Takes up to `max` descriptors from the RX ring into `frames`, and
    /// more if the last one's frame goes on (the kernel publishes every
    /// descriptor of a frame at once), so that `frames` never ends inside
    /// a frame.
    pub(super) fn receive(&mut self, max: u32, frames: &mut Vec<Frame>) {
        let mut want = max;
        loop {
            let mut ring = self.rx.receive(want);
            frames.extend(ring.by_ref().map(|desc| Frame {
                // SAFETY: the kernel hands the chunk over with its descriptor;
                // it had it from the fill ring, where its previous token ended.
                chunk: unsafe { Chunk::handed_over(desc.addr) },
                start: (desc.addr % u64::from(FRAME_SIZE)) as usize,
                len: desc.len as usize,
                more: desc.options & XDP_PKT_CONTD != 0,
            }));
            ring.release();
            drop(ring);
            if !frames.last().is_some_and(|f| f.more) || self.rx.available() == 0 {
                break;
            }
            want = 32;
        }
    }

    /// Gives every frame's chunk back: to the kernel through the fill ring,
    /// or, for a segment the agent wrote, to the segment chunks. A
    /// reservation can be shorter than asked (it trusts a cached view of
    /// the ring first), so it repeats until every chunk is back: a chunk
    /// left out would be lost to the ring for good.
    pub(super) fn give_back(&mut self, frames: &mut Vec<Frame>) {
        let mut i = 0;
        while i < frames.len() {
            if frames[i].chunk.base >= FIRST_SEGMENT_CHUNK {
                let segment = frames.swap_remove(i);
                self.segment_chunks.push(segment.chunk);
            } else {
                i += 1;
            }
        }
        while !frames.is_empty() {
            let mut fill = self.fill.fill(frames.len() as u32);
            let n = fill.insert(frames.iter().map(|f| f.chunk.base)) as usize;
            fill.commit();
            drop(fill);
            if n == 0 {
                // Cannot happen: the ring holds every receive chunk.
                debug_assert!(false, "fill ring full");
                break;
            }
            frames.drain(..n);
        }
    }
}

/// The peers-to-bridge half: frames leave through the TX ring.
pub(super) struct BridgeTx {
    tx: RingTx,
    completion: CompletionQueue,
    /// Transmit chunks not in the kernel's hands.
    pub free: Vec<Chunk>,
    pub mem: Arc<Memory>,
}

impl BridgeTx {
    /// Takes back the transmit chunks the kernel is done with.
    pub(super) fn reclaim(&mut self) {
        let mut done = self.completion.complete(RING_SIZE);
        while let Some(addr) = done.read() {
            // SAFETY: the kernel is done with it; its token ended when it
            // went into the TX ring.
            self.free.push(unsafe { Chunk::handed_over(addr) });
        }
        done.release();
    }

    /// Queues the frames on the TX ring, from the front; returns how many
    /// (the rest stay in `frames`).
    pub(super) fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize {
        let mut queued = 0;
        while queued < frames.len() {
            let mut tx = self.tx.transmit((frames.len() - queued) as u32);
            let n = tx.insert(frames[queued..].iter().map(Frame::desc)) as usize;
            tx.commit();
            drop(tx);
            if n == 0 {
                break;
            }
            queued += n;
        }
        // In the kernel's hands now: their tokens end here.
        frames.drain(..queued);
        queued
    }

    /// Makes the kernel transmit what the TX ring holds: in copy mode it
    /// only does so inside `sendto`, at most 32 frames per call. Bounded, so
    /// that a peer that takes nothing (its queue full) cannot hold the
    /// worker here.
    pub(super) fn kick(&self) {
        let mut rounds = self.tx.pending() / 32 + 2;
        while self.tx.pending() > 0 && rounds > 0 {
            self.tx.wake();
            rounds -= 1;
        }
    }
}

/// Opens the socket on queue 0 of `ifname` (a veth has one), in copy mode
/// (with `multi_buffer`, taking frames over several descriptors), with the
/// fill ring full. The caller registers it in the XSKS map after
/// this returns (a socket in the map before its fill ring has frames would
/// see frames dropped).
pub(super) fn open(
    ifname: &str,
    multi_buffer: bool,
) -> Result<(BridgeRx, BridgeTx, Arc<Memory>), OverlayError> {
    let error = |op: &'static str| {
        let iface = ifname.to_owned();
        move |source: io::Error| OverlayError::Xsk { op, iface, source }
    };
    let errno = |e: xdpilone::Errno| io::Error::from_raw_os_error(e.get_raw());
    let area = Area::map((FRAMES * FRAME_SIZE) as usize).map_err(error("map the memory of"))?;
    let config = UmemConfig {
        fill_size: RING_SIZE,
        complete_size: RING_SIZE,
        frame_size: FRAME_SIZE,
        headroom: 0,
        flags: 0,
    };
    let slice = NonNull::slice_from_raw_parts(area.ptr, area.len);
    // SAFETY: the area is page aligned, FRAMES * FRAME_SIZE long, and lives
    // in `Memory` after the UMEM and every ring.
    let umem =
        unsafe { Umem::new(config, slice) }.map_err(|e| error("register the UMEM of")(errno(e)))?;
    let mut info = IfInfo::invalid();
    let name = CString::new(ifname)
        .map_err(|_| error("name the interface of")(io::ErrorKind::InvalidInput.into()))?;
    info.from_name(&name)
        .map_err(|e| error("find the interface of")(errno(e)))?;
    info.set_queue(0);
    // Two sockets on the queue, sharing the UMEM and its fill and
    // completion rings: one only receives (the XSKS map's), one only
    // transmits. In copy mode poll(2) on a socket with a TX ring transmits
    // too, under the socket's TX lock: with one socket, the thread waiting
    // for frames from the bridge would stall on (and do) the other
    // thread's transmissions.
    let socket = Socket::with_shared(&info, &umem).map_err(|e| error("create")(errno(e)))?;
    let device = umem
        .fq_cq(&socket)
        .map_err(|e| error("map the fill and completion rings of")(errno(e)))?;
    let receiver = umem
        .rx_tx(
            &socket,
            &SocketConfig {
                rx_size: NonZeroU32::new(RING_SIZE),
                tx_size: None,
                bind_flags: SocketConfig::XDP_BIND_COPY | if multi_buffer { XDP_USE_SG } else { 0 },
            },
        )
        .map_err(|e| error("configure the RX ring of")(errno(e)))?;
    let rx = receiver
        .map_rx()
        .map_err(|e| error("map the RX ring of")(errno(e)))?;
    umem.bind(&receiver).map_err(|e| error("bind")(errno(e)))?;
    let socket = Socket::new(&info).map_err(|e| error("create")(errno(e)))?;
    let transmitter = umem
        .rx_tx(
            &socket,
            &SocketConfig {
                rx_size: None,
                tx_size: NonZeroU32::new(RING_SIZE),
                // A socket sharing a UMEM takes its mode from the first.
                bind_flags: 0,
            },
        )
        .map_err(|e| error("configure the TX ring of")(errno(e)))?;
    let tx = transmitter
        .map_tx()
        .map_err(|e| error("map the TX ring of")(errno(e)))?;
    umem.bind(&transmitter)
        .map_err(|e| error("bind the transmitting socket on")(errno(e)))?;
    let (mut fill, completion) = device.into_parts();
    // The first half of the chunks receives from the bridge (its last
    // SEGMENT_CHUNKS kept for segments), the second half transmits into it.
    let fill_chunks = RING_SIZE - SEGMENT_CHUNKS;
    let rx_frames = (0..fill_chunks).map(|i| u64::from(i) * u64::from(FRAME_SIZE));
    let mut writer = fill.fill(fill_chunks);
    let filled = writer.insert(rx_frames);
    writer.commit();
    drop(writer);
    if filled != fill_chunks {
        return Err(error("fill the fill ring of")(
            io::ErrorKind::OutOfMemory.into(),
        ));
    }
    let segment_chunks = (fill_chunks..RING_SIZE)
        // SAFETY: never given to the kernel; one token each.
        .map(|i| unsafe { Chunk::handed_over(u64::from(i) * u64::from(FRAME_SIZE)) })
        .collect();
    let free = (RING_SIZE..FRAMES)
        // SAFETY: never given to the kernel; one token each.
        .map(|i| unsafe { Chunk::handed_over(u64::from(i) * u64::from(FRAME_SIZE)) })
        .collect();
    let mem = Arc::new(Memory {
        receiver,
        _transmitter: transmitter,
        _umem: umem,
        area,
    });
    Ok((
        BridgeRx {
            fill,
            rx,
            mem: Arc::clone(&mem),
            segment_chunks,
        },
        BridgeTx {
            tx,
            completion,
            free,
            mem: Arc::clone(&mem),
        },
        mem,
    ))
}
