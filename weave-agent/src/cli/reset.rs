//! `weave reset`: remove everything weave created on this host.

use anyhow::Context as _;

use crate::api::{Reply, Request, client};
use crate::config::{BRIDGE, CONTAINER_PORT_PREFIX, DATAPATH_BRIDGE_END, DATAPATH_END, Paths};
use crate::netlink::Netlink;

/// Hand this peer's part of the address range to another peer, stop the
/// agent if it runs, then remove the bridge, every container port
/// (containers lose their ethwe), the datapath port, the agent's nftables
/// table (`table ip weave`, from `weave expose`) and the agent's state.
/// eBPF programs go with the agent, the ports they were attached to, and
/// their pins in bpffs.
#[derive(clap::Args, Debug)]
pub struct Args;

pub(super) fn run(paths: &Paths, _args: Args) -> anyhow::Result<()> {
    if client::is_running(&paths.socket) {
        // Its containers lose their addresses below: all of its space is free.
        match client::call(&paths.socket, &Request::Leave) {
            Ok(Reply::Message(text)) => eprintln!("weave: {text}"),
            Ok(_) => {}
            Err(e) => eprintln!("weave: could not hand the address space over: {e}"),
        }
        super::stop::run(paths, super::stop::Args {})?;
    } else {
        super::stop::wait_until_gone(paths)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(remove_links())?;
    // The gateway's nftables table (`weave expose`); without nft there is none.
    match crate::gateway::remove() {
        Ok(()) | Err(crate::gateway::GatewayError::NftMissing) => {}
        Err(e) => eprintln!("weave: could not remove the weave nftables table: {e}"),
    }
    // The classifier links a killed agent left pinned.
    crate::ebpf::remove_namespace_pins().context("removing the pinned eBPF links")?;
    for file in [&paths.socket, &paths.lock_file()] {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    match std::fs::remove_dir_all(&paths.state_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", paths.state_dir.display()))
        }
        _ => Ok(()),
    }
}

async fn remove_links() -> anyhow::Result<()> {
    let netlink = Netlink::connect()?;
    for (_, port) in netlink.links_with_prefix(CONTAINER_PORT_PREFIX).await? {
        netlink.delete(&port).await?;
    }
    netlink.delete(DATAPATH_BRIDGE_END).await?;
    netlink.delete(DATAPATH_END).await?;
    netlink.delete(BRIDGE).await?;
    Ok(())
}
