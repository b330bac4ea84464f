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
    /// Frames encapsulated in the kernel (fastdp) and sent straight to a peer.
    FastdpEncap = 11,
    /// Of those, super-frames (GSO) sent whole.
    FastdpEncapGso = 12,
    /// Frames fastdp left to the agent: it is off (password mode, not started).
    FastdpPassDisabled = 13,
    /// Frames fastdp left to the agent: broadcast, multicast or a MAC not learnt behind a peer.
    FastdpPassFlood = 14,
    /// Frames fastdp left to the agent: not a whole IPv4 packet (ARP, VLAN, options it cannot carry).
    FastdpPassNotIpv4 = 15,
    /// Frames fastdp left to the agent: the peer is not a direct fastdp neighbour (relayed, or no fastdp).
    FastdpPassNoPeer = 16,
    /// Frames fastdp left to the agent: larger than the overlay MTU allows,
    /// or than the path to the peer takes (its discovered path MTU).
    FastdpPassOversize = 17,
    /// Frames fastdp left to the agent: the kernel refused to make room for the headers.
    FastdpPassEncapFailed = 18,
    /// Frames dropped: the headers could not be written after room was made.
    FastdpDropRewrite = 19,
    /// VXLAN packets decapsulated in the kernel (fastdp) and handed to the bridge.
    FastdpDecap = 20,
    /// Of those, super-frames (GSO) handed on whole.
    FastdpDecapGso = 21,
    /// Packets on the data port fastdp left to the agent: it is off.
    FastdpToAgentDisabled = 22,
    /// Packets on the data port fastdp left to the agent: not from a fastdp neighbour.
    FastdpToAgentUnknownSender = 23,
    /// Packets on the data port fastdp left to the agent: to relay, flooded, or relayed to us.
    FastdpToAgentNotForUs = 24,
    /// Packets on the data port fastdp left to the agent: the inner frame is not one unicast IPv4 packet.
    FastdpToAgentInner = 25,
    /// Packets on the data port fastdp left to the agent: the inner source is a MAC of this host.
    FastdpToAgentSpoofed = 26,
    /// Super-frames fastdp left to the agent: not for a local container, and this kernel cannot clear their tunnel state.
    FastdpToAgentGsoRestricted = 27,
    /// Packets fastdp left to the agent: the kernel refused to remove the headers.
    FastdpDecapFailed = 28,
    /// MACs fastdp could not report to the agent (its ring was full).
    FastdpLearnLost = 29,
    /// Frames between a container and the agent's DNS address (UDP or TCP
    /// port 53, and the ARP for it) passed although outside its subnets.
    DnsPassed = 30,
    /// ARP about the agent's DNS address kept from other hosts (every host
    /// has the address on its bridge; each container must reach its own).
    DatapathDnsArpDropped = 31,
    /// Frames passed although outside the container's subnets because the
    /// host is their gateway: sent to the bridge's MAC (the host routes
    /// them), or replies the host routed or sent back (marked by the agent's
    /// nftables table, see `isolation::GATEWAY_REPLY_MARK`).
    GatewayPassed = 32,
}

impl Counter {
    pub const COUNT: u32 = 33;
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
        Self::FastdpEncap,
        Self::FastdpEncapGso,
        Self::FastdpPassDisabled,
        Self::FastdpPassFlood,
        Self::FastdpPassNotIpv4,
        Self::FastdpPassNoPeer,
        Self::FastdpPassOversize,
        Self::FastdpPassEncapFailed,
        Self::FastdpDropRewrite,
        Self::FastdpDecap,
        Self::FastdpDecapGso,
        Self::FastdpToAgentDisabled,
        Self::FastdpToAgentUnknownSender,
        Self::FastdpToAgentNotForUs,
        Self::FastdpToAgentInner,
        Self::FastdpToAgentSpoofed,
        Self::FastdpToAgentGsoRestricted,
        Self::FastdpDecapFailed,
        Self::FastdpLearnLost,
        Self::DnsPassed,
        Self::DatapathDnsArpDropped,
        Self::GatewayPassed,
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
            Self::FastdpEncap => "fastdp_encap",
            Self::FastdpEncapGso => "fastdp_encap_gso",
            Self::FastdpPassDisabled => "fastdp_pass_disabled",
            Self::FastdpPassFlood => "fastdp_pass_flood",
            Self::FastdpPassNotIpv4 => "fastdp_pass_not_ipv4",
            Self::FastdpPassNoPeer => "fastdp_pass_no_peer",
            Self::FastdpPassOversize => "fastdp_pass_oversize",
            Self::FastdpPassEncapFailed => "fastdp_pass_encap_failed",
            Self::FastdpDropRewrite => "fastdp_drop_rewrite",
            Self::FastdpDecap => "fastdp_decap",
            Self::FastdpDecapGso => "fastdp_decap_gso",
            Self::FastdpToAgentDisabled => "fastdp_to_agent_disabled",
            Self::FastdpToAgentUnknownSender => "fastdp_to_agent_unknown_sender",
            Self::FastdpToAgentNotForUs => "fastdp_to_agent_not_for_us",
            Self::FastdpToAgentInner => "fastdp_to_agent_inner",
            Self::FastdpToAgentSpoofed => "fastdp_to_agent_spoofed",
            Self::FastdpToAgentGsoRestricted => "fastdp_to_agent_gso_restricted",
            Self::FastdpDecapFailed => "fastdp_decap_failed",
            Self::FastdpLearnLost => "fastdp_learn_lost",
            Self::DnsPassed => "dns_passed",
            Self::DatapathDnsArpDropped => "datapath_dns_arp_dropped",
            Self::GatewayPassed => "gateway_passed",
        }
    }
}
