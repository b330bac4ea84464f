//! What the agent tells the kernel about each container port.

/// Addresses one container interface may hold (Weave allows several per container).
pub const MAX_ENDPOINT_ADDRS: usize = 4;

/// One address assigned to a container, with its subnet mask.
/// Both in host byte order; an unused slot has `netmask == 0 && ip == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointAddr {
    pub ip: u32,
    pub netmask: u32,
}

impl EndpointAddr {
    pub const fn new(ip: u32, prefix_len: u8) -> Self {
        let netmask = if prefix_len == 0 {
            0
        } else if prefix_len >= 32 {
            u32::MAX
        } else {
            u32::MAX << (32 - prefix_len)
        };
        Self { ip, netmask }
    }

    /// True when `other` lies in this address's subnet.
    #[inline(always)]
    pub const fn same_subnet(&self, other: u32) -> bool {
        (self.ip & self.netmask) == (other & self.netmask)
    }

    /// The subnet's directed broadcast address.
    #[inline(always)]
    pub const fn broadcast(&self) -> u32 {
        self.ip | !self.netmask
    }
}

/// The map value keyed by the host-side interface index of a container port
/// (`vethwepl<pid>`): the MAC and addresses the container was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    /// Number of valid entries at the start of `addrs` (u16 keeps the layout free of padding).
    pub addr_count: u16,
    pub addrs: [EndpointAddr; MAX_ENDPOINT_ADDRS],
}

impl Endpoint {
    /// The assigned address equal to `ip`, if any.
    #[inline(always)]
    pub const fn owned(&self, ip: u32) -> Option<&EndpointAddr> {
        let n = self.addr_count as usize;
        let mut i = 0;
        while i < MAX_ENDPOINT_ADDRS {
            if i < n && self.addrs[i].ip == ip {
                return Some(&self.addrs[i]);
            }
            i += 1;
        }
        None
    }

    /// The assigned address for which `ip` is the address itself or its
    /// subnet's broadcast: the address a frame to `ip` is meant for.
    #[inline(always)]
    pub const fn receiving(&self, ip: u32) -> Option<&EndpointAddr> {
        let n = self.addr_count as usize;
        let mut i = 0;
        while i < MAX_ENDPOINT_ADDRS {
            if i < n && (self.addrs[i].ip == ip || self.addrs[i].broadcast() == ip) {
                return Some(&self.addrs[i]);
            }
            i += 1;
        }
        None
    }

    /// True when `ip` lies in the subnet of any of the assigned addresses.
    #[inline(always)]
    pub const fn shares_subnet(&self, ip: u32) -> bool {
        let n = self.addr_count as usize;
        let mut i = 0;
        while i < MAX_ENDPOINT_ADDRS {
            if i < n && self.addrs[i].same_subnet(ip) {
                return true;
            }
            i += 1;
        }
        false
    }
}

// No padding anywhere in the map value: 6 + 2 bytes, then u32-aligned pairs.
// The kernel copies it byte for byte, so a hole would be uninitialised memory.
const _: () = assert!(
    size_of::<Endpoint>() == 6 + 2 + MAX_ENDPOINT_ADDRS * 8,
    "Endpoint must have no padding"
);

#[cfg(feature = "user")]
// SAFETY: `Endpoint` is `repr(C)`, `Copy`, and made only of integers and
// arrays of integers (`EndpointAddr` is two `u32` and `repr(C)` too), so every
// bit pattern is a valid value; the assertion above proves it has no padding
// bytes, so copying it to and from a BPF map reads no uninitialised memory.
unsafe impl aya::Pod for Endpoint {}
