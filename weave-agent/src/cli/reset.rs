//! `weave reset`: remove everything weave created on this host.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::api::{Reply, Request, client};
use crate::config::{
    BRIDGE, CONTAINER_PORT_PREFIX, DATAPATH_BRIDGE_END, DATAPATH_END, DEFAULT_PLUGIN_SOCKET,
    MANAGED_PLUGIN, Paths, PluginSocket,
};
use crate::docker::{Docker, DockerError, NetworkDrivers, PluginInfo};
use crate::netlink::Netlink;

/// Hand this peer's part of the address range to another peer, stop the
/// agent if it runs, then remove the bridge, every container port
/// (containers lose their ethwe), the datapath port, the agent's nftables
/// table (`table ip weave`, from `weave expose`), the agent's state and
/// the Docker plugin's socket. eBPF programs go with the agent, the ports
/// they were attached to, and their pins in bpffs. When Docker answers
/// (`DOCKER_HOST`), the managed plugin for Swarm (`weave-rs/net-plugin`,
/// any version) is disabled and removed too, unless networks still use
/// it: then reset names them, leaves the plugin and fails once everything
/// else is done (`docker network rm` them and reset again).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Docker plugin socket `weave launch` served (`--plugin-socket`),
    /// removed in case a killed agent left it: Docker would keep calling a
    /// socket nobody answers.
    #[arg(long, env = "WEAVE_PLUGIN_SOCKET", default_value = DEFAULT_PLUGIN_SOCKET, value_name = "PATH")]
    plugin_socket: PluginSocket,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
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
    // The gateway's nftables table (`weave expose`).
    if let Err(e) = crate::gateway::remove() {
        eprintln!("weave: could not remove the weave nftables table: {e}");
    }
    // The classifier links a killed agent left pinned.
    crate::ebpf::remove_namespace_pins().context("removing the pinned eBPF links")?;
    for file in [&paths.socket, &paths.lock_file()] {
        remove_file(file)?;
    }
    if let Some(socket) = &args.plugin_socket.0 {
        remove_socket(socket)?;
    }
    match std::fs::remove_dir_all(&paths.state_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", paths.state_dir.display()));
        }
        _ => {}
    }
    // Last: what is left in Docker is the only thing reset may leave.
    let left = runtime.block_on(remove_managed_plugins(&paths.docker_host))?;
    if !left.is_empty() {
        bail!("{}", left.join("\n"));
    }
    Ok(())
}

fn remove_file(file: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", file.display()))
        }
        _ => Ok(()),
    }
}

/// Removes `path` if it is a socket (never a file of another kind someone
/// pointed `--plugin-socket` at by mistake).
fn remove_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => remove_file(path),
        Ok(_) => {
            eprintln!(
                "weave: left {}: it is not a socket (--plugin-socket)",
                path.display()
            );
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// Disables and removes every version of the managed plugin installed in
/// the Docker at `host`; returns what it had to leave, and why. A Docker
/// that does not answer has nothing of ours to remove that reset could
/// reach: nothing to say.
async fn remove_managed_plugins(host: &str) -> anyhow::Result<Vec<String>> {
    let docker = match Docker::connect(host).await {
        Ok(d) => d,
        Err(DockerError::Unreachable { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let plugins = match docker.plugins().await {
        Ok(p) => p,
        // A Docker that cannot list plugins has none of ours.
        Err(DockerError::Unreachable { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let networks = docker.networks().await?;
    let mut left = Vec::new();
    for (plugin, users) in plan(&plugins, &networks) {
        if users.is_empty() {
            match docker.remove_plugin(plugin).await {
                Ok(()) => eprintln!("weave: removed the Docker plugin {}", plugin.name),
                Err(e) => left.push(format!(
                    "left the Docker plugin {} installed: {e}",
                    plugin.name
                )),
            }
        } else {
            left.push(format!(
                "left the Docker plugin {} installed: networks use it: {}; \
                 remove them (docker network rm) and run weave reset again",
                plugin.name,
                users.join(", ")
            ));
        }
    }
    Ok(left)
}

/// Our managed plugins among `plugins`, each with the names of the
/// networks that use it (as network or IPAM driver).
fn plan<'a>(
    plugins: &'a [PluginInfo],
    networks: &[NetworkDrivers],
) -> Vec<(&'a PluginInfo, Vec<String>)> {
    plugins
        .iter()
        .filter(|p| p.name.rsplit_once(':').map_or(p.name.as_str(), |(r, _)| r) == MANAGED_PLUGIN)
        .map(|p| {
            // Docker names a plugin given without a tag `:latest`.
            let bare = p.name.strip_suffix(":latest");
            let users = networks
                .iter()
                .filter(|n| {
                    n.drivers
                        .iter()
                        .any(|d| *d == p.name || Some(d.as_str()) == bare)
                })
                .map(|n| n.name.clone())
                .collect();
            (p, users)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            enabled: true,
        }
    }

    fn net(name: &str, drivers: &[&str]) -> NetworkDrivers {
        NetworkDrivers {
            name: name.into(),
            drivers: drivers.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn only_our_plugins_are_removed_and_their_networks_named() {
        let plugins = [
            plugin("weave-rs/net-plugin:0.1.0"),
            plugin("weave-rs/net-plugin:latest"),
            plugin("vieux/sshfs:latest"),
            plugin("weave-rs/net-plugin-other:1"),
        ];
        let networks = [
            net("bridge", &["bridge", "default"]),
            net(
                "swarmnet",
                &["weave-rs/net-plugin:0.1.0", "weave-rs/net-plugin:0.1.0"],
            ),
            net("ipamonly", &["weave", "weave-rs/net-plugin:0.1.0"]),
            net("untagged", &["weave-rs/net-plugin"]),
            net("legacy", &["weave", "weave"]),
        ];
        let plan = plan(&plugins, &networks);
        let got: Vec<(&str, Vec<String>)> = plan
            .iter()
            .map(|(p, users)| (p.name.as_str(), users.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "weave-rs/net-plugin:0.1.0",
                    vec!["swarmnet".to_string(), "ipamonly".into()]
                ),
                ("weave-rs/net-plugin:latest", vec!["untagged".to_string()]),
            ]
        );
    }

    #[test]
    fn an_unused_plugin_has_no_users() {
        let plugins = [plugin("weave-rs/net-plugin:0.1.0")];
        let plan = plan(&plugins, &[net("legacy", &["weave", "weave"])]);
        assert_eq!(plan.len(), 1);
        assert!(plan[0].1.is_empty());
    }
}
