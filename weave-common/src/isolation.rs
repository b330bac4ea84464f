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
//!
//! One exception, for weaveDNS: every container may talk DNS (UDP or TCP to
//! port 53) to the agent's DNS address, and ARP for it, and hear the answers
//! and the agent's ARP from it, whatever its subnet. Nothing else crosses:
//! other ports to that address, or anything else from it, are dropped like
//! any frame from another subnet. `dns` is that address (0: weaveDNS off).
//!
//! And one for an exposed host as the containers' gateway (what a pod's
//! default route is for): a frame a container sends to the bridge's own MAC,
//! from its own address in a subnet the host is exposed in, goes up to the
//! host whatever its destination (the
//! host routes it: to itself, to the outside world masqueraded, or to a
//! Kubernetes service's pod after DNAT); and a frame reaching a container
//! from outside its subnets passes only when the host marked it as a reply
//! of a connection it has seen ([`GATEWAY_REPLY_MARK`], set by the agent's
//! nftables table on replies leaving through the bridge). The host routing
//! a container's frame into another subnet is no way around isolation: such
//! a frame is no reply, so the far container's port drops it.

use crate::{Counter, Endpoint, EndpointAddr};

/// The facts a classifier extracts from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Ipv4 {
        eth_src: [u8; 6],
        src: u32,
        dst: u32,
        /// The IP protocol, and the UDP or TCP ports (0 for other protocols
        /// and for fragments after the first).
        proto: u8,
        sport: u16,
        dport: u16,
        /// Sent to this host's bridge MAC: to the host as gateway.
        to_bridge: bool,
        /// Carries [`GATEWAY_REPLY_MARK`]: a reply the host routed or sent.
        host_reply: bool,
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
    /// Passed by the DNS exception only (counted apart).
    PassDns,
    /// Passed by the gateway exception only (counted apart).
    PassGateway,
    /// To the host as gateway from the container's address `.0`: passed
    /// (as `PassGateway`) when the host is exposed in exactly that
    /// address's subnet ([`serves`] on a slot of the exposed map), else
    /// dropped as for another subnet. The classifier resolves it.
    ViaGateway(EndpointAddr),
    Drop(Counter),
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const DNS_PORT: u16 = 53;

/// The packet mark bit the agent's nftables table sets on replies the host
/// sends or routes out through the bridge (conntrack's reply direction):
/// the only frames from outside a container's subnets it may receive.
/// Kubernetes' kube-proxy uses 0x4000 and 0x8000; this bit is apart.
pub const GATEWAY_REPLY_MARK: u32 = 0x0020_0000;

/// Most subnets one host is exposed in that make it a gateway.
pub const MAX_EXPOSED: u32 = 16;

/// A slot of the exposed-subnets map: the host's address and netmask in one
/// `u64` (netmask high, address low; 0 is an empty slot).
pub const fn exposed_slot(addr: EndpointAddr) -> u64 {
    ((addr.netmask as u64) << 32) | addr.ip as u64
}

/// Whether the exposed slot is the host's address in `addr`'s very subnet
/// (same netmask, same network: a host exposed in 10.32.0.0/12 is no
/// gateway of a container in 10.33.0.0/24, which it cannot reach).
#[inline(always)]
pub const fn serves(slot: u64, addr: EndpointAddr) -> bool {
    let netmask = (slot >> 32) as u32;
    slot != 0 && netmask == addr.netmask && addr.same_subnet(slot as u32)
}

/// DNS between a container and the agent: `addr` is the agent's end,
/// `port` the port on the agent's side.
#[inline(always)]
const fn is_dns(dns: u32, addr: u32, proto: u8, port: u16) -> bool {
    dns != 0 && addr == dns && port == DNS_PORT && (proto == IPPROTO_UDP || proto == IPPROTO_TCP)
}

/// A frame sent by the container behind `ep`.
#[inline(always)]
pub fn from_container(ep: &Endpoint, frame: &Frame, dns: u32) -> Verdict {
    match *frame {
        Frame::Ipv4 {
            eth_src,
            src,
            dst,
            proto,
            dport,
            to_bridge,
            ..
        } => {
            if eth_src != ep.mac {
                return Verdict::Drop(Counter::DropSpoofedMac);
            }
            match ep.owned(src) {
                None => Verdict::Drop(Counter::DropSpoofedIp),
                Some(addr) if addr.same_subnet(dst) => Verdict::Pass,
                Some(_) if is_dns(dns, dst, proto, dport) => Verdict::PassDns,
                Some(addr) if to_bridge => Verdict::ViaGateway(*addr),
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
                Some(_) if dns != 0 && tpa == dns => Verdict::PassDns,
                Some(_) => Verdict::Drop(Counter::DropOtherSubnet),
            }
        }
        Frame::Unsupported => Verdict::Drop(Counter::DropUnsupported),
    }
}

/// A frame about to be delivered to the container behind `ep`.
#[inline(always)]
pub const fn to_container(ep: &Endpoint, frame: &Frame, dns: u32) -> Verdict {
    match *frame {
        Frame::Ipv4 {
            src,
            dst,
            proto,
            sport,
            host_reply,
            ..
        } => match ep.receiving(dst) {
            Some(addr) if addr.same_subnet(src) => Verdict::Pass,
            Some(_) if is_dns(dns, src, proto, sport) => Verdict::PassDns,
            Some(_) if host_reply => Verdict::PassGateway,
            _ => Verdict::Drop(Counter::DropOtherSubnet),
        },
        Frame::Arp { spa, .. } => {
            if ep.shares_subnet(spa) {
                Verdict::Pass
            } else if dns != 0 && spa == dns {
                Verdict::PassDns
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
    use crate::MAX_ENDPOINT_ADDRS;

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
        Frame::Ipv4 {
            eth_src,
            src,
            dst,
            proto: 1,
            sport: 0,
            dport: 0,
            to_bridge: false,
            host_reply: false,
        }
    }

    fn l4(eth_src: [u8; 6], src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> Frame {
        Frame::Ipv4 {
            eth_src,
            src,
            dst,
            proto,
            sport,
            dport,
            to_bridge: false,
            host_reply: false,
        }
    }

    #[test]
    fn exactly_dns_crosses_to_the_agents_address() {
        let dns = ip(169, 254, 53, 53);
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let (me, other) = (ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        for proto in [IPPROTO_UDP, IPPROTO_TCP] {
            let query = l4(MAC_A, me, dns, proto, 40000, 53);
            let answer = l4(MAC_X, dns, me, proto, 53, 40000);
            assert_eq!(from_container(&a, &query, dns), Verdict::PassDns);
            assert_eq!(to_container(&a, &answer, dns), Verdict::PassDns);
            // weaveDNS off: nothing crosses.
            assert_eq!(
                from_container(&a, &query, 0),
                Verdict::Drop(Counter::DropOtherSubnet)
            );
            assert_eq!(
                to_container(&a, &answer, 0),
                Verdict::Drop(Counter::DropOtherSubnet)
            );
        }
        let drop = Verdict::Drop(Counter::DropOtherSubnet);
        // Another port, another protocol, another address, or port 53 the
        // wrong way round: dropped.
        assert_eq!(
            from_container(&a, &l4(MAC_A, me, dns, IPPROTO_UDP, 53, 54), dns),
            drop
        );
        assert_eq!(from_container(&a, &ipv4(MAC_A, me, dns), dns), drop);
        assert_eq!(
            from_container(&a, &l4(MAC_A, me, ip(10, 0, 2, 1), IPPROTO_UDP, 1, 53), dns),
            drop
        );
        assert_eq!(
            to_container(&a, &l4(MAC_X, dns, me, IPPROTO_UDP, 54, 53), dns),
            drop
        );
        assert_eq!(to_container(&a, &ipv4(MAC_X, dns, me), dns), drop);
        // Still no spoofing through the exception.
        assert_eq!(
            from_container(&a, &l4(MAC_A, other, dns, IPPROTO_UDP, 1, 53), dns),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
        // ARP for the address, and the agent's ARP.
        assert_eq!(
            from_container(&a, &arp(MAC_A, me, dns), dns),
            Verdict::PassDns
        );
        assert_eq!(
            to_container(&a, &arp(MAC_X, dns, me), dns),
            Verdict::PassDns
        );
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
        assert_eq!(from_container(&a, &f, 0), Verdict::Pass);
        assert_eq!(to_container(&b, &f, 0), Verdict::Pass);
        let q = arp(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        assert_eq!(from_container(&a, &q, 0), Verdict::Pass);
        assert_eq!(to_container(&b, &q, 0), Verdict::Pass);
    }

    #[test]
    fn gratuitous_arp_announces_only_the_containers_own_addresses() {
        // What a container sends on attach (netlink/garp.rs in the agent):
        // a request for its own address, to update its neighbours' caches.
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let b = endpoint(MAC_X, &[(ip(10, 0, 1, 2), 24)]);
        let other = endpoint(MAC_X, &[(ip(10, 0, 2, 2), 24)]);
        let garp = arp(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 1));
        assert_eq!(from_container(&a, &garp, 0), Verdict::Pass);
        assert_eq!(to_container(&b, &garp, 0), Verdict::Pass);
        assert_eq!(
            to_container(&other, &garp, 0),
            Verdict::Drop(Counter::DropOtherSubnet),
            "announced within the subnet only"
        );
        // Announcing an address it does not hold would move it: spoofing.
        let taken = arp(MAC_A, ip(10, 0, 1, 2), ip(10, 0, 1, 2));
        assert_eq!(
            from_container(&a, &taken, 0),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
    }

    #[test]
    fn other_subnet_is_dropped_both_ways() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let c = endpoint(MAC_X, &[(ip(10, 0, 2, 1), 24)]);
        // A aims at C's subnet (for example through a route it added).
        let f = ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 2, 1));
        assert_eq!(
            from_container(&a, &f, 0),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        // Even if it got out, C refuses it.
        assert_eq!(
            to_container(&c, &f, 0),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        let q = arp(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 2, 1));
        assert_eq!(
            from_container(&a, &q, 0),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
        assert_eq!(
            to_container(&c, &q, 0),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
    }

    fn via_host(frame: Frame, to_bridge: bool, host_reply: bool) -> Frame {
        match frame {
            Frame::Ipv4 {
                eth_src,
                src,
                dst,
                proto,
                sport,
                dport,
                ..
            } => Frame::Ipv4 {
                eth_src,
                src,
                dst,
                proto,
                sport,
                dport,
                to_bridge,
                host_reply,
            },
            other => other,
        }
    }

    #[test]
    fn an_exposed_slot_serves_exactly_its_subnet() {
        let slot = exposed_slot(EndpointAddr::new(ip(10, 32, 0, 1), 12));
        assert!(serves(slot, EndpointAddr::new(ip(10, 40, 1, 2), 12)));
        assert!(!serves(slot, EndpointAddr::new(ip(10, 48, 0, 1), 12)));
        assert!(
            !serves(slot, EndpointAddr::new(ip(10, 33, 0, 1), 24)),
            "a subnet nested in the exposed one"
        );
        assert!(
            !serves(0, EndpointAddr::new(ip(10, 40, 1, 2), 12)),
            "an empty slot"
        );
        assert!(!serves(0, EndpointAddr::new(0, 0)));
    }

    #[test]
    fn the_host_is_a_gateway_but_no_router_between_subnets() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let c = endpoint(MAC_X, &[(ip(10, 0, 2, 1), 24)]);
        let outside = ip(192, 168, 1, 7);
        let drop = Verdict::Drop(Counter::DropOtherSubnet);
        // To the bridge's MAC, from its own address: up to the host.
        let out = via_host(ipv4(MAC_A, ip(10, 0, 1, 1), outside), true, false);
        let a_addr = EndpointAddr::new(ip(10, 0, 1, 1), 24);
        assert_eq!(from_container(&a, &out, 0), Verdict::ViaGateway(a_addr));
        // Not to the bridge: still dropped; nor does spoofing get through.
        let direct = ipv4(MAC_A, ip(10, 0, 1, 1), outside);
        assert_eq!(from_container(&a, &direct, 0), drop);
        let spoofed = via_host(ipv4(MAC_A, ip(10, 0, 1, 9), outside), true, false);
        assert_eq!(
            from_container(&a, &spoofed, 0),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
        let forged = via_host(ipv4(MAC_X, ip(10, 0, 1, 1), outside), true, false);
        assert_eq!(
            from_container(&a, &forged, 0),
            Verdict::Drop(Counter::DropSpoofedMac)
        );
        // The reply the host routes back: marked, it passes.
        let back = via_host(ipv4(MAC_X, outside, ip(10, 0, 1, 1)), false, true);
        assert_eq!(to_container(&a, &back, 0), Verdict::PassGateway);
        let unmarked = ipv4(MAC_X, outside, ip(10, 0, 1, 1));
        assert_eq!(to_container(&a, &unmarked, 0), drop);
        // A leaves for C's subnet through the host: the host may route it,
        // but it is no reply, so C's port drops it.
        let across = via_host(ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 2, 1)), true, false);
        assert_eq!(from_container(&a, &across, 0), Verdict::ViaGateway(a_addr));
        let routed = via_host(ipv4(MAC_X, ip(10, 0, 1, 1), ip(10, 0, 2, 1)), false, false);
        assert_eq!(to_container(&c, &routed, 0), drop);
        // A mark never makes a frame for an address the port does not hold.
        let stray = via_host(ipv4(MAC_X, outside, ip(10, 0, 1, 2)), false, true);
        assert_eq!(to_container(&a, &stray, 0), drop);
    }

    #[test]
    fn readdressed_container_is_refused_as_spoofer() {
        // C was given 10.0.2.1 and changed its own address to 10.0.1.3.
        let c = endpoint(MAC_X, &[(ip(10, 0, 2, 1), 24)]);
        let f = ipv4(MAC_X, ip(10, 0, 1, 3), ip(10, 0, 1, 1));
        assert_eq!(
            from_container(&c, &f, 0),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
        let q = arp(MAC_X, ip(10, 0, 1, 3), ip(10, 0, 1, 1));
        assert_eq!(
            from_container(&c, &q, 0),
            Verdict::Drop(Counter::DropSpoofedIp)
        );
    }

    #[test]
    fn spoofed_mac_is_dropped() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        let f = ipv4(MAC_X, ip(10, 0, 1, 1), ip(10, 0, 1, 2));
        assert_eq!(
            from_container(&a, &f, 0),
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
            from_container(&a, &q, 0),
            Verdict::Drop(Counter::DropSpoofedMac)
        );
    }

    #[test]
    fn subnet_broadcast_is_delivered_within_the_subnet_only() {
        let b = endpoint(MAC_X, &[(ip(10, 0, 1, 2), 24)]);
        let inside = ipv4(MAC_A, ip(10, 0, 1, 1), ip(10, 0, 1, 255));
        let outside = ipv4(MAC_A, ip(10, 0, 2, 1), ip(10, 0, 1, 255));
        assert_eq!(to_container(&b, &inside, 0), Verdict::Pass);
        assert_eq!(
            to_container(&b, &outside, 0),
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
        assert_eq!(from_container(&m, &to_1, 0), Verdict::Pass);
        assert_eq!(from_container(&m, &to_2, 0), Verdict::Pass);
        assert_eq!(
            from_container(&m, &crossed, 0),
            Verdict::Drop(Counter::DropOtherSubnet)
        );
    }

    #[test]
    fn unsupported_frames_and_empty_endpoints_are_dropped() {
        let a = endpoint(MAC_A, &[(ip(10, 0, 1, 1), 24)]);
        assert_eq!(
            from_container(&a, &Frame::Unsupported, 0),
            Verdict::Drop(Counter::DropUnsupported)
        );
        assert_eq!(
            to_container(&a, &Frame::Unsupported, 0),
            Verdict::Drop(Counter::DropUnsupported)
        );
        let empty = endpoint(MAC_A, &[]);
        let f = ipv4(MAC_A, 0, ip(10, 0, 1, 2));
        assert_eq!(
            from_container(&empty, &f, 0),
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
