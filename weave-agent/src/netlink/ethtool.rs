//! Transmit offloads through the SIOCETHTOOL ioctl (the legacy ethtool
//! interface: no genetlink family needed), in the calling thread's network
//! namespace.
//!
//! Why: a veth transmits what its peer's stack built, and with offloads on
//! that is frames with unfinished checksums (`CHECKSUM_PARTIAL`) and TSO/GSO
//! super-frames of up to 64 KiB. A capture socket on the far end would pass
//! them on as they are: unusable on another host. With transmit checksum
//! offload off (which also turns TSO off), the kernel finishes checksums and
//! segments in software when the frame is transmitted.

use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

// From <linux/ethtool.h>: get/set commands taking a `struct ethtool_value`.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// The transmit offloads of an interface, as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOffloads {
    /// Any transmit checksum offload.
    pub checksum: bool,
    pub scatter_gather: bool,
    /// TCP segmentation offload (IPv4).
    pub tso: bool,
    /// Generic segmentation offload (done in software, late).
    pub gso: bool,
}

/// Turns off transmit checksum offload, and with it TSO, on `ifname`: frames
/// it transmits leave with complete checksums, at most MTU-sized.
pub fn disable_tx_offloads(ifname: &str) -> io::Result<()> {
    let socket = control_socket()?;
    ethtool(&socket, ifname, ETHTOOL_STXCSUM, Some(0))?;
    // The kernel drops TSO with checksum offload; make sure even where it
    // does not (a device that cannot change TSO has it off already).
    if ethtool(&socket, ifname, ETHTOOL_GTSO, None)? != 0 {
        ethtool(&socket, ifname, ETHTOOL_STSO, Some(0))?;
    }
    Ok(())
}

/// What [`disable_tx_offloads`] changes, and the rest of the picture.
pub fn tx_offloads(ifname: &str) -> io::Result<TxOffloads> {
    let socket = control_socket()?;
    let get = |cmd| ethtool(&socket, ifname, cmd, None).map(|v| v != 0);
    Ok(TxOffloads {
        checksum: get(ETHTOOL_GTXCSUM)?,
        scatter_gather: get(ETHTOOL_GSG)?,
        tso: get(ETHTOOL_GTSO)?,
        gso: get(ETHTOOL_GGSO)?,
    })
}

/// Any socket will do for SIOCETHTOOL; an `AF_INET` datagram one is cheapest.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs ethtool command `cmd` on `ifname` with `data` (a set), or without
/// (a get); returns the value the kernel wrote back.
fn ethtool(socket: &OwnedFd, ifname: &str, cmd: u32, data: Option<u32>) -> io::Result<u32> {
    // SAFETY: an all-zero ifreq is valid; the name and data pointer are set below.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= ifr.ifr_name.len() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let mut value = EthtoolValue {
        cmd,
        data: data.unwrap_or(0),
    };
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    const _: () = assert!(size_of::<EthtoolValue>() == 8);
    // SAFETY: `ifr` names the interface and points at `value`, both live
    // across the call; SIOCETHTOOL reads and writes only an ethtool_value
    // for these commands.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) };
    if ret < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("ethtool command {cmd:#x} on {ifname}: {error}"),
        ));
    }
    Ok(value.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_without_a_syscall() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            let e = disable_tx_offloads(name).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn an_absent_interface_is_an_error() {
        assert!(tx_offloads("wvt-no-such-if").is_err());
    }
}
