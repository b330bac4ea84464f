//! The addresses this peer has handed out inside the space it owns in the
//! ring, and the choice of the next one.
//!
//! Which address: the lowest free one in the space we own inside the
//! requested subnet, never the network or broadcast address of that subnet
//! or of the whole range, and, while any other is free, never one that ends
//! in `.0` or `.255` (these look like network and broadcast addresses to
//! people and to classful-minded software, even where they are ordinary
//! hosts, as 10.40.0.0 is in 10.32.0.0/12). So the first container on the
//! first peer gets 10.32.0.1, and once a second peer has been given
//! 10.40.0.0/13 its first container gets 10.40.0.1. The avoided addresses are
//! not lost: they are handed out last.
//!
//! Memory is bounded by what is in use (a sorted set), never by the size of
//! the range.

use std::collections::BTreeSet;
use std::collections::btree_set;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::addr_range::AddrRange;
use super::ring::Ring;
use crate::peer_name::PeerName;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpaceError {
    #[error("{net} is outside the allocation range {range}")]
    OutsideRange { net: Ipv4Net, range: Ipv4Net },
    #[error("IP allocation is not initialised yet")]
    NotInitialised,
    #[error("this peer has no free address in {0}: ask a peer that has some")]
    NoSpace(Ipv4Net),
    #[error(
        "{0} is the network or broadcast address of its subnet or of the allocation range \
         and cannot be given to a container"
    )]
    Reserved(Ipv4Net),
    #[error("address {0} is already in use on this peer")]
    InUse(Ipv4Addr),
    #[error("address {addr} belongs to peer {owner}")]
    OwnedBy { addr: Ipv4Addr, owner: PeerName },
}

/// The addresses handed out by this peer inside the allocation range.
/// Serialised as a list of dotted addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Space {
    used: BTreeSet<Ipv4Addr>,
}

impl Space {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    pub fn is_used(&self, addr: Ipv4Addr) -> bool {
        self.used.contains(&addr)
    }

    /// In address order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.used.iter().copied()
    }

    fn used_in(&self, r: AddrRange) -> btree_set::Range<'_, Ipv4Addr> {
        self.used
            .range(Ipv4Addr::from(r.start)..Ipv4Addr::from(r.end.max(r.start)))
    }

    /// How many addresses of `r` are in use.
    pub fn count_in(&self, r: AddrRange) -> u32 {
        self.used_in(r).count() as u32
    }

    pub fn any_used_in(&self, r: AddrRange) -> bool {
        self.used_in(r).next().is_some()
    }

    /// The maximal runs of addresses of `seg` not in use, in order.
    pub fn free_runs(&self, seg: AddrRange) -> impl Iterator<Item = AddrRange> + '_ {
        let mut used = self.used_in(seg).map(|a| u64::from(u32::from(*a)));
        let mut cursor = u64::from(seg.start);
        let end = u64::from(seg.end);
        std::iter::from_fn(move || {
            loop {
                let next_used = used.next();
                let stop = next_used.unwrap_or(end);
                if cursor >= end {
                    return None;
                }
                let run = (cursor < stop).then(|| AddrRange::new(cursor as u32, stop as u32));
                cursor = stop + 1;
                if run.is_some() {
                    return run;
                }
            }
        })
    }

    /// Hands out an address of `subnet` (inside the ring's range) from the
    /// space `me` owns; see the module documentation for which.
    /// [`SpaceError::NoSpace`] means: ask a peer for space
    /// ([`Ring::donors`]), merge its answer, and try again.
    pub fn allocate(
        &mut self,
        ring: &Ring,
        me: PeerName,
        subnet: Ipv4Net,
    ) -> Result<Ipv4Net, SpaceError> {
        let subnet = subnet.trunc();
        if !ring.range().contains(&subnet) {
            return Err(SpaceError::OutsideRange {
                net: subnet,
                range: ring.range(),
            });
        }
        if !ring.is_initialised() {
            return Err(SpaceError::NotInitialised);
        }
        let no_space = SpaceError::NoSpace(subnet);
        let allowed = AddrRange::hosts_of(subnet)
            .zip(AddrRange::hosts_of(ring.range()))
            .and_then(|(s, r)| s.intersect(&r))
            .ok_or(no_space)?;
        let segments: Vec<AddrRange> = ring
            .owned_ranges(me)
            .iter()
            .filter_map(|o| o.intersect(&allowed))
            .collect();
        let addr = self
            .lowest_free(&segments, true)
            .or_else(|| self.lowest_free(&segments, false))
            .ok_or(SpaceError::NoSpace(subnet))?;
        let addr = Ipv4Addr::from(addr);
        self.used.insert(addr);
        Ok(Ipv4Net::new(addr, subnet.prefix_len()).expect("prefix from a valid net"))
    }

    /// The lowest free address of `segments`, skipping those ending in `.0`
    /// or `.255` when `avoid_round` (one of any three in a row qualifies).
    fn lowest_free(&self, segments: &[AddrRange], avoid_round: bool) -> Option<u32> {
        segments.iter().find_map(|seg| {
            self.free_runs(*seg).find_map(|run| {
                let upto = run.end.min(run.start.saturating_add(3));
                (run.start..upto).find(|a| !avoid_round || !matches!(a & 0xff, 0 | 255))
            })
        })
    }

    /// Takes the explicit address `net` (`10.40.0.9/24`: the address, and the
    /// subnet the container sees). It must lie in space `me` owns.
    pub fn claim(&mut self, ring: &Ring, me: PeerName, net: Ipv4Net) -> Result<(), SpaceError> {
        let addr = net.addr();
        let a = u32::from(addr);
        if !ring.addr_range().contains(a) {
            return Err(SpaceError::OutsideRange {
                net,
                range: ring.range(),
            });
        }
        let subnet_hosts = AddrRange::hosts_of(net.trunc());
        let range_hosts = AddrRange::hosts_of(ring.range());
        if !subnet_hosts.is_some_and(|h| h.contains(a))
            || !range_hosts.is_some_and(|h| h.contains(a))
        {
            return Err(SpaceError::Reserved(net));
        }
        match ring.owner_of(addr) {
            None => return Err(SpaceError::NotInitialised),
            Some(owner) if owner != me => return Err(SpaceError::OwnedBy { addr, owner }),
            Some(_) => {}
        }
        if !self.used.insert(addr) {
            return Err(SpaceError::InUse(addr));
        }
        Ok(())
    }

    /// Gives `addr` back; whether it was in use.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.used.remove(&addr)
    }

    /// For each range `me` owns, how many of its addresses could still be
    /// handed out.
    pub fn free_per_range(&self, ring: &Ring, me: PeerName) -> Vec<(AddrRange, u32)> {
        let Some(hosts) = AddrRange::hosts_of(ring.range()) else {
            return Vec::new();
        };
        ring.owned_ranges(me)
            .into_iter()
            .map(|r| {
                let usable = r.intersect(&hosts).map_or(0, |h| h.len());
                (r, usable.saturating_sub(self.count_in(r)))
            })
            .collect()
    }

    /// Addresses in use that `me` does not own in `ring`: none, unless a
    /// merge was refused or state on disk disagrees.
    pub fn not_owned(&self, ring: &Ring, me: PeerName) -> Vec<Ipv4Addr> {
        self.iter()
            .filter(|a| ring.owner_of(*a) != Some(me))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::test_support::{DEFAULT, ip, net, peer};

    /// The behaviour the issue asks for, end to end in the pure core.
    #[test]
    fn first_host_gets_10_32_0_1_and_the_second_10_40_0_1() {
        let (h1, h2) = (peer(1), peer(2));
        let mut ring1 = Ring::init_with_id(net(DEFAULT), h1, 42).unwrap();
        let mut space1 = Space::new();
        assert_eq!(
            space1.allocate(&ring1, h1, net(DEFAULT)).unwrap(),
            net("10.32.0.1/12")
        );
        ring1.report_free(h1, &space1);

        // Host 2 joins: it learns the ring, owns nothing, asks host 1.
        let mut ring2 = Ring::new(net(DEFAULT)).unwrap();
        let mut space2 = Space::new();
        ring2.merge(&ring1, h2, &space2).unwrap();
        assert_eq!(
            space2.allocate(&ring2, h2, net(DEFAULT)),
            Err(SpaceError::NoSpace(net(DEFAULT)))
        );
        assert_eq!(ring2.donors(h2, net(DEFAULT)), vec![h1]);
        let given = ring1.donate(h1, h2, net(DEFAULT), &space1).unwrap();
        assert_eq!(given.to_string(), "10.40.0.0/13");
        assert!(ring2.merge(&ring1, h2, &space2).unwrap().changed);
        assert_eq!(
            space2.allocate(&ring2, h2, net(DEFAULT)).unwrap(),
            net("10.40.0.1/12")
        );
        assert_eq!(
            space1.allocate(&ring1, h1, net(DEFAULT)).unwrap(),
            net("10.32.0.2/12")
        );
        // Each owns half.
        for share in ring1.shares() {
            assert_eq!(share.percent_of(ring1.size()), 50.0);
        }
    }

    #[test]
    fn addresses_ending_in_0_or_255_come_last() {
        let me = peer(1);
        let ring = Ring::init_with_id(net("10.1.0.0/23"), me, 1).unwrap();
        let mut space = Space::new();
        let mut got = Vec::new();
        while let Ok(a) = space.allocate(&ring, me, net("10.1.0.0/23")) {
            got.push(a.addr());
        }
        assert_eq!(got.len(), 510);
        assert_eq!(got[253], ip("10.1.0.254"));
        assert_eq!(got[254], ip("10.1.1.1"));
        assert_eq!(got[507], ip("10.1.1.254"));
        assert_eq!(&got[508..], &[ip("10.1.0.255"), ip("10.1.1.0")]);
        // They can always be claimed explicitly.
        space.release(ip("10.1.1.0"));
        space.claim(&ring, me, net("10.1.1.0/23")).unwrap();
    }

    #[test]
    fn an_exhausted_range_says_so_and_released_addresses_are_reused() {
        let me = peer(1);
        let ring = Ring::init_with_id(net("10.9.0.0/30"), me, 1).unwrap();
        let mut space = Space::new();
        let s = net("10.9.0.0/30");
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.9.0.1/30"));
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.9.0.2/30"));
        assert_eq!(space.allocate(&ring, me, s), Err(SpaceError::NoSpace(s)));
        assert_eq!(space.free_per_range(&ring, me)[0].1, 0);
        assert!(space.release(ip("10.9.0.1")));
        assert!(!space.release(ip("10.9.0.1")));
        assert_eq!(space.free_per_range(&ring, me)[0].1, 1);
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.9.0.1/30"));
    }

    #[test]
    fn a_32_range_has_one_address_and_a_31_two() {
        let me = peer(1);
        let ring = Ring::init_with_id(net("10.9.1.0/32"), me, 1).unwrap();
        let mut space = Space::new();
        let s = net("10.9.1.0/32");
        // It ends in .0, and it is the only one: it is handed out.
        assert_eq!(space.allocate(&ring, me, s).unwrap(), s);
        assert_eq!(space.allocate(&ring, me, s), Err(SpaceError::NoSpace(s)));
        let ring = Ring::init_with_id(net("10.9.1.4/31"), me, 1).unwrap();
        let mut space = Space::new();
        let s = net("10.9.1.4/31");
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.9.1.4/31"));
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.9.1.5/31"));
        assert!(space.allocate(&ring, me, s).is_err());
    }

    #[test]
    fn subnets_inside_the_range_skip_their_own_network_and_broadcast() {
        let me = peer(1);
        let ring = Ring::init_with_id(net(DEFAULT), me, 1).unwrap();
        let mut space = Space::new();
        let s = net("10.33.7.0/30");
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.33.7.1/30"));
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.33.7.2/30"));
        assert_eq!(space.allocate(&ring, me, s), Err(SpaceError::NoSpace(s)));
        // A /31 at the start of the range still never gets the range's
        // network address.
        let s = net("10.32.0.0/31");
        assert_eq!(space.allocate(&ring, me, s).unwrap(), net("10.32.0.1/31"));
        assert_eq!(space.allocate(&ring, me, s), Err(SpaceError::NoSpace(s)));
        // Outside the range: not the ring's business.
        assert!(matches!(
            space.allocate(&ring, me, net("10.0.1.0/24")),
            Err(SpaceError::OutsideRange { .. })
        ));
        assert!(matches!(
            space.allocate(&ring, me, net("10.0.0.0/8")),
            Err(SpaceError::OutsideRange { .. })
        ));
    }

    #[test]
    fn claims_must_be_free_usable_and_ours() {
        let (a, b) = (peer(1), peer(2));
        let mut ring = Ring::init_with_id(net(DEFAULT), a, 1).unwrap();
        ring.donate(a, b, net(DEFAULT), &Space::new()).unwrap();
        let mut space = Space::new();
        space.claim(&ring, a, net("10.32.5.5/24")).unwrap();
        assert_eq!(
            space.claim(&ring, a, net("10.32.5.5/24")),
            Err(SpaceError::InUse(ip("10.32.5.5")))
        );
        assert_eq!(
            space.claim(&ring, a, net("10.40.0.9/12")),
            Err(SpaceError::OwnedBy {
                addr: ip("10.40.0.9"),
                owner: b
            })
        );
        for reserved in [
            "10.32.5.0/24",
            "10.32.5.255/24",
            "10.32.0.0/32",
            "10.47.255.255/32",
        ] {
            assert_eq!(
                space.claim(&ring, a, net(reserved)),
                Err(SpaceError::Reserved(net(reserved))),
                "{reserved}"
            );
        }
        assert!(matches!(
            space.claim(&ring, a, net("10.0.1.1/24")),
            Err(SpaceError::OutsideRange { .. })
        ));
        // An ordinary host of the /12, even though it ends in .0.
        space.claim(&ring, a, net("10.33.0.0/12")).unwrap();
        // Allocation skips claimed addresses.
        assert_eq!(
            space.allocate(&ring, a, net("10.32.5.0/24")).unwrap(),
            net("10.32.5.1/24")
        );
        assert_eq!(
            space.allocate(&ring, a, net("10.32.5.0/24")).unwrap(),
            net("10.32.5.2/24")
        );
        let uninit = Ring::new(net(DEFAULT)).unwrap();
        assert_eq!(
            Space::new().claim(&uninit, a, net("10.32.5.5/24")),
            Err(SpaceError::NotInitialised)
        );
        assert_eq!(
            Space::new().allocate(&uninit, a, net(DEFAULT)),
            Err(SpaceError::NotInitialised)
        );
    }

    #[test]
    fn free_runs_walk_the_gaps() {
        let mut space = Space::new();
        let ring = Ring::init_with_id(net("10.9.0.0/24"), peer(1), 1).unwrap();
        for a in ["10.9.0.1", "10.9.0.2", "10.9.0.5", "10.9.0.9"] {
            space
                .claim(&ring, peer(1), net(&format!("{a}/24")))
                .unwrap();
        }
        let seg = AddrRange::new(u32::from(ip("10.9.0.0")), u32::from(ip("10.9.0.10")));
        let runs: Vec<String> = space.free_runs(seg).map(|r| r.to_string()).collect();
        assert_eq!(
            runs,
            ["10.9.0.0/32", "10.9.0.3-10.9.0.4", "10.9.0.6-10.9.0.8"]
        );
        let seg = AddrRange::new(u32::from(ip("10.9.0.1")), u32::from(ip("10.9.0.3")));
        assert_eq!(space.free_runs(seg).count(), 0);
    }

    #[test]
    fn a_space_is_bounded_by_what_is_used_and_round_trips() {
        let me = peer(1);
        let ring = Ring::init_with_id(net(DEFAULT), me, 1).unwrap();
        let mut space = Space::new();
        for _ in 0..1000 {
            space.allocate(&ring, me, net(DEFAULT)).unwrap();
        }
        assert_eq!(space.len(), 1000);
        let json = serde_json::to_string(&space).unwrap();
        assert!(json.starts_with("[\"10.32.0.1\","), "{json}");
        let back: Space = serde_json::from_str(&json).unwrap();
        assert_eq!(back, space);
        assert!(space.not_owned(&ring, me).is_empty());
        assert_eq!(space.not_owned(&ring, peer(2)).len(), 1000);
    }
}
