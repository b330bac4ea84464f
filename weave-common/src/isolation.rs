//! The subnet isolation rules, as pure functions of a parsed frame and the
//! endpoint it leaves or reaches. The eBPF classifiers call exactly these, so
//! the host unit tests below test the decisions the kernel makes.
//!
//! Two checks make isolation hold even against a hostile container:
//! - leaving a container, a frame must carry that container's own MAC and IP
//!   (anti-spoofing) and aim inside the subnet of the address it was sent from;
//! - reaching a container, a frame must come from inside the subnet of the
//!   address it is sent to. Because sources are verified where they enter,
//!   this also stops a container that re-addresses itself or crafts ARP.

use crate::{Counter, Endpoint};

/// The facts a classifier extracts from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Ipv4 {
        eth_src: [u8; 6],
        src: u32,
        dst: u32,
    },
    Arp {
        eth_src: [u8; 6],
        sha: [u8; 6],
        spa: u32,
        tpa: u32,
    },
    /// Anything that is not untagged IPv4 or Ethernet/IPv4 ARP.
    Unsupported,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(Counter),
}

/// A frame sent by the container behind `ep`.
#[inline(always)]
pub fn from_container(ep: &Endpoint, frame: &Frame) -> Verdict {
    match *frame {
        Frame::Ipv4 { eth_src, src, dst } => {
            if eth_src != ep.mac {
                return Verdict::Drop(Counter::DropSpoofedMac);
            }
            match ep.owned(src) {
                None => Verdict::Drop(Counter::DropSpoofedIp),
                Some(addr) if addr.same_subnet(dst) => Verdict::Pass,
                Some(_) => Verdict::Drop(Counter::DropOtherSubnet),
            }
        }
        Frame::Arp {
            eth_src,
            sha,
            spa,
            tpa,
        } => {
            if eth_src != ep.mac || sha != ep.mac {
                return Verdict::Drop(Counter::DropSpoofedMac);
            }
            match ep.owned(spa) {
                None => Verdict::Drop(Counter::DropSpoofedIp),
                Some(addr) if addr.same_subnet(tpa) => Verdict::Pass,
                Some(_) => Verdict::Drop(Counter::DropOtherSubnet),
            }
        }
        Frame::Unsupported => Verdict::Drop(Counter::DropUnsupported),
    }
}

/// A frame about to be delivered to the container behind `ep`.
#[inline(always)]
pub const fn to_container(ep: &Endpoint, frame: &Frame) -> Verdict {
    match *frame {
        Frame::Ipv4 { src, dst, .. } => match ep.receiving(dst) {
            Some(addr) if addr.same_subnet(src) => Verdict::Pass,
            _ => Verdict::Drop(Counter::DropOtherSubnet),
        },
        Frame::Arp { spa, .. } => {
            if ep.shares_subnet(spa) {
                Verdict::Pass
            } else {
                Verdict::Drop(Counter::DropOtherSubnet)
            }
        }
        Frame::Unsupported => Verdict::Drop(Counter::DropUnsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointAddr, MAX_ENDPOINT_ADDRS};

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const MAC_X: [u8; 6] = [0x02, 0, 0, 0, 0, 0xf];

    const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    fn endpoint(mac: [u8; 6], addrs: &[(u32, u8)]) -> Endpoint {
        let mut ep = Endpoint {
            mac,
            addr_count: addrs.len() as u16,
            addrs: [EndpointAddr::default(); MAX_ENDPOINT_ADDRS],
        };
        for (slot, &(addr, len)) in ep.addrs.iter_mut().zip(addrs) {
            *slot = EndpointAddr::new(addr, len);
        }
        ep
    }

    fn ipv4(eth_src: [u8; 6], src: u32, dst: u32) -> Frame {
        Frame::Ipv4 { eth_src, src, dst }
    }

    fn arp(mac: [u8; 6], spa: u32, tpa: u32) -> Frame {
        Frame::Arp {
            eth_src: mac,
            sha: mac,
            spa,
            tpa,
        }
    }

    #[test]
    fn same_subnet_traffic_leaves_and_arrives() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let b = endpoint(MAC_X, &[(ip(10, 0, 1, 2), 24)]);
        let f = ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        assert_eq!(from_container(&a, &f), Verdict::Pass);
        assert_eq!(to_container(&b, &f), Verdict::Pass);
        let q = arp(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        assert_eq!(from_container(&a, &q), Verdict::Pass);
        assert_eq!(to_container(&b, &q), Verdict::Pass);
    }

    #[test]
    fn other_subnet_is_dropped_both_ways() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let c = endpoint(MAC_X, &[(ip(10, 0, 2, 1), 24)]);
        // A aims at C's subnet (for example through a route it added).
        let f = ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 2, 1));
        assert_eq!(
            from_container(&a, &f),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        // Even if it got out, C refuses it.
        assert_eq!(
            to_container(&c, &f),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        let q = arp(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 2, 1));
        assert_eq!(
            from_container(&a, &q),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        assert_eq!(
            to_container(&c, &q),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
    }

    #[test]
    fn readdressed_container_is_refused_as_spoofer() {
        // C was given 10.0.2.1 and changed its own address to 10.0.1.3.
        let c = endpoint(MAC_X, &[(ip(10, 0, 2, 1), 24)]);
        let f = ipv4(MAC_X, ip(10, 0, 1, 3), ip(10, 0, 1, 1));
        assert_eq!(
            from_container(&c, &f),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
        let q = arp(MAC_X, ip(10, 0, 1, 3), ip(10, 0, 1, 1));
        assert_eq!(
            from_container(&c, &q),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
    }

    #[test]
    fn spoofed_mac_is_dropped() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let f = ipv4(MAC_X, ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        assert_eq!(
            from_container(&a, &f),
            Verdict::Drop(Counter::DropSpoofedMac)
        );
        // ARP whose sender hardware address differs from the Ethernet source.
        let q = Frame::Arp {
            eth_src: MAC_A,
            sha: MAC_X,
            spa: ip(10, 0, 1, 1),
            tpa: ip(10, 0, 1, 2),
        };
        assert_eq!(
            from_container(&a, &q),
            Verdict::Drop(Counter::DropSpoofedMac)
        );
    }

    #[test]
    fn subnet_broadcast_is_delivered_within_the_subnet_only() {
        let b = endpoint(MAC_X, &[(ip(10, 0, 1, 2), 24)]);
        let inside = ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 255));
        let outside = ipv4(MAC_A, ip(10, 0, 2, 1), ip(10, 0, 1, 255));
        assert_eq!(to_container(&b, &inside), Verdict::Pass);
        assert_eq!(
            to_container(&b, &outside),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
    }

    #[test]
    fn several_addresses_each_keep_their_own_subnet() {
        let m = endpoint(MAC_A, &[(ip(10, 0, 1, 9), 24), (ip(10, 0, 2, 9), 24)]);
        let to_1 = ipv4(MAC_A, ip(10, 0, 1, 9), ip(10, 0, 1, 1));
        let to_2 = ipv4(MAC_A, ip(10, 0, 2, 9), ip(10, 0, 2, 1));
        // Source address from subnet 1, destination in subnet 2: not allowed.
        let crossed = ipv4(MAC_A, ip(10, 0, 1, 9), ip(10, 0, 2, 1));
        assert_eq!(from_container(&m, &to_1), Verdict::Pass);
        assert_eq!(from_container(&m, &to_2), Verdict::Pass);
        assert_eq!(
            from_container(&m, &crossed),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
    }

    #[test]
    fn unsupported_frames_and_empty_endpoints_are_dropped() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        assert_eq!(
            from_container(&a, &Frame::Unsupported),
            Verdict::Drop(Counter::DropUnsupported)
        );
        assert_eq!(
            to_container(&a, &Frame::Unsupported),
            Verdict::Drop(Counter::DropUnsupported)
        );
        let empty = endpoint(MAC_A, &[]);
        let f = ipv4(MAC_A, 0, ip(10, 0, 1, 2));
        assert_eq!(
            from_container(&empty, &f),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
    }

    #[test]
    fn netmask_edges() {
        assert_eq!(
            EndpointAddr::new(ip(10, 32, 0, 1), 12).netmask,
            ip(255, 240, 0, 0)
        );
        assert_eq!(EndpointAddr::new(ip(10, 0, 0, 1), 32).netmask, u32::MAX);
        assert_eq!(EndpointAddr::new(ip(10, 0, 0, 1), 0).netmask, 0);
        assert_eq!(
            EndpointAddr::new(ip(10, 32, 0, 1), 12).broadcast(),
            ip(10, 47, 255, 255)
        );
    }
}
