//! Which data plane carries frames between hosts (`weave launch
//! --dataplane auto|fastdp|xdp|plain`), and why: `auto` takes fastdp (in
//! the kernel, with xdp for the rest) when there is no password, else xdp,
//! and falls back a step at a time with the reason logged and shown in
//! `weave status`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{DATAPATH_BRIDGE_END, DATAPATH_END, DataplaneChoice};
use crate::ebpf::Classifier;
use crate::overlay::{
    FastdpOverlay, FastdpSettings, Overlay, PlainConfig, PlainOverlay, XdpConfig, XdpOverlay,
};
use weave_common::fastdp::LOCAL_BRIDGE;

/// The running data plane and the line `weave status` shows for it.
pub(super) struct Selected {
    pub overlay: Arc<dyn Overlay>,
    pub reason: String,
    /// The in-kernel path runs: attached, and idle in password mode. The
    /// mesh offers it in hellos and uses it only without a password, and
    /// says per connection why not ("password mode", "peer has no fastdp").
    pub fastdp: bool,
}

/// What the data planes need to know about this host.
pub(super) struct Host {
    pub udp_listen: SocketAddr,
    pub mtu: u32,
    /// Password mode: fastdp cannot seal, so it does not run.
    pub encrypted: bool,
    /// Interfaces VXLAN from other hosts arrives on (fastdp decapsulates there).
    pub underlays: Vec<String>,
    pub bridge_mac: [u8; 6],
    pub bridge_port_index: u32,
    /// `--busy-poll`: the `AF_XDP` workers never sleep.
    pub busy_poll: bool,
}

/// Attaches the datapath program in the mode the choice needs and starts
/// the data plane. Called before the datapath port is up. Every data plane
/// seals frames in password mode (fastdp by leaving them to xdp), in the
/// same wire format.
pub(super) fn start(
    choice: DataplaneChoice,
    classifier: &mut Classifier,
    host: &Host,
) -> anyhow::Result<Selected> {
    let chosen = match choice {
        DataplaneChoice::Plain => "chosen with --dataplane plain",
        DataplaneChoice::Xdp => "chosen with --dataplane xdp",
        DataplaneChoice::Fastdp => "chosen with --dataplane fastdp",
        DataplaneChoice::Auto => "auto: supported here",
    };
    // Whatever the data plane, the isolation classifiers know a frame to
    // the bridge's MAC as one to the host as gateway (weave_common::isolation).
    classifier
        .set_local_mac(host.bridge_mac, LOCAL_BRIDGE)
        .context("telling the classifiers the bridge's MAC")?;
    if choice == DataplaneChoice::Plain {
        return start_plain(classifier, host, chosen.into());
    }
    let xdp = match start_xdp(classifier, host) {
        Ok(xdp) => xdp,
        Err(error) if choice == DataplaneChoice::Auto => {
            let why = crate::report::one_line(error.as_ref());
            tracing::warn!(reason = %why, "the accelerated data plane cannot run here: falling back to plain");
            return start_plain(
                classifier,
                host,
                format!("auto: fallback, xdp failed: {why}"),
            );
        }
        Err(error) => {
            return Err(error.context(format!(
                "starting the xdp data plane (--dataplane {})",
                if choice == DataplaneChoice::Fastdp {
                    "fastdp, which needs it"
                } else {
                    "xdp"
                }
            )));
        }
    };
    let xdp_line = xdp.describe();
    let fallback = |reason: String| {
        let overlay: Arc<dyn Overlay> = Arc::<XdpOverlay>::clone(&xdp);
        Selected {
            reason: format!("{xdp_line} ({reason})"),
            overlay,
            fastdp: false,
        }
    };
    match choice {
        DataplaneChoice::Xdp => return Ok(fallback(chosen.into())),
        DataplaneChoice::Auto if host.encrypted => {
            return Ok(fallback(
                "auto: password mode, fastdp carries unencrypted traffic only".into(),
            ));
        }
        _ => {}
    }
    match start_fastdp(classifier, host, Arc::clone(&xdp)) {
        // Chosen explicitly with a password: the programs are attached but
        // stay off (every frame must be sealed, which only the agent does),
        // so the choice is honoured and nothing weaker than asked runs.
        Ok(fastdp) if host.encrypted => {
            tracing::warn!(
                "fastdp carries unencrypted traffic only: in password mode every frame takes xdp"
            );
            Ok(Selected {
                reason: format!(
                    "fastdp idle in password mode (every frame is sealed and takes {xdp_line}) ({chosen})"
                ),
                overlay: fastdp,
                // It runs (idle): the mesh neither offers nor uses it with a
                // password, and shows "fastdp off: password mode" on each
                // connection rather than nothing.
                fastdp: true,
            })
        }
        Ok(fastdp) => Ok(Selected {
            reason: format!(
                "fastdp: {} + {xdp_line} for the rest ({chosen})",
                classifier.describe_fastdp().unwrap_or_default()
            ),
            overlay: fastdp,
            fastdp: true,
        }),
        Err(error) if choice == DataplaneChoice::Auto => {
            let why = crate::report::one_line(error.as_ref());
            tracing::warn!(reason = %why, "the in-kernel data plane cannot run here: using xdp alone");
            Ok(fallback(format!("auto: fastdp unavailable: {why}")))
        }
        Err(error) => {
            xdp.stop();
            Err(error.context("starting the in-kernel data plane (--dataplane fastdp)"))
        }
    }
}

fn start_fastdp(
    classifier: &mut Classifier,
    host: &Host,
    xdp: Arc<XdpOverlay>,
) -> anyhow::Result<Arc<dyn Overlay>> {
    classifier
        .attach_fastdp(DATAPATH_BRIDGE_END, host.bridge_mac, &host.underlays)
        .context("attaching the fastdp programs")?;
    let maps = classifier
        .take_fastdp_maps()
        .context("taking the fastdp programs' maps")?;
    let decap_l4_udp = classifier.probe_decap_l4_udp();
    let overlay = FastdpOverlay::start(
        xdp,
        maps,
        FastdpSettings {
            data_port: host.udp_listen.port(),
            mtu: host.mtu,
            bridge_port: host.bridge_port_index,
            decap_l4_udp,
        },
    )
    .context("starting fastdp")?;
    tracing::info!(decap_l4_udp, "fastdp started");
    Ok(overlay)
}

fn start_xdp(classifier: &mut Classifier, host: &Host) -> anyhow::Result<Arc<XdpOverlay>> {
    // Generic XDP: native XDP on a veth turns TSO off on its peer, the
    // bridge's port, and the kernel would cut every TCP super-frame into
    // MTU frames before the agent sees it. Generic XDP with a frags-aware
    // program hands the super-frame over whole (multi-buffer), and the agent
    // cuts it into VXLAN packets itself (`wire::segment`).
    let multi_buffer = classifier
        .attach_datapath_multi_buffer(DATAPATH_END)
        .context("attaching the datapath XDP program")?;
    let maps = classifier
        .take_datapath_maps()
        .context("taking the datapath program's maps")?;
    let xdp = XdpOverlay::start(
        XdpConfig {
            datapath_ifname: DATAPATH_END.to_string(),
            udp_listen: host.udp_listen,
            mtu: host.mtu,
            multi_buffer,
            busy_poll: host.busy_poll,
        },
        maps,
    )
    .context("starting the AF_XDP data plane")?;
    if xdp.multi_buffer() {
        let turned_off = crate::netlink::keep_tcp_segmentation_only(DATAPATH_BRIDGE_END)
            .with_context(|| format!("setting the transmit offloads of {DATAPATH_BRIDGE_END}"))?;
        tracing::debug!(
            ?turned_off,
            "offloads the agent cannot redo turned off on the datapath port"
        );
    } else {
        // Frames no larger than a UMEM chunk: the kernel segments.
        crate::netlink::disable_tx_offloads(DATAPATH_BRIDGE_END)
            .with_context(|| format!("turning off transmit offloads on {DATAPATH_BRIDGE_END}"))?;
    }
    Ok(xdp)
}

fn start_plain(
    classifier: &mut Classifier,
    host: &Host,
    reason: String,
) -> anyhow::Result<Selected> {
    classifier
        .attach_datapath(DATAPATH_END)
        .context("attaching the datapath XDP program")?;
    // A capture socket passes frames on as they are: they must leave the
    // bridge with finished checksums and no larger than the MTU (see
    // netlink/ethtool.rs); doing it on this one port keeps the containers'
    // offloads for local traffic.
    crate::netlink::disable_tx_offloads(DATAPATH_BRIDGE_END)
        .with_context(|| format!("turning off transmit offloads on {DATAPATH_BRIDGE_END}"))?;
    let overlay = PlainOverlay::start(PlainConfig {
        datapath_ifname: DATAPATH_END.to_string(),
        udp_listen: host.udp_listen,
        mtu: host.mtu,
    })
    .context("starting the data plane between hosts")?;
    Ok(Selected {
        overlay,
        reason: format!("capture socket on {DATAPATH_END} ({reason})"),
        fastdp: false,
    })
}
