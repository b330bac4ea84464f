//! Gratuitous ARP: a container announces each address it is given, so that
//! neighbours whose ARP cache still maps that address to the MAC of the
//! container that had it before (an address freed and handed out again)
//! learn the new MAC at once instead of when their entry expires. Weave's
//! `setupIfaceAddrs` did the same (an ARP request for the address itself,
//! broadcast). Linux takes such a request as an update of an existing
//! neighbour entry even within its lock time (`arp_is_garp`), and creates
//! none where there was none, so it costs the neighbours nothing.
//!
//! The isolation classifiers let it through: its sender MAC and address are
//! the container's own and its target is in the same subnet
//! (`weave_common::isolation`); an announcement of an address the container
//! does not hold is dropped as spoofed.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{MsgFlags, send};

/// Ethernet header (14) and ARP for IPv4 over Ethernet (28).
pub(super) const GARP_LEN: usize = 42;

/// The announcement of `addr` by the interface with MAC `mac`: a broadcast
/// ARP request whose sender and target address are both `addr`.
pub(super) fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut f = [0u8; GARP_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target MAC left zero, as in an ordinary request.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Sends the announcement of every address in `addrs` out of interface
/// `ifindex` (of the calling thread's namespace).
pub(super) fn announce(ifindex: u32, mac: [u8; 6], addrs: &[Ipv4Addr]) -> std::io::Result<()> {
    let socket = crate::overlay::sys::send_socket(ifindex)?;
    for addr in addrs {
        send(
            socket.as_raw_fd(),
            &garp_frame(mac, *addr),
            MsgFlags::empty(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_a_broadcast_request_for_the_address_itself() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let f = garp_frame(mac, Ipv4Addr::new(10, 32, 0, 7));
        assert_eq!(f[..6], [0xff; 6], "broadcast");
        assert_eq!(f[6..12], mac, "from the container's MAC");
        assert_eq!(f[12..14], [0x08, 0x06], "ARP");
        assert_eq!(f[20..22], [0, 1], "a request");
        assert_eq!(f[22..28], mac, "sender MAC");
        assert_eq!(f[28..32], [10, 32, 0, 7], "sender address");
        assert_eq!(f[32..38], [0; 6], "target MAC unknown");
        assert_eq!(f[38..42], [10, 32, 0, 7], "target address = sender address");
    }
}
