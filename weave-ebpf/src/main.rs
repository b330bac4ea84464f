//! The weave dataplane's eBPF programs.
//!
//! - `weave_from_container` / `weave_to_container`: TC classifiers on a
//!   container's host-side veth (`vethwepl<pid>`), ingress and egress. They
//!   enforce subnet isolation with the rules in `weave_common::isolation`.
//! - `weave_fastdp_encap` / `weave_fastdp_decap`: in-kernel VXLAN for
//!   unencrypted traffic between direct fastdp neighbours (see `fastdp`).
//! - `weave_datapath`: XDP on the agent's datapath veth (`vethwe-datapath`):
//!   tags each frame with its destination peer and redirects it into the
//!   agent's `AF_XDP` socket, or passes it when there is none (plain path).
//!   Frags-aware; `weave_datapath_single_buffer` is the same program
//!   without, for kernels that refuse `xdp.frags` (before 5.18).
//!
//! Maps are declared here, together; each program is a thin entry around a
//! `try_` function whose every error is a deliberate, counted action.
//! There is no eBPF logging: every decision shows up in `COUNTERS`, and log
//! statements would only add verifier complexity.
//!
//! Built for `bpfel-unknown-none` by weave-agent's build script. On the host
//! the crate compiles to an empty binary, so workspace-wide `cargo check` and
//! `cargo clippy` still cover this code.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod datapath;
mod fastdp;
mod parse;
mod port;

use aya_ebpf::{
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, XskMap},
    programs::{TcContext, XdpContext},
};
use weave_common::{
    Counter, Endpoint, MAX_ENDPOINTS,
    datapath::MAX_PEER_MACS,
    fastdp::{
        FastdpConfig, FastdpPeer, LEARNT_RING_BYTES, MAX_FASTDP_PEERS, MAX_SEEN, MAX_SHORT_IDS,
        PeerTraffic, Seen, Sender, SenderKey,
    },
    isolation::MAX_EXPOSED,
};

/// Container ports by host-side interface index. Written by the agent before
/// it attaches the classifiers to a port.
#[map(name = "ENDPOINTS")]
static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// The agent's `AF_XDP` socket, in the slot of the datapath port's receive
/// queue (a veth has one: slot 0). Empty with the plain data plane.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(1, 0);

/// MACs learnt behind peers (`datapath::mac_key`) -> the peer's short id.
/// Written by the agent's `AF_XDP` path; read by `weave_datapath`.
#[map(name = "PEER_MACS")]
static PEER_MACS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PEER_MACS, 0);

/// fastdp's settings (one entry), written by the agent.
#[map(name = "FASTDP_CONFIG")]
static FASTDP_CONFIG: Array<FastdpConfig> = Array::with_max_entries(1, 0);

/// Direct fastdp neighbours by short id: where encapsulated frames go.
#[map(name = "FASTDP_PEERS")]
static FASTDP_PEERS: HashMap<u32, FastdpPeer> = HashMap::with_max_entries(MAX_FASTDP_PEERS, 0);

/// Direct fastdp neighbours by the (IPv4, UDP port) their VXLAN comes from.
#[map(name = "FASTDP_SENDERS")]
static FASTDP_SENDERS: HashMap<SenderKey, Sender> = HashMap::with_max_entries(MAX_FASTDP_PEERS, 0);

/// MACs of this host's bridge (`datapath::mac_key` -> `fastdp::LOCAL_*`):
/// containers and the bridge itself. Written by the agent; the isolation
/// classifiers read the bridge's entry (a frame to the host as gateway).
#[map(name = "LOCAL_MACS")]
static LOCAL_MACS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_ENDPOINTS + 1, 0);

/// What the decapsulation program last reported for each MAC.
#[map(name = "FASTDP_SEEN")]
static FASTDP_SEEN: LruHashMap<u64, Seen> = LruHashMap::with_max_entries(MAX_SEEN, 0);

/// MACs the decapsulation program reports to the agent (`fastdp::Learnt`).
#[map(name = "FASTDP_LEARNT")]
static FASTDP_LEARNT: RingBuf = RingBuf::with_byte_size(LEARNT_RING_BYTES, 0);

/// What fastdp carried to and from each neighbour, by short id, per CPU;
/// the agent sums them (`weave status`, per-peer metrics).
#[map(name = "FASTDP_TRAFFIC")]
static FASTDP_TRAFFIC: PerCpuArray<PeerTraffic> = PerCpuArray::with_max_entries(MAX_SHORT_IDS, 0);
/// The agent's weaveDNS address (one entry, host byte order; 0 = off): the
/// isolation classifiers let DNS to and from it through (see
/// `weave_common::isolation`), and the datapath keeps ARP about it local.
#[map(name = "DNS_ADDR")]
static DNS_ADDR: Array<u32> = Array::with_max_entries(1, 0);

/// The subnets this host is exposed in (`isolation::exposed_slot`; 0 is an
/// empty slot), written by the agent on `weave expose`/`hide`: a container
/// of one of them may use the host as its gateway.
#[map(name = "EXPOSED")]
static EXPOSED: Array<u64> = Array::with_max_entries(MAX_EXPOSED, 0);

/// One slot per [`Counter`], per CPU; the agent sums them.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only touched by programs running on this
        // CPU, and BPF programs are not preempted by each other on one CPU.
        unsafe {
            *slot += 1;
        }
    }
}

/// Frames sent by the container (TC ingress of its host-side veth).
#[classifier]
pub(crate) fn weave_from_container(ctx: TcContext) -> i32 {
    port::tc_action(port::try_from_container(&ctx), Counter::FromContainerPassed)
}

/// Frames about to reach the container (TC egress of its host-side veth).
#[classifier]
pub(crate) fn weave_to_container(ctx: TcContext) -> i32 {
    port::tc_action(port::try_to_container(&ctx), Counter::ToContainerPassed)
}

/// Frames the bridge hands to the agent's datapath port. Frags-aware
/// (`xdp.frags`): a TCP super-frame arrives whole, as a multi-buffer frame
/// whose first buffer holds every header the program reads.
#[xdp(frags)]
pub(crate) fn weave_datapath(ctx: XdpContext) -> u32 {
    datapath::xdp_action(datapath::try_datapath(&ctx))
}

/// `weave_datapath` for kernels without multi-buffer XDP (the agent loads
/// this one when the kernel refuses `xdp.frags`; TSO stays off then).
#[xdp]
pub(crate) fn weave_datapath_single_buffer(ctx: XdpContext) -> u32 {
    datapath::xdp_action(datapath::try_datapath(&ctx))
}

/// The kernel only lets GPL-compatible programs call many helpers.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Unreachable in a verified program: the verifier rejects any path to this
/// loop, so a panic that survives optimisation fails the load, not a packet.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
const fn main() {}

/// fastdp encapsulation (TCX egress of the bridge's datapath port).
#[classifier]
pub(crate) fn weave_fastdp_encap(ctx: TcContext) -> i32 {
    fastdp::tc_action(fastdp::encap::try_encap(&ctx))
}

/// fastdp decapsulation (TCX ingress of an underlay interface).
#[classifier]
pub(crate) fn weave_fastdp_decap(ctx: TcContext) -> i32 {
    fastdp::tc_action(fastdp::decap::try_decap(&ctx))
}

/// Feature probe, run by the agent through `BPF_PROG_TEST_RUN` only.
#[classifier]
pub(crate) fn weave_fastdp_probe(ctx: TcContext) -> i32 {
    fastdp::probe::try_probe(&ctx)
}
