//! `weave ps`: attached containers, in Weave's format.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// List attached containers: id (the first 12 characters of the name given,
/// as Weave prints it), MAC, addresses in the order attached. With
/// containers named, only those, in that order; a container that is not
/// attached shows nothing, as in Weave.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container ids, id prefixes or names (all attached ones when none).
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    let request = Request::Ps {
        docker: paths.docker_host.clone(),
        containers: args.containers,
    };
    match client::call(&paths.socket, &request)? {
        Reply::Ps(entries) => {
            for entry in entries {
                println!("{entry}");
            }
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}
