//! The demo's Swarm step: the managed plugin on the three hosts' dockerds,
//! one swarm of them, and a global service whose tasks join the ping
//! matrix. The swarm code is the harness's (`weave_tests::swarm`), which
//! the swarm suite uses too.

use std::path::Path;

use anyhow::{Context as _, Result};
use weave_tests::weave_image::PLUGIN_NAME;
use weave_tests::{Cluster, Host, IMAGE, swarm};

use crate::demo::{Container, say};

/// The swarm network, its subnet and the global service on it.
const NETWORK: &str = "swarmnet";
pub(crate) const SUBNET: &str = "10.0.3.0/24";
const SERVICE: &str = "pinger";

/// Installs the plugin, forms the swarm, creates the network and the
/// service; returns the service's tasks as containers of the matrix.
pub(crate) fn start(cluster: &Cluster, weave_bin: &Path) -> Result<Vec<Container>> {
    let hosts: Vec<&Host> = cluster.hosts().iter().collect();
    let manager = hosts[0];
    println!(
        "    Swarm needs a managed (v2) plugin: `cargo xtask plugin` builds it from this\n    \
         checkout ({PLUGIN_NAME}, its process `weave plugin-proxy`, which passes the\n    \
         driver's calls to the host's agent); here it is installed on each dockerd."
    );
    swarm::install_plugin(
        &hosts,
        weave_bin,
        &manager.dir().join("plugin"),
        &|who, what| say(who, what),
    )?;
    swarm::form_swarm(&hosts, &|who, what| say(who, what))?;
    let nodes = manager
        .docker(&[
            "node",
            "ls",
            "--format",
            "{{.Hostname}}  {{.Status}}  {{.ManagerStatus}}",
        ])
        .ok()?;
    crate::demo::show(&nodes);
    // The weave IPAM driver would take the default subnet, which network
    // `demo` holds on h1 and h3 already (a subnet per network): this one
    // has its own subnet, and Swarm's allocator picks the addresses.
    let create = [
        "network",
        "create",
        "-d",
        PLUGIN_NAME,
        "--attachable",
        "--subnet",
        SUBNET,
        NETWORK,
    ];
    say(
        manager.nickname(),
        &format!("$ docker {}", create.join(" ")),
    );
    manager.docker(&create).ok()?;
    let service = [
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        SERVICE,
        "--mode",
        "global",
        "--network",
        NETWORK,
        IMAGE,
        "sleep",
        "3600",
    ];
    say(
        manager.nickname(),
        &format!("$ docker {}", service.join(" ")),
    );
    manager.docker(&service).ok()?;
    let tasks = swarm::wait_tasks(&hosts, SERVICE, NETWORK, hosts.len())
        .with_context(|| manager.docker(&["service", "ps", SERVICE]).to_string())?;
    let mut containers = Vec::new();
    for (host, container, addr) in tasks {
        let name = format!("sw{}", host + 1);
        println!(
            "    {name} ({}): task {container}, {addr}",
            hosts[host].nickname()
        );
        containers.push(Container {
            host,
            name,
            container,
            addr,
            subnet: SUBNET.to_string(),
        });
    }
    containers.sort_by_key(|c| c.host);
    Ok(containers)
}

/// Removes the service and the network, so that `weave reset` at the
/// clean-up finds each host's plugin unused and removes it; the harness
/// then leaves the swarm and stops the dockerds.
pub(crate) fn stop(cluster: &Cluster) -> Result<()> {
    let hosts: Vec<&Host> = cluster.hosts().iter().collect();
    swarm::remove_service_and_network(&hosts, SERVICE, NETWORK, &|who, what| say(who, what))
}
