//! `weave dns-add`, `dns-remove`, `dns-lookup`: weaveDNS by hand.

use anyhow::{Context as _, bail};

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// Give an attached container a name in weaveDNS (on every peer), for its
/// addresses or the IPs given (each inside one of its subnets). Without -h,
/// the name is the container's.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct AddArgs {
    /// IP... CONTAINER
    #[arg(value_name = "IP... CONTAINER", required = true, num_args = 1..)]
    args: Vec<String>,
    /// The name: a host name (NAME, in the weaveDNS domain) or NAME.weave.local.
    #[arg(short = 'h', long = "hostname", value_name = "FQDN")]
    fqdn: Option<String>,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// Take a name from an attached container (its own name too) in weaveDNS.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RemoveArgs {
    /// IP... CONTAINER
    #[arg(value_name = "IP... CONTAINER", required = true, num_args = 1..)]
    args: Vec<String>,
    /// The name (default: the container's).
    #[arg(short = 'h', long = "hostname", value_name = "FQDN")]
    fqdn: Option<String>,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// Print the addresses weaveDNS has for NAME (one per line).
#[derive(clap::Args, Debug)]
pub struct LookupArgs {
    #[arg(value_name = "NAME")]
    name: String,
}

/// The IPs, then the container.
fn split(args: &[String]) -> anyhow::Result<(Vec<std::net::Ipv4Addr>, String)> {
    let Some((container, ips)) = args.split_last() else {
        bail!("name a container");
    };
    let ips = ips
        .iter()
        .map(|ip| {
            ip.parse()
                .with_context(|| format!("{ip:?} is not an IPv4 address"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((ips, container.clone()))
}

pub(super) fn add(paths: &Paths, args: AddArgs) -> anyhow::Result<()> {
    edit(paths, &args.args, args.fqdn, true)
}

pub(super) fn remove(paths: &Paths, args: RemoveArgs) -> anyhow::Result<()> {
    edit(paths, &args.args, args.fqdn, false)
}

fn edit(paths: &Paths, args: &[String], fqdn: Option<String>, add: bool) -> anyhow::Result<()> {
    let (ips, container) = split(args)?;
    client::call(
        &paths.socket,
        &Request::DnsEdit {
            docker: paths.docker_host.clone(),
            container,
            ips,
            fqdn,
            add,
        },
    )?;
    Ok(())
}

pub(super) fn lookup(paths: &Paths, args: LookupArgs) -> anyhow::Result<()> {
    if let Reply::Message(text) =
        client::call(&paths.socket, &Request::DnsLookup { name: args.name })?
    {
        println!("{text}");
    }
    Ok(())
}
