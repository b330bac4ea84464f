//! fastdp's programs in the kernel: loading them (only when fastdp is
//! chosen, so the other data planes never depend on them), attaching them
//! first on their TCX hooks, their maps, and the probe for what this kernel
//! can do. See `weave-ebpf/src/fastdp` and `docs/fastdp.md`.
//!
//! The links are not pinned: like the datapath XDP link they die with the
//! agent, and then frames fall back to the datapath port and VXLAN to the
//! agent's closed socket, so a dead agent forwards nothing (fails closed).

use aya::{
    TestRun as _, TestRunOptions,
    maps::{self, MapData},
    programs::{
        SchedClassifier, TcAttachType,
        links::LinkOrder,
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use weave_common::{
    fastdp::{FastdpConfig, FastdpPeer, LOCAL_BRIDGE, PeerTraffic, Sender, SenderKey},
    names::{
        FASTDP_CONFIG_MAP, FASTDP_DECAP_PROG, FASTDP_ENCAP_PROG, FASTDP_LEARNT_MAP,
        FASTDP_PEERS_MAP, FASTDP_PROBE_PROG, FASTDP_SENDERS_MAP, FASTDP_TRAFFIC_MAP,
    },
};

use super::{Classifier, DataplaneError, classifier_prog, tcx_supported};

/// Where fastdp's programs run; dropping it detaches them.
pub(super) struct FastdpLinks {
    encap_on: String,
    decap_on: Vec<String>,
    _links: Vec<SchedClassifierLink>,
}

/// The maps the agent drives fastdp through.
pub struct FastdpMaps {
    pub config: maps::Array<MapData, FastdpConfig>,
    /// Short id -> direct fastdp neighbour.
    pub peers: maps::HashMap<MapData, u32, FastdpPeer>,
    /// (IPv4, port) a neighbour's VXLAN comes from -> the neighbour.
    pub senders: maps::HashMap<MapData, SenderKey, Sender>,
    /// MACs the decapsulation program saw behind neighbours.
    pub learnt: maps::RingBuf<MapData>,
    /// What the programs carried per neighbour, by short id, per CPU.
    pub traffic: maps::PerCpuArray<MapData, PeerTraffic>,
}

impl Classifier {
    /// Loads fastdp's programs and attaches encapsulation at TCX egress of
    /// `bridge_port` and decapsulation at TCX ingress of every `underlays`
    /// device, first in line on each. The programs act only once the agent
    /// sets `FLAG_ENABLED` in their configuration.
    pub fn attach_fastdp(
        &mut self,
        bridge_port: &str,
        bridge_mac: [u8; 6],
        underlays: &[String],
    ) -> Result<(), DataplaneError> {
        if !tcx_supported() {
            return Err(DataplaneError::Unsupported {
                what: "fastdp",
                needs: "TCX (Linux 6.6 or later)",
            });
        }
        if underlays.is_empty() {
            return Err(DataplaneError::Unsupported {
                what: "fastdp",
                needs: "an underlay interface (up, with an IPv4 address)",
            });
        }
        self.load_fastdp()?;
        self.set_local_mac(bridge_mac, LOCAL_BRIDGE)?;
        // Replacing earlier links drops (detaches) them.
        self.fastdp = None;
        let mut links = vec![attach_first(
            &mut self.ebpf,
            FASTDP_ENCAP_PROG,
            bridge_port,
            TcAttachType::Egress,
        )?];
        for underlay in underlays {
            links.push(attach_first(
                &mut self.ebpf,
                FASTDP_DECAP_PROG,
                underlay,
                TcAttachType::Ingress,
            )?);
        }
        self.fastdp = Some(FastdpLinks {
            encap_on: bridge_port.to_owned(),
            decap_on: underlays.to_vec(),
            _links: links,
        });
        Ok(())
    }

    /// Loads fastdp's programs into the kernel (once; attaching does it too).
    pub fn load_fastdp(&mut self) -> Result<(), DataplaneError> {
        for prog in [FASTDP_ENCAP_PROG, FASTDP_DECAP_PROG, FASTDP_PROBE_PROG] {
            let program = classifier_prog(&mut self.ebpf, prog)?;
            if program.fd().is_err() {
                program
                    .load()
                    .map_err(|source| DataplaneError::LoadProgram { prog, source })?;
            }
        }
        Ok(())
    }

    /// Hands fastdp's maps to the data plane (once).
    pub fn take_fastdp_maps(&mut self) -> Result<FastdpMaps, DataplaneError> {
        Ok(FastdpMaps {
            config: self.take_map(FASTDP_CONFIG_MAP)?,
            peers: self.take_map(FASTDP_PEERS_MAP)?,
            senders: self.take_map(FASTDP_SENDERS_MAP)?,
            learnt: self.take_map(FASTDP_LEARNT_MAP)?,
            traffic: self.take_map(FASTDP_TRAFFIC_MAP)?,
        })
    }

    /// Whether this kernel clears tunnel GSO state when it decapsulates
    /// (`BPF_F_ADJ_ROOM_DECAP_L4_UDP`, after 6.18), asked of the kernel
    /// itself: the probe program tries the flag on a synthetic VXLAN packet.
    pub fn probe_decap_l4_udp(&self) -> bool {
        let Some(program) = self.ebpf.program(FASTDP_PROBE_PROG) else {
            return false;
        };
        let Ok(program): Result<&SchedClassifier, _> = program.try_into() else {
            return false;
        };
        let packet = probe_packet();
        let mut out = [0u8; 256];
        let result = program.test_run(TestRunOptions {
            data_in: Some(&packet),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        });
        matches!(result, Ok(r) if r.return_value == 0)
    }

    /// "TCX fastdp encap on vethwe-bridge, decap on eth0", when attached.
    pub fn describe_fastdp(&self) -> Option<String> {
        self.fastdp.as_ref().map(|f| {
            format!(
                "TCX fastdp encap on {}, decap on {}",
                f.encap_on,
                f.decap_on.join(" ")
            )
        })
    }
}

fn attach_first(
    ebpf: &mut aya::Ebpf,
    prog: &'static str,
    iface: &str,
    at: TcAttachType,
) -> Result<SchedClassifierLink, DataplaneError> {
    let program = classifier_prog(ebpf, prog)?;
    let attach_error = |source| DataplaneError::Attach {
        prog,
        iface: iface.to_owned(),
        source,
    };
    // First: a program before ours that passes VXLAN on (`TC_ACT_OK`) would
    // hide it from us, and we only take our own packets.
    let id = program
        .attach_with_options(iface, at, TcAttachOptions::TcxOrder(LinkOrder::first()))
        .map_err(attach_error)?;
    program.take_link(id).map_err(attach_error)
}

/// A minimal VXLAN packet (outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet
/// and IPv4 headers) for the probe. The destination MAC is zero, the
/// loopback's, so the test skb counts as addressed to this host.
fn probe_packet() -> [u8; 84] {
    let mut p = [0u8; 84];
    p[12] = 0x08; // IPv4
    p[14] = 0x45;
    p[16..18].copy_from_slice(&70u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17; // UDP
    p[38..40].copy_from_slice(&50u16.to_be_bytes());
    p[42] = 0x08; // VXLAN I flag
    p[62] = 0x08; // inner IPv4
    p[64] = 0x45;
    p[66..68].copy_from_slice(&20u16.to_be_bytes());
    p
}
