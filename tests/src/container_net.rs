//! What a container's root could do to its own network to escape its subnet,
//! done from the test: change routes and addresses (`ip` run in the
//! container's namespace, since Docker gives containers no `CAP_NET_ADMIN`),
//! and send crafted ARP on `ethwe` (an `AF_PACKET` socket opened inside the
//! container's namespace).

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail, ensure};

use crate::command::check;
use crate::host::Host;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An ARP request (`who has tpa? tell spa`) as a frame from `mac`, claiming
/// `spa` as the sender's address, padded to the Ethernet minimum.
pub fn arp_request(mac: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet/IPv4, request.
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// Sends `frame` as is on interface `ifname` of the current thread's namespace.
fn send_raw(ifname: &str, frame: &[u8]) -> Result<()> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: plain libc calls on a socket this function owns and closes.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        ensure!(index != 0, "no interface {ifname}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        ensure!(sent == frame.len() as isize, "sending on {ifname}: {err}");
    }
    Ok(())
}

/// The container's network, as its own root would change it.
impl Host {
    /// `ip ARGS...` in the container's network namespace, which must succeed.
    #[track_caller]
    pub fn container_ip(&self, container: &str, args: &[&str]) {
        let mut c = self.container_command(container, "ip");
        c.args(args);
        check(&mut c).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The MAC address of the container's ethwe.
    #[track_caller]
    pub fn ethwe_mac(&self, container: &str) -> [u8; 6] {
        let text = self.exec_ok(container, &["cat", "/sys/class/net/ethwe/address"]);
        parse_mac(text.trim()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Sends from the container's ethwe an ARP request for `tpa` that
    /// claims `spa` as its sender address (its own MAC as sender).
    #[track_caller]
    pub fn send_arp(&self, container: &str, spa: Ipv4Addr, tpa: Ipv4Addr) {
        let frame = arp_request(self.ethwe_mac(container), spa, tpa);
        self.run_in_container(container, || send_raw("ethwe", &frame))
            .with_context(|| format!("crafted ARP from {container}"))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("not a MAC: {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_frames_have_the_wire_layout() {
        let f = arp_request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 0, 1, 1),
            Ipv4Addr::new(10, 0, 1, 2),
        );
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[28..32], &[10, 0, 1, 1]);
        assert_eq!(&f[38..42], &[10, 0, 1, 2]);
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
    }
}
