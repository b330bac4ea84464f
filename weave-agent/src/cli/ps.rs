//! `weave ps`: attached containers, in Weave's format.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// List attached containers: short id, MAC, addresses.
#[derive(clap::Args, Debug)]
pub struct Args;

pub(super) fn run(paths: &Paths, _args: Args) -> anyhow::Result<()> {
    match client::call(&paths.socket, &Request::Ps)? {
        Reply::Ps(entries) => {
            for entry in entries {
                println!("{entry}");
            }
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}
