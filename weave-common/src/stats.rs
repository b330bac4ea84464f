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
}

impl Counter {
    pub const COUNT: u32 = 8;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::FromContainerPassed,
        Counter::ToContainerPassed,
        Counter::DropSpoofedMac,
        Counter::DropSpoofedIp,
        Counter::DropOtherSubnet,
        Counter::DropUnsupported,
        Counter::DropUnknownPort,
        Counter::DatapathFrames,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::FromContainerPassed => "from_container_passed",
            Counter::ToContainerPassed => "to_container_passed",
            Counter::DropSpoofedMac => "drop_spoofed_mac",
            Counter::DropSpoofedIp => "drop_spoofed_ip",
            Counter::DropOtherSubnet => "drop_other_subnet",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropUnknownPort => "drop_unknown_port",
            Counter::DatapathFrames => "datapath_frames",
        }
    }
}
