//! Counters the eBPF programs keep, one slot per reason, so that every drop
//! is visible in `weave status`.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames from containers passed to the bridge.
    FromContainerPassed = 0,
    /// Frames to containers passed to the container.
    ToContainerPassed = 1,
    /// Source MAC (Ethernet or ARP) other than the one assigned.
    DropSpoofedMac = 2,
    /// Source IP (IPv4 or ARP) other than the ones assigned.
    DropSpoofedIp = 3,
    /// Destination outside every subnet the endpoint belongs to.
    DropOtherSubnet = 4,
    /// Not IPv4 or ARP, VLAN tagged, or too short to classify.
    DropUnsupported = 5,
    /// Port without an endpoint entry (not yet or no longer attached).
    DropUnknownPort = 6,
    /// Frames seen by the datapath port's XDP program.
    DatapathFrames = 7,
    /// Datapath frames redirected into the agent's `AF_XDP` socket.
    DatapathToAgent = 8,
    /// Datapath frames passed to the kernel (no `AF_XDP` socket: the plain
    /// data plane's capture socket takes them there).
    DatapathPassed = 9,
    /// Datapath frames handed on without a destination tag (no room for
    /// metadata): the agent looks the destination up itself.
    DatapathUntagged = 10,
}

impl Counter {
    pub const COUNT: u32 = 11;
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::FromContainerPassed,
        Self::ToContainerPassed,
        Self::DropSpoofedMac,
        Self::DropSpoofedIp,
        Self::DropOtherSubnet,
        Self::DropUnsupported,
        Self::DropUnknownPort,
        Self::DatapathFrames,
        Self::DatapathToAgent,
        Self::DatapathPassed,
        Self::DatapathUntagged,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::FromContainerPassed => "from_container_passed",
            Self::ToContainerPassed => "to_container_passed",
            Self::DropSpoofedMac => "drop_spoofed_mac",
            Self::DropSpoofedIp => "drop_spoofed_ip",
            Self::DropOtherSubnet => "drop_other_subnet",
            Self::DropUnsupported => "drop_unsupported",
            Self::DropUnknownPort => "drop_unknown_port",
            Self::DatapathFrames => "datapath_frames",
            Self::DatapathToAgent => "datapath_to_agent",
            Self::DatapathPassed => "datapath_passed",
            Self::DatapathUntagged => "datapath_untagged",
        }
    }
}
