//! `weave rmpeer`: take over the address space of a dead peer.

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// Take over the part of the allocation range owned by a peer that is gone
/// for good (its host died, or it was stopped without `weave reset`). Run it
/// on one peer only, and only for a peer that will not come back: two peers
/// taking over the same space would hand out the same addresses. PEER is
/// the name `weave status ipam` shows (or the nickname of a reachable peer).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "PEER")]
    peer: String,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    if let Reply::Message(text) = client::call(&paths.socket, &Request::RmPeer { peer: args.peer })?
    {
        println!("{text}");
    }
    Ok(())
}
