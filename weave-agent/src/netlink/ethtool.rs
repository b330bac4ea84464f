//! Transmit offloads through the SIOCETHTOOL ioctl (the legacy ethtool
//! interface: no genetlink family needed), in the calling thread's network
//! namespace.
//!
//! Why: a veth transmits what its peer's stack built, and with offloads on
//! that is frames with unfinished checksums (`CHECKSUM_PARTIAL`) and TSO/GSO
//! super-frames of up to 64 KiB. A capture socket on the far end would pass
//! them on as they are: unusable on another host. With transmit checksum
//! offload off (which also turns TSO off), the kernel finishes checksums and
//! segments in software when the frame is transmitted. The `AF_XDP` data
//! plane does both itself for TCP, faster (one cut per 64 KiB frame), and
//! keeps only those offloads on (`keep_tcp_segmentation_only`).

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
// Commands taking their own structures: the named feature bits.
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

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

/// Transmit offloads the `AF_XDP` data plane lets through `ifname` (the
/// bridge's datapath port): TCP segmentation (IPv4 and IPv6) and the
/// generic checksum offload it needs, because the agent cuts TCP
/// super-frames and finishes TCP and UDP checksums itself (`wire::segment`,
/// `wire::partial_checksum`). Every other transmit feature is turned off, so
/// that what the kernel would hand over and the agent could not redo (UDP
/// GSO, whose segment size no header tells; tunnel GSO; SCTP's CRC; a VLAN
/// tag kept beside the frame) is done in software before the frame leaves.
/// The features kept are turned (back) on. Returns the names of the
/// features it turned off.
pub fn keep_tcp_segmentation_only(ifname: &str) -> io::Result<Vec<String>> {
    const KEEP: [&str; 7] = [
        "tx-scatter-gather",
        "tx-checksum-ip-generic",
        "tx-generic-segmentation",
        "tx-tcp-segmentation",
        "tx-tcp-ecn-segmentation",
        "tx-tcp-mangleid-segmentation",
        "tx-tcp6-segmentation",
    ];
    let socket = control_socket()?;
    let names = feature_names(&socket, ifname)?;
    let blocks = names.len().div_ceil(32);
    // struct ethtool_gfeatures: cmd, size, then per block available,
    // requested, active, never_changed.
    let mut get = vec![0u32; 2 + 4 * blocks];
    get[0] = ETHTOOL_GFEATURES;
    get[1] = blocks as u32;
    ethtool_raw(&socket, ifname, ETHTOOL_GFEATURES, get.as_mut_ptr().cast())?;
    // struct ethtool_sfeatures: cmd, size, then per block valid, requested.
    let mut set = vec![0u32; 2 + 2 * blocks];
    set[0] = ETHTOOL_SFEATURES;
    set[1] = blocks as u32;
    let mut off = Vec::new();
    for (bit, name) in names.iter().enumerate() {
        let (block, mask) = (bit / 32, 1u32 << (bit % 32));
        let changeable = get[2 + 4 * block] & mask != 0;
        let active = get[2 + 4 * block + 2] & mask != 0;
        if !changeable || !name.starts_with("tx-") {
            continue;
        }
        if KEEP.contains(&name.as_str()) {
            // Back on after a plain data plane turned them off.
            set[2 + 2 * block] |= mask;
            set[2 + 2 * block + 1] |= mask;
        } else if active {
            set[2 + 2 * block] |= mask;
            off.push(name.clone());
        }
    }
    if set[2..].iter().any(|&w| w != 0) {
        ethtool_raw(&socket, ifname, ETHTOOL_SFEATURES, set.as_mut_ptr().cast())?;
    }
    Ok(off)
}

/// The kernel's names of the feature bits, in bit order.
fn feature_names(socket: &OwnedFd, ifname: &str) -> io::Result<Vec<String>> {
    // struct ethtool_sset_info: cmd, reserved, a u64 mask, then one u32
    // count per set in the mask.
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_FEATURES;
    ethtool_raw(socket, ifname, ETHTOOL_GSSET_INFO, info.as_mut_ptr().cast())?;
    let count = (info[2] & 0xffff_ffff) as usize;
    if info[1] & (1 << ETH_SS_FEATURES) == 0 || count == 0 || count > 1024 {
        return Err(io::Error::other(format!(
            "{ifname} reports no feature names"
        )));
    }
    // struct ethtool_gstrings: cmd, string_set, len, then the strings.
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[0] = ETHTOOL_GSTRINGS;
    strings[1] = ETH_SS_FEATURES;
    strings[2] = count as u32;
    ethtool_raw(
        socket,
        ifname,
        ETHTOOL_GSTRINGS,
        strings.as_mut_ptr().cast(),
    )?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes
        .chunks_exact(ETH_GSTRING_LEN)
        .map(|s| {
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .collect())
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
    let mut value = EthtoolValue {
        cmd,
        data: data.unwrap_or(0),
    };
    const _: () = assert!(size_of::<EthtoolValue>() == 8);
    ethtool_raw(socket, ifname, cmd, (&raw mut value).cast())?;
    Ok(value.data)
}

/// Runs the ethtool command whose structure (starting with `cmd`) is at
/// `data`, which the kernel reads and writes back.
fn ethtool_raw(
    socket: &OwnedFd,
    ifname: &str,
    cmd: u32,
    data: *mut libc::c_char,
) -> io::Result<()> {
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
    ifr.ifr_ifru.ifru_data = data;
    // SAFETY: `ifr` names the interface and points at the caller's
    // structure, both live across the call; the callers size each
    // structure for its command (the counts in its header say how much the
    // kernel may write).
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) };
    if ret < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("ethtool command {cmd:#x} on {ifname}: {error}"),
        ));
    }
    Ok(())
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
