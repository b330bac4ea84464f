//! The addresses in use on this host, and the choice of the next free one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::AddrRequest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("address {0} is already in use on this host")]
    InUse(Ipv4Addr),
    #[error(
        "{0} is the network or broadcast address of its subnet and cannot be given to a container"
    )]
    Reserved(Ipv4Net),
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
}

/// Every address handed out on this host, whatever its subnet.
#[derive(Debug, Clone)]
pub struct Allocator {
    range: Ipv4Net,
    default_subnet: Ipv4Net,
    in_use: BTreeSet<Ipv4Addr>,
}

impl Allocator {
    pub fn new(range: Ipv4Net, default_subnet: Ipv4Net) -> Self {
        Self {
            range: range.trunc(),
            default_subnet: default_subnet.trunc(),
            in_use: BTreeSet::new(),
        }
    }

    pub const fn range(&self) -> Ipv4Net {
        self.range
    }

    pub const fn default_subnet(&self) -> Ipv4Net {
        self.default_subnet
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    pub fn is_in_use(&self, addr: Ipv4Addr) -> bool {
        self.in_use.contains(&addr)
    }

    /// Marks an address as taken (state restored from disk).
    pub fn mark(&mut self, addr: Ipv4Addr) {
        self.in_use.insert(addr);
    }

    pub fn release(&mut self, addr: Ipv4Addr) {
        self.in_use.remove(&addr);
    }

    /// Serves all of `requests` or none of them.
    pub fn allocate_all(&mut self, requests: &[AddrRequest]) -> Result<Vec<Ipv4Net>, IpamError> {
        let mut granted: Vec<Ipv4Net> = Vec::with_capacity(requests.len());
        for request in requests {
            match self.allocate(*request) {
                Ok(net) => granted.push(net),
                Err(e) => {
                    for net in &granted {
                        self.release(net.addr());
                    }
                    return Err(e);
                }
            }
        }
        Ok(granted)
    }

    pub fn allocate(&mut self, request: AddrRequest) -> Result<Ipv4Net, IpamError> {
        let net = match request {
            AddrRequest::Explicit(net) => self.check_explicit(net)?,
            AddrRequest::Subnet(subnet) => self.first_free(subnet)?,
            AddrRequest::Default => self.first_free(self.default_subnet)?,
        };
        self.in_use.insert(net.addr());
        Ok(net)
    }

    fn check_explicit(&self, net: Ipv4Net) -> Result<Ipv4Net, IpamError> {
        // /31 and /32 have no network or broadcast address (RFC 3021).
        if net.prefix_len() <= 30 && (net.addr() == net.network() || net.addr() == net.broadcast())
        {
            return Err(IpamError::Reserved(net));
        }
        if self.in_use.contains(&net.addr()) {
            return Err(IpamError::InUse(net.addr()));
        }
        Ok(net)
    }

    /// The lowest free host address of `subnet`, never its network or broadcast address.
    fn first_free(&self, subnet: Ipv4Net) -> Result<Ipv4Net, IpamError> {
        let subnet = subnet.trunc();
        let (first, last) = if subnet.prefix_len() >= 31 {
            (u32::from(subnet.network()), u32::from(subnet.broadcast()))
        } else {
            (
                u32::from(subnet.network()) + 1,
                u32::from(subnet.broadcast()) - 1,
            )
        };
        // Walk the taken addresses in order; the first gap is the answer.
        let mut candidate = first;
        for taken in self
            .in_use
            .range(Ipv4Addr::from(first)..=Ipv4Addr::from(last))
            .map(|a| u32::from(*a))
        {
            if taken != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate > last {
            return Err(IpamError::Exhausted(subnet));
        }
        Ok(Ipv4Net::new(Ipv4Addr::from(candidate), subnet.prefix_len())
            .expect("prefix from a valid net"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> Allocator {
        Allocator::new(
            "10.32.0.0/12".parse().unwrap(),
            "10.32.0.0/12".parse().unwrap(),
        )
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn first_container_gets_10_32_0_1() {
        let mut a = alloc();
        assert_eq!(
            a.allocate(AddrRequest::Default).unwrap(),
            net("10.32.0.1/12")
        );
        assert_eq!(
            a.allocate(AddrRequest::Default).unwrap(),
            net("10.32.0.2/12")
        );
    }

    #[test]
    fn released_addresses_are_reused_lowest_first() {
        let mut a = alloc();
        for _ in 0..3 {
            a.allocate(AddrRequest::Default).unwrap();
        }
        a.release("10.32.0.2".parse().unwrap());
        assert_eq!(
            a.allocate(AddrRequest::Default).unwrap(),
            net("10.32.0.2/12")
        );
        assert_eq!(
            a.allocate(AddrRequest::Default).unwrap(),
            net("10.32.0.4/12")
        );
    }

    #[test]
    fn explicit_address_in_use_is_refused() {
        let mut a = alloc();
        a.allocate(AddrRequest::Explicit(net("10.0.1.1/24")))
            .unwrap();
        assert_eq!(
            a.allocate(AddrRequest::Explicit(net("10.0.1.1/24"))),
            Err(IpamError::InUse("10.0.1.1".parse().unwrap()))
        );
        // The subnet allocator skips it too.
        assert_eq!(
            a.allocate(AddrRequest::Subnet(net("10.0.1.0/24"))).unwrap(),
            net("10.0.1.2/24")
        );
    }

    #[test]
    fn network_and_broadcast_addresses_are_never_handed_out() {
        let mut a = alloc();
        assert!(matches!(
            a.allocate(AddrRequest::Explicit(net("10.0.1.0/24"))),
            Err(IpamError::Reserved(_))
        ));
        assert!(matches!(
            a.allocate(AddrRequest::Explicit(net("10.0.1.255/24"))),
            Err(IpamError::Reserved(_))
        ));
        assert!(
            a.allocate(AddrRequest::Explicit(net("10.0.1.7/32")))
                .is_ok()
        );
    }

    #[test]
    fn tiny_subnets_exhaust_cleanly() {
        let mut a = alloc();
        let s = AddrRequest::Subnet(net("10.9.0.0/30"));
        assert_eq!(a.allocate(s).unwrap(), net("10.9.0.1/30"));
        assert_eq!(a.allocate(s).unwrap(), net("10.9.0.2/30"));
        assert_eq!(a.allocate(s), Err(IpamError::Exhausted(net("10.9.0.0/30"))));
        let one = AddrRequest::Subnet(net("10.9.1.5/32"));
        assert_eq!(a.allocate(one).unwrap(), net("10.9.1.5/32"));
        assert!(matches!(a.allocate(one), Err(IpamError::Exhausted(_))));
    }

    #[test]
    fn allocate_all_is_all_or_nothing() {
        let mut a = alloc();
        a.allocate(AddrRequest::Explicit(net("10.0.1.1/24")))
            .unwrap();
        let before = a.in_use();
        let r = a.allocate_all(&[
            AddrRequest::Default,
            AddrRequest::Explicit(net("10.0.1.1/24")),
        ]);
        assert!(r.is_err());
        assert_eq!(a.in_use(), before);
    }
}
