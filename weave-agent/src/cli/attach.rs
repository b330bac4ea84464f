//! `weave attach` and `weave detach` for containers that already run.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;
use crate::ipam::parse_addr_requests;

/// Attach a running container to weave (or give an attached one more
/// addresses); prints the addresses it got.
#[derive(clap::Args, Debug)]
#[command(override_usage = "weave attach [ADDR/PREFIX | net:CIDR | net:default ...] CONTAINER")]
pub struct AttachArgs {
    #[arg(required = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Detach a container from weave: its ethwe is removed and its addresses freed.
#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// Container id, id prefix or name.
    container: String,
}

pub(super) fn attach(paths: &Paths, args: AttachArgs) -> anyhow::Result<()> {
    let (addrs, rest) = parse_addr_requests(&args.args)?;
    let [container] = rest else {
        bail!("attach takes addresses followed by exactly one container");
    };
    let request = Request::Attach {
        docker: paths.docker_host.clone(),
        container: container.clone(),
        addrs,
    };
    match client::call(&paths.socket, &request)? {
        Reply::Attached { cidrs, .. } => {
            let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            println!("{}", cidrs.join(" "));
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}

pub(super) fn detach(paths: &Paths, args: DetachArgs) -> anyhow::Result<()> {
    client::call(
        &paths.socket,
        &Request::Detach {
            docker: paths.docker_host.clone(),
            container: args.container,
        },
    )?;
    Ok(())
}
