//! Which data plane carries frames between hosts (`weave launch
//! --dataplane auto|xdp|plain`), and why: `auto` takes the `AF_XDP` path when
//! it starts here and falls back to the plain one with the reason logged and
//! shown in `weave status`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{DATAPATH_END, DataplaneChoice};
use crate::ebpf::Classifier;
use crate::overlay::{Overlay, PlainConfig, PlainOverlay, XdpConfig, XdpOverlay};

/// The running data plane and the line `weave status` shows for it.
pub(super) struct Selected {
    pub overlay: Arc<dyn Overlay>,
    pub reason: String,
}

/// Attaches the datapath program in the mode the choice needs and starts
/// the data plane. Called before the datapath port is up. Both data planes
/// seal frames in password mode, in the same wire format.
pub(super) fn start(
    choice: DataplaneChoice,
    classifier: &mut Classifier,
    udp_listen: SocketAddr,
    mtu: u32,
) -> anyhow::Result<Selected> {
    if choice == DataplaneChoice::Plain {
        return start_plain(
            classifier,
            udp_listen,
            mtu,
            "chosen with --dataplane plain".into(),
        );
    }
    match start_xdp(classifier, udp_listen, mtu) {
        Ok((overlay, how)) => Ok(Selected {
            reason: format!(
                "{how} ({})",
                if choice == DataplaneChoice::Xdp {
                    "chosen with --dataplane xdp"
                } else {
                    "auto: supported here"
                }
            ),
            overlay,
        }),
        Err(error) if choice == DataplaneChoice::Auto => {
            let why = crate::report::one_line(error.as_ref());
            tracing::warn!(reason = %why, "the accelerated data plane cannot run here: falling back to plain");
            start_plain(
                classifier,
                udp_listen,
                mtu,
                format!("auto: fallback, xdp failed: {why}"),
            )
        }
        Err(error) => Err(error.context("starting the xdp data plane (--dataplane xdp)")),
    }
}

fn start_xdp(
    classifier: &mut Classifier,
    udp_listen: SocketAddr,
    mtu: u32,
) -> anyhow::Result<(Arc<dyn Overlay>, String)> {
    let native = classifier
        .attach_datapath_native(DATAPATH_END)
        .context("attaching the datapath XDP program")?;
    let maps = classifier
        .take_datapath_maps()
        .context("taking the datapath program's maps")?;
    let overlay = XdpOverlay::start(
        XdpConfig {
            datapath_ifname: DATAPATH_END.to_string(),
            udp_listen,
            mtu,
            native,
        },
        maps,
    )
    .context("starting the AF_XDP data plane")?;
    let how = overlay.describe();
    Ok((overlay, how))
}

fn start_plain(
    classifier: &mut Classifier,
    udp_listen: SocketAddr,
    mtu: u32,
    reason: String,
) -> anyhow::Result<Selected> {
    classifier
        .attach_datapath(DATAPATH_END)
        .context("attaching the datapath XDP program")?;
    let overlay = PlainOverlay::start(PlainConfig {
        datapath_ifname: DATAPATH_END.to_string(),
        udp_listen,
        mtu,
    })
    .context("starting the data plane between hosts")?;
    Ok(Selected {
        overlay,
        reason: format!("capture socket on {DATAPATH_END} ({reason})"),
    })
}
