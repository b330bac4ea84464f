//! A contiguous run of IPv4 addresses, as the ring and the space count them.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The addresses `[start, end)`, as numbers. `end` is exclusive, so a range
/// can never include 255.255.255.255: allocation ranges that do are refused
/// ([`AddrRange::of_net`] returns `None` for them). Serialised dotted
/// (`{"start":"10.40.0.0","end":"10.48.0.0"}`), as the ring's tokens are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrRange {
    #[serde(with = "dotted")]
    pub start: u32,
    #[serde(with = "dotted")]
    pub end: u32,
}

impl AddrRange {
    pub fn new(start: u32, end: u32) -> Self {
        debug_assert!(start <= end, "range {start}..{end} is reversed");
        Self { start, end }
    }

    /// Every address of `net`, network and broadcast included; `None` when it
    /// includes 255.255.255.255.
    pub fn of_net(net: Ipv4Net) -> Option<Self> {
        let start = u32::from(net.network());
        let end = u32::from(net.broadcast()).checked_add(1)?;
        Some(Self { start, end })
    }

    /// The addresses of `net` that may be given to a container: all but the
    /// network and broadcast addresses, except in a /31 or /32 (RFC 3021).
    pub fn hosts_of(net: Ipv4Net) -> Option<Self> {
        let all = Self::of_net(net)?;
        Some(if net.prefix_len() >= 31 {
            all
        } else {
            Self::new(all.start + 1, all.end - 1)
        })
    }

    pub const fn len(&self) -> u32 {
        self.end - self.start
    }

    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub const fn contains(&self, addr: u32) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether every address of `other` is in `self`.
    pub const fn covers(&self, other: &Self) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Self { start, end })
    }

    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.start)
    }

    /// The last address; meaningless for an empty range.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.end.wrapping_sub(1))
    }

    /// The range as a CIDR block, when it is one (a power-of-two size, aligned).
    pub fn as_cidr(&self) -> Option<Ipv4Net> {
        let len = self.len();
        if len == 0 || !len.is_power_of_two() || !self.start.is_multiple_of(len) {
            return None;
        }
        let prefix = 32 - len.trailing_zeros() as u8;
        Ipv4Net::new(self.first(), prefix).ok()
    }
}

impl fmt::Display for AddrRange {
    /// `10.40.0.0/13` for a CIDR block, `10.32.0.2-10.32.0.9` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_cidr() {
            Some(net) => write!(f, "{net}"),
            None if self.is_empty() => write!(f, "{}-(empty)", self.first()),
            None => write!(f, "{}-{}", self.first(), self.last()),
        }
    }
}

/// Serde for an address kept as a number: dotted in JSON (state.json stays
/// readable), four bytes in binary formats.
pub(crate) mod dotted {
    use std::net::Ipv4Addr;

    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's serialize_with passes a reference"
    )]
    pub(crate) fn serialize<S: Serializer>(addr: &u32, s: S) -> Result<S::Ok, S::Error> {
        Ipv4Addr::from(*addr).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ipv4Addr::deserialize(d).map(u32::from)
    }
}

/// Coalesces sorted, disjoint ranges that touch.
pub(crate) fn coalesce(ranges: impl IntoIterator<Item = AddrRange>) -> Vec<AddrRange> {
    let mut out: Vec<AddrRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(prev) if prev.end == r.start => prev.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_of_nets() {
        let r = AddrRange::of_net(net("10.32.0.0/12")).unwrap();
        assert_eq!(r.len(), 1 << 20);
        assert_eq!(r.first(), Ipv4Addr::new(10, 32, 0, 0));
        assert_eq!(r.last(), Ipv4Addr::new(10, 47, 255, 255));
        assert_eq!(r.to_string(), "10.32.0.0/12");
        let h = AddrRange::hosts_of(net("10.9.0.0/30")).unwrap();
        assert_eq!((h.first(), h.len()), (Ipv4Addr::new(10, 9, 0, 1), 2));
        assert_eq!(AddrRange::hosts_of(net("10.9.0.4/31")).unwrap().len(), 2);
        assert_eq!(AddrRange::hosts_of(net("10.9.0.5/32")).unwrap().len(), 1);
        assert_eq!(AddrRange::of_net(net("255.255.255.0/24")), None);
        assert_eq!(AddrRange::of_net(net("0.0.0.0/0")), None);
    }

    #[test]
    fn display_and_cidr() {
        let r = AddrRange::new(u32::from(Ipv4Addr::new(10, 32, 0, 2)), 0x0a20_000a);
        assert_eq!(r.to_string(), "10.32.0.2-10.32.0.9");
        assert_eq!(r.as_cidr(), None);
        let r = AddrRange::new(0x0a28_0000, 0x0a30_0000);
        assert_eq!(r.as_cidr(), Some(net("10.40.0.0/13")));
        assert_eq!(AddrRange::new(5, 6).as_cidr().unwrap().prefix_len(), 32);
    }

    #[test]
    fn coalescing_and_intersection() {
        let c = coalesce([
            AddrRange::new(0, 4),
            AddrRange::new(4, 8),
            AddrRange::new(9, 10),
        ]);
        assert_eq!(c, vec![AddrRange::new(0, 8), AddrRange::new(9, 10)]);
        assert_eq!(
            AddrRange::new(0, 8).intersect(&AddrRange::new(6, 12)),
            Some(AddrRange::new(6, 8))
        );
        assert_eq!(AddrRange::new(0, 8).intersect(&AddrRange::new(8, 12)), None);
        assert!(AddrRange::new(0, 8).covers(&AddrRange::new(2, 8)));
        assert!(!AddrRange::new(0, 8).covers(&AddrRange::new(2, 9)));
    }
}
