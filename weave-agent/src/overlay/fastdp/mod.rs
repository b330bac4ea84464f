//! fastdp: unencrypted frames between direct neighbours that both run it
//! are encapsulated and decapsulated by eBPF programs in the kernel
//! (`weave-ebpf/src/fastdp`), never crossing the agent; everything else
//! (broadcasts, unknown MACs, relays, password mode, peers without fastdp,
//! ARP) takes the `AF_XDP` engine this overlay wraps, in the same wire format.
//!
//! The overlay's share of the work is bookkeeping: on every forwarding
//! table it writes the kernel's maps ([`plan`], [`writer`]) before the
//! engine below sees the table, and it feeds the MACs the kernel saw behind
//! neighbours back into the agent's MAC table ([`learn`]).

mod learn;
pub(crate) mod plan;
mod traffic;
mod writer;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use weave_common::fastdp::{FLAG_DECAP_L4_UDP, FLAG_ENABLED, FastdpConfig};

use crate::ebpf::FastdpMaps;
use crate::overlay::error::OverlayError;
use crate::overlay::forwarding::{ForwardingTable, Overlay, OverlayStats, ShortId};
use crate::overlay::vxlan::ETHERNET_HEADER_LEN;
use crate::overlay::xdp::XdpOverlay;

pub(crate) use learn::drain as drain_learnt;

/// What fastdp needs to know about this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastdpSettings {
    /// The data plane's UDP port (outer source port).
    pub data_port: u16,
    /// The overlay MTU.
    pub mtu: u32,
    /// Interface index of the bridge's datapath port (`vethwe-bridge`).
    pub bridge_port: u32,
    /// The kernel clears tunnel GSO state on decapsulation (probed).
    pub decap_l4_udp: bool,
}

/// The fastdp data plane; see the module documentation.
pub struct FastdpOverlay {
    inner: Arc<XdpOverlay>,
    writer: Mutex<writer::Writer>,
    traffic: Mutex<traffic::TrafficReader>,
    settings: FastdpSettings,
}

impl FastdpOverlay {
    /// Takes over fastdp's maps (the programs stay off until the first
    /// table) and starts reading what the kernel learns.
    pub fn start(
        inner: Arc<XdpOverlay>,
        maps: FastdpMaps,
        settings: FastdpSettings,
    ) -> Result<Arc<Self>, OverlayError> {
        let FastdpMaps {
            config,
            peers,
            senders,
            learnt,
            traffic,
        } = maps;
        let overlay = Arc::new(Self {
            inner,
            writer: Mutex::new(writer::Writer::new(config, peers, senders)),
            traffic: Mutex::new(traffic::TrafficReader::new(traffic)),
            settings,
        });
        overlay.inner.spawn_kernel_learning(learnt)?;
        Ok(overlay)
    }

    /// The neighbours the kernel carries frames to now.
    pub fn carried(&self) -> Vec<ShortId> {
        self.writer()
            .written()
            .peers
            .keys()
            .map(|&id| ShortId(id as u16))
            .collect()
    }

    fn writer(&self) -> MutexGuard<'_, writer::Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn traffic(&self) -> MutexGuard<'_, traffic::TrafficReader> {
        self.traffic.lock().unwrap_or_else(PoisonError::into_inner)
    }

    const fn config(&self, table: &ForwardingTable) -> FastdpConfig {
        let mut flags = 0;
        if !table.encrypted {
            flags |= FLAG_ENABLED;
            if self.settings.decap_l4_udp {
                flags |= FLAG_DECAP_L4_UDP;
            }
        }
        FastdpConfig {
            flags,
            me: table.me.0,
            data_port: self.settings.data_port,
            max_frame: self.settings.mtu + ETHERNET_HEADER_LEN as u32,
            bridge_port: self.settings.bridge_port,
        }
    }
}

impl Overlay for FastdpOverlay {
    fn name(&self) -> &'static str {
        "fastdp"
    }

    /// The engine below: what carries everything the kernel does not.
    fn userspace(&self) -> &'static str {
        self.inner.name()
    }

    fn update(&self, table: Arc<ForwardingTable>) {
        // One listing of the host's addresses per table, not one per peer.
        let held = addresses_held();
        let want = plan::desired(&table, |ip| {
            held.iter()
                .find(|&&(a, _)| a == ip)
                .map(|&(_, index)| index)
        });
        self.writer().apply(&want, self.config(&table));
        self.traffic()
            .note(want.peers.keys().map(|&id| ShortId(id as u16)));
        self.inner.update(table);
    }

    fn stats(&self) -> OverlayStats {
        let mut stats = OverlayStats {
            fastdp_map_failures: self.writer().failures(),
            ..self.inner.stats()
        };
        stats.neighbours.extend(self.traffic().read());
        stats
    }

    /// The engine's: the in-kernel program passes every datagram on the
    /// data port that is not VXLAN from a fastdp neighbour up to its socket.
    fn heartbeats(&self) -> Option<crate::overlay::HeartbeatPort> {
        self.inner.heartbeats()
    }

    fn stop(&self) {
        // Off before the engine's socket closes: nothing is encapsulated
        // towards peers that would find no one listening here.
        let mut writer = self.writer();
        writer.apply(
            &plan::Desired::default(),
            FastdpConfig {
                flags: 0,
                ..FastdpConfig::default()
            },
        );
        drop(writer);
        self.inner.stop();
    }
}

/// Every IPv4 address of this host with the index of the interface that
/// holds it (empty when they cannot be listed: nothing is encapsulated then).
fn addresses_held() -> Vec<(Ipv4Addr, u32)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|addr| {
            let ip = addr.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((ip, crate::overlay::sys::ifindex(&addr.interface_name)?))
        })
        .collect()
}
