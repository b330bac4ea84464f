//! The AF_XDP sockets on the datapath port and their UMEM: one memory area
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
//! Copy mode only: veth has no zero-copy AF_XDP.

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
    User,
};

use crate::overlay::error::OverlayError;

/// Frame size: the kernel accepts 2048 or 4096 (a page) in aligned mode.
pub const FRAME_SIZE: u32 = 4096;
/// Frames in the UMEM: half for each direction (16 MiB in all).
pub const FRAMES: u32 = 4096;
/// Entries in each ring: one direction's frames fit in its rings.
pub const RING_SIZE: u32 = FRAMES / 2;
/// Where a frame's data starts in its chunk: the kernel leaves
/// XDP_PACKET_HEADROOM (256) in front in copy mode; the agent does the same
/// for the frames it transmits, with the VXLAN header just before.
pub const DATA_OFFSET: u64 = 256;
/// The largest frame a chunk holds.
pub const MAX_FRAME: usize = (FRAME_SIZE as u64 - DATA_OFFSET) as usize;

/// The memory behind the UMEM, and the sockets. Fields drop in order: the
/// sockets and their registration first, the mapping last.
pub struct Memory {
    receiver: User,
    _transmitter: User,
    _umem: Umem,
    area: Area,
}

// SAFETY: the area is plain memory shared with the kernel; which frames a
// thread touches is decided by the rings each half owns (see the module docs).
unsafe impl Send for Memory {}
unsafe impl Sync for Memory {}

impl Memory {
    pub fn fd(&self) -> RawFd {
        self.receiver.as_raw_fd()
    }

    /// The receiving socket, borrowed: for poll(2) and the XSKS map.
    pub fn borrowed_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }

    /// Frames the kernel dropped on the way in: RX ring full, or no frame
    /// in the fill ring.
    pub fn rx_dropped(&self) -> u64 {
        self.receiver
            .statistics_v2()
            .map(|s| s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs)
            .unwrap_or(0)
    }

    /// A pointer to `len` bytes at UMEM address `addr`, or `None` when they
    /// do not lie inside one chunk of the area.
    pub fn at(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let chunk = addr / u64::from(FRAME_SIZE);
        let end = addr.checked_add(len as u64)?;
        if chunk >= u64::from(FRAMES) || end > (chunk + 1) * u64::from(FRAME_SIZE) {
            return None;
        }
        // SAFETY: addr + len lies inside the area (checked above).
        Some(unsafe { self.area.ptr.as_ptr().add(addr as usize) })
    }

    /// The frame of `len` bytes at `addr`, borrowed.
    ///
    /// # Safety
    /// The frame must belong to the caller (taken from the RX ring and not
    /// yet given back, or one of its own transmit frames): nobody writes it
    /// while the slice lives.
    pub unsafe fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        // SAFETY: in bounds (`at`), unaliased by the caller's contract.
        self.at(addr, len)
            .map(|p| unsafe { std::slice::from_raw_parts(p, len) })
    }
}

/// The start of the chunk `addr` lies in.
pub fn chunk_of(addr: u64) -> u64 {
    addr - addr % u64::from(FRAME_SIZE)
}

/// An anonymous, page-aligned mapping; unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn map(len: usize) -> io::Result<Area> {
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
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The bridge-to-peers half: frames arrive in the RX ring.
pub struct BridgeRx {
    pub fill: FillQueue,
    pub rx: RingRx,
    pub mem: Arc<Memory>,
}

/// The peers-to-bridge half: frames leave through the TX ring.
pub struct BridgeTx {
    pub tx: RingTx,
    pub completion: CompletionQueue,
    /// Transmit frames not in the kernel's hands (chunk addresses).
    pub free: Vec<u64>,
    pub mem: Arc<Memory>,
}

/// Opens the socket on queue 0 of `ifname` (a veth has one), in copy mode,
/// with the fill ring full. The caller registers it in the XSKS map after
/// this returns (a socket in the map before its fill ring has frames would
/// see frames dropped).
pub fn open(ifname: &str) -> Result<(BridgeRx, BridgeTx, Arc<Memory>), OverlayError> {
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
                bind_flags: SocketConfig::XDP_BIND_COPY,
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
    // The first half of the chunks receives from the bridge, the second
    // half transmits into it.
    let rx_frames = (0..RING_SIZE).map(|i| u64::from(i) * u64::from(FRAME_SIZE));
    let mut writer = fill.fill(RING_SIZE);
    let filled = writer.insert(rx_frames);
    writer.commit();
    drop(writer);
    if filled != RING_SIZE {
        return Err(error("fill the fill ring of")(
            io::ErrorKind::OutOfMemory.into(),
        ));
    }
    let free = (RING_SIZE..FRAMES)
        .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
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
            mem: mem.clone(),
        },
        BridgeTx {
            tx,
            completion,
            free,
            mem: mem.clone(),
        },
        mem,
    ))
}
