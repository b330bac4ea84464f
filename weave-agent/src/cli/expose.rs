//! `weave expose` and `weave hide`: the host's addresses on the bridge.

use anyhow::bail;

use crate::api::{Reply, Request, client};
use crate::config::Paths;
use crate::ipam::{AddrRequest, parse_addr_requests};

/// Give this host an address on the weave bridge in each subnet named
/// (ADDR/PREFIX exactly, net:CIDR or net:default from the allocation
/// range; none means net:default), so that processes on the host reach
/// the containers of those subnets on every host, and only those. The host
/// also becomes their gateway: it masquerades their traffic leaving
/// through its other interfaces (nftables `table ip weave`, IPv4
/// forwarding on) and lets the replies back. Prints the addresses;
/// exposing a subnet again prints the address it has. The addresses
/// survive an agent restart; `weave hide` or `weave reset` removes them.
#[derive(clap::Args, Debug)]
pub struct ExposeArgs {
    #[arg(value_name = "ADDR/PREFIX | net:CIDR | net:default")]
    addrs: Vec<String>,
}

/// Take the host's address in each subnet named off the bridge (none means
/// net:default) and free it; prints the addresses removed.
#[derive(clap::Args, Debug)]
pub struct HideArgs {
    #[arg(value_name = "ADDR/PREFIX | net:CIDR | net:default")]
    addrs: Vec<String>,
}

/// The requests, every argument being one (so a typo is an error, not
/// ignored).
fn requests(args: &[String]) -> anyhow::Result<Vec<AddrRequest>> {
    let (requests, rest) = parse_addr_requests(args)?;
    if let Some(arg) = rest.first() {
        bail!("invalid address '{arg}': expected ADDRESS/PREFIX (IPv4), net:CIDR or net:default");
    }
    Ok(requests)
}

fn print(reply: Reply) {
    if let Reply::Message(text) = reply
        && !text.is_empty()
    {
        println!("{text}");
    }
}

pub(super) fn expose(paths: &Paths, args: ExposeArgs) -> anyhow::Result<()> {
    let addrs = requests(&args.addrs)?;
    print(client::call(&paths.socket, &Request::Expose { addrs })?);
    Ok(())
}

pub(super) fn hide(paths: &Paths, args: HideArgs) -> anyhow::Result<()> {
    let addrs = requests(&args.addrs)?;
    print(client::call(&paths.socket, &Request::Hide { addrs })?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_argument_must_be_an_address() {
        assert_eq!(requests(&[]).unwrap(), [AddrRequest::Default]);
        assert!(requests(&args(&["10.0.1.100/24", "net:default"])).is_ok());
        for bad in [
            &["banana"][..],
            &["10.0.1.100"],
            &["10.0.1.100/24", "banana"],
            &["net:10.0.300.0/24"],
            &["10.0.1.100/33"],
        ] {
            let e = requests(&args(bad)).unwrap_err().to_string();
            assert!(e.starts_with("invalid address"), "{bad:?}: {e}");
        }
    }
}
