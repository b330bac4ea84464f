//! `weave attach` and `weave detach` for containers that already run.

use anyhow::bail;
use ipnet::Ipv4Net;

use crate::api::{Reply, Request, client};
use crate::config::Paths;
use crate::ipam::{parse_addr_requests, split_addr_args};

/// Attach a running container to weave (or give an attached one more
/// addresses); prints the addresses it got, without their prefix length, as
/// Weave does.
///
/// Addresses, in any mix and order: ADDR/PREFIX or ip:ADDR/PREFIX (exactly
/// that address), net:CIDR (any free address in that subnet), net:default;
/// none means one address from the default subnet.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "weave attach [ADDR/PREFIX | ip:ADDR/PREFIX | net:CIDR | net:default ...] CONTAINER"
)]
pub struct AttachArgs {
    #[arg(required = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Detach a container from weave: frees the addresses given (all when none)
/// and prints them, without their prefix length, as Weave does. The port
/// (ethwe) goes with the last address.
///
/// Addresses: ADDR/PREFIX or ip:ADDR/PREFIX (that address), net:CIDR (the
/// container's addresses in that subnet), net:default (those in the default
/// subnet).
///
/// Unlike Weave, naming an address the container does not hold is refused
/// (Weave refused an empty net: lookup but passed an unknown address on
/// silently): here a typo never looks like success.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "weave detach [ADDR/PREFIX | ip:ADDR/PREFIX | net:CIDR | net:default ...] CONTAINER"
)]
pub struct DetachArgs {
    #[arg(required = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Weave's `show_addrs`: the addresses without their prefix length, on one line.
fn show_addrs(cidrs: &[Ipv4Net]) -> String {
    cidrs
        .iter()
        .map(|c| c.addr().to_string())
        .collect::<Vec<_>>()
        .join(" ")
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
            println!("{}", show_addrs(&cidrs));
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}

pub(super) fn detach(paths: &Paths, args: DetachArgs) -> anyhow::Result<()> {
    let (addrs, rest) = split_addr_args(&args.args)?;
    let [container] = rest else {
        bail!("detach takes addresses followed by exactly one container");
    };
    let request = Request::Detach {
        docker: paths.docker_host.clone(),
        container: container.clone(),
        addrs,
    };
    match client::call(&paths.socket, &request)? {
        Reply::Detached { cidrs } => {
            println!("{}", show_addrs(&cidrs));
            Ok(())
        }
        other => bail!("unexpected reply from the agent: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_shown_as_weave_shows_them() {
        let cidrs: Vec<Ipv4Net> = ["10.32.0.1/12", "10.2.0.5/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(show_addrs(&cidrs), "10.32.0.1 10.2.0.5");
        assert_eq!(show_addrs(&[]), "");
    }
}
