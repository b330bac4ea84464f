//! `weave status`: the agent's report, in Weave's shape or as JSON.

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::api::{Reply, Request, client};
use crate::config::Paths;
use crate::status::Status;

/// Show the agent's status.
///
/// Without SECTION: Weave's summary (router, ipam, data plane). With
/// `--json`, the same snapshot as one JSON object: everything any section
/// prints comes from its fields (the control socket's `Status` reply).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_enum)]
    section: Option<Section>,
    /// Print JSON instead of text: the whole snapshot, or with SECTION only
    /// that section's part (peers: a list; connections: the list with the
    /// data plane and MTU they share; targets: a list; dataplane: every
    /// counter; ipam: the allocation status and its peers; dns: the
    /// names and counters, or null with --no-dns).
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Section {
    /// Every peer and the connections it reports.
    Peers,
    /// This peer's connections: direction, address, state, dataplane, MTU.
    Connections,
    /// The peers this agent dials (from launch and connect).
    Targets,
    /// Every counter (eBPF on the bridge, overlay, control plane) and the
    /// traffic with each neighbour.
    Dataplane,
    /// Who owns how much of the allocation range, how much is in use, and
    /// whether the owner is reachable.
    Ipam,
    /// weaveDNS: every name this peer knows (name, address, container,
    /// origin peer), the upstream resolvers and the server's counters.
    Dns,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    let Reply::Status(status) = client::call(&paths.socket, &Request::Status)? else {
        bail!("unexpected reply from the agent");
    };
    if args.json {
        println!("{}", json(&status, args.section)?);
        return Ok(());
    }
    match args.section {
        None => print!("{}", status.render()),
        Some(Section::Peers) => print!("{}", status.mesh.render_peers()),
        Some(Section::Connections) => print!("{}", status.mesh.render_connections()),
        Some(Section::Targets) => print!("{}", status.mesh.render_targets()),
        Some(Section::Dataplane) => print!("{}", status.render_dataplane()),
        Some(Section::Ipam) => print!("{}", status.ipam.render()),
        Some(Section::Dns) => match &status.dns {
            Some(dns) => print!("{}", dns.render()),
            None => println!("weaveDNS is off (--no-dns)"),
        },
    }
    Ok(())
}

/// The snapshot, or the fields one section's text is made of.
fn json(status: &Status, section: Option<Section>) -> anyhow::Result<String> {
    fn to_string(value: &impl Serialize) -> anyhow::Result<String> {
        serde_json::to_string_pretty(value).context("encoding the status as JSON")
    }
    match section {
        None => to_string(status),
        Some(Section::Peers) => to_string(&status.mesh.peers),
        Some(Section::Connections) => to_string(&status.connections_section()),
        Some(Section::Targets) => to_string(&status.mesh.targets),
        Some(Section::Dataplane) => to_string(&status.dataplane_section()),
        Some(Section::Ipam) => to_string(&status.ipam),
        Some(Section::Dns) => to_string(&status.dns),
    }
}
