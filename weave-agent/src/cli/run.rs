//! `weave run`: `docker run` plus `weave attach`.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;
use crate::docker_args::parse_run_args;
use crate::ipam::parse_addr_requests;

/// Start a container with Docker (no Docker networking) and attach it to
/// weave. Always detached; prints the container id.
///
/// Addresses, in any mix and order: ADDR/PREFIX or ip:ADDR/PREFIX (exactly
/// that address), net:CIDR (any free address in that subnet; no host bits
/// set, at least a /30), net:default; none means one address from the
/// default subnet.
/// Docker flags: -d -i -t (combinable), --name, -e, -v, -l, -h, -w, -u,
/// --entrypoint, --rm, --privileged, --cap-add, --net=none.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "weave run [ADDR/PREFIX | ip:ADDR/PREFIX | net:CIDR | net:default ...] [DOCKER RUN FLAGS] IMAGE [COMMAND...]"
)]
pub struct Args {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    let (addrs, docker_args) = parse_addr_requests(&args.args)?;
    let spec = Box::new(parse_run_args(docker_args)?);
    match client::call(
        &paths.socket,
        &Request::Run {
            docker: paths.docker_host.clone(),
            spec,
            addrs,
        },
    )? {
        Reply::Attached { container_id, .. } => {
            println!("{container_id}");
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}
