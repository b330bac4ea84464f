//! `weave status`: the agent's report, in Weave's shape.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// Show the agent's status.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_enum)]
    section: Option<Section>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Section {
    /// Every peer and the connections it reports.
    Peers,
    /// This peer's connections: direction, address, state, dataplane, MTU.
    Connections,
    /// The peers this agent dials (from launch and connect).
    Targets,
    /// Every counter: eBPF on the bridge, overlay, control plane.
    Dataplane,
    /// Who owns how much of the allocation range, how much is in use, and
    /// whether the owner is reachable.
    Ipam,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    let Reply::Status(status) = client::call(&paths.socket, &Request::Status)? else {
        bail!("unexpected reply from the agent");
    };
    match args.section {
        None => print!("{}", status.render()),
        Some(Section::Peers) => print!("{}", status.mesh.render_peers()),
        Some(Section::Connections) => print!("{}", status.mesh.render_connections()),
        Some(Section::Targets) => print!("{}", status.mesh.render_targets()),
        Some(Section::Dataplane) => print!("{}", status.render_dataplane()),
        Some(Section::Ipam) => print!("{}", status.ipam.render()),
    }
    Ok(())
}
