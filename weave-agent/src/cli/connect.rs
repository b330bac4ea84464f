//! `weave connect` and `weave forget`: the peers this agent dials.

use crate::api::{Request, client};
use crate::config::Paths;

/// Connect to more peers (host or host:port; the port defaults to 6783).
/// They join the targets, which persist across agent restarts.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// Make these peers the targets: the others are forgotten (as with
    /// `forget`, connections already made stay), as in Weave.
    #[arg(long)]
    replace: bool,
    #[arg(required_unless_present = "replace", value_name = "PEER")]
    peers: Vec<String>,
}

/// Stop dialling peers. Connections already made stay, as in Weave.
#[derive(clap::Args, Debug)]
pub struct ForgetArgs {
    #[arg(required = true, value_name = "PEER")]
    peers: Vec<String>,
}

pub(super) fn connect(paths: &Paths, args: ConnectArgs) -> anyhow::Result<()> {
    client::call(
        &paths.socket,
        &Request::Connect {
            peers: args.peers,
            replace: args.replace,
        },
    )?;
    Ok(())
}

pub(super) fn forget(paths: &Paths, args: ForgetArgs) -> anyhow::Result<()> {
    client::call(&paths.socket, &Request::Forget { peers: args.peers })?;
    Ok(())
}
