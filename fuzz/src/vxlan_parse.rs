//! The `vxlan_parse` fuzz target: uDP payloads on the data port.

use weave_agent::overlay::ShortId;
use weave_agent::overlay::vxlan::{self, ETHERNET_HEADER_LEN, FLAG_VNI_VALID, HEADER_LEN};

/// Accepts exactly the payloads with a full header, the I flag and a whole
/// Ethernet header inside, borrows the rest as the frame, and says why not
/// otherwise; what it accepts re-encodes to a packet that parses the same.
pub fn vxlan_parse(data: &[u8]) {
    use vxlan::VxlanError;
    match vxlan::parse(data) {
        Ok(packet) => {
            assert!(data.len() >= HEADER_LEN + ETHERNET_HEADER_LEN);
            assert_ne!(data[0] & FLAG_VNI_VALID, 0);
            assert!(packet.vni <= vxlan::VNI_MAX);
            assert_eq!(packet.frame, &data[HEADER_LEN..]);
            let mut again = vxlan::header(packet.vni).to_vec();
            again.extend_from_slice(packet.frame);
            assert_eq!(vxlan::parse(&again), Ok(packet));
        }
        Err(VxlanError::Truncated { len }) => {
            assert_eq!(len, data.len());
            assert!(len < HEADER_LEN);
        }
        Err(VxlanError::NoVni { flags }) => {
            assert_eq!(flags, data[0]);
            assert_eq!(flags & FLAG_VNI_VALID, 0);
        }
        Err(VxlanError::FrameTooShort { len }) => {
            assert_eq!(len, data.len() - HEADER_LEN);
            assert!(len < ETHERNET_HEADER_LEN);
        }
    }
}

/// An Ethernet frame of `len` bytes (at least a header) from `src` to `dst`.
pub(crate) fn ethernet(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; len.max(ETHERNET_HEADER_LEN)];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    frame
}

pub(crate) fn vxlan_packet(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut packet = vxlan::header(vni).to_vec();
    packet.extend_from_slice(frame);
    packet
}

pub(crate) fn vxlan_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let arp = ethernet([0xff; 6], [2, 0, 0, 0, 0, 1], 42);
    let unicast = ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 98);
    vec![
        (
            "broadcast-arp",
            vxlan_packet(ShortId::vni(ShortId(0x101), ShortId::BROADCAST), &arp),
        ),
        (
            "unicast",
            vxlan_packet(ShortId::vni(ShortId(0x101), ShortId(0x102)), &unicast),
        ),
        (
            "max-vni-header-only-frame",
            vxlan_packet(vxlan::VNI_MAX, &arp[..14]),
        ),
        ("truncated-header", vxlan::header(5)[..7].to_vec()),
    ]
}
