//! Swarm mode on simulated hosts, shared by the swarm suite and the demo:
//! the managed plugin installed on each host's dockerd, one swarm of the
//! hosts' dockerds, and the running tasks of a service.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::host::Host;
use crate::poll::wait_until;
use crate::weave_image::{PLUGIN_MOUNT, PLUGIN_NAME, build_plugin};

/// Swarm converges (nodes ready, tasks started or stopped) within this.
pub const SWARM: Duration = Duration::from_mins(2);

/// Runs `docker args` on `h`, told to `say` first; its stdout.
fn docker(h: &Host, args: &[&str], say: &dyn Fn(&str, &str)) -> Result<String> {
    say(h.nickname(), &format!("$ docker {}", args.join(" ")));
    h.docker(args).ok()
}

/// Builds the managed plugin of `weave` under `dir` and installs it on
/// every host's dockerd (`docker plugin create`, `set`, `enable`), its
/// process reaching the host's agent through the directory of the
/// host's control socket, mounted.
pub fn install_plugin(
    hosts: &[&Host],
    weave: &Path,
    dir: &Path,
    say: &dyn Fn(&str, &str),
) -> Result<()> {
    build_plugin(weave, dir)?;
    let dir = dir
        .to_str()
        .context("the plugin's directory is not UTF-8")?;
    for h in hosts {
        docker(h, &["plugin", "create", PLUGIN_NAME, dir], say)?;
        let source = format!("{PLUGIN_MOUNT}.source={}", h.dir().display());
        docker(h, &["plugin", "set", PLUGIN_NAME, &source], say)?;
        docker(h, &["plugin", "enable", PLUGIN_NAME], say)?;
    }
    Ok(())
}

/// One swarm: `swarm init` on the first host (the manager), `join` on the
/// others as workers, each advertising its LAN address; waits until every
/// node is ready (nodes are named by their dockerd's hostname).
pub fn form_swarm(hosts: &[&Host], say: &dyn Fn(&str, &str)) -> Result<()> {
    let (manager, workers) = hosts.split_first().context("a swarm needs a host")?;
    let addr = manager.lan_ip().to_string();
    docker(manager, &["swarm", "init", "--advertise-addr", &addr], say)?;
    let token = manager
        .docker(&["swarm", "join-token", "-q", "worker"])
        .ok()?;
    for h in workers {
        let own = h.lan_ip().to_string();
        docker(
            h,
            &[
                "swarm",
                "join",
                "--advertise-addr",
                &own,
                "--token",
                token.trim(),
                &format!("{addr}:2377"),
            ],
            say,
        )?;
    }
    wait_until(&format!("{} ready nodes", hosts.len()), SWARM, || {
        let nodes = manager
            .docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
            .ok()
            .ok()?;
        let ready: BTreeSet<&str> = nodes
            .lines()
            .filter(|l| l.ends_with(" Ready"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        (ready.len() == hosts.len()).then_some(())
    })
    .with_context(|| format!("{}", manager.docker(&["node", "ls"])))
}

/// The running containers of `service` on `h` that have an address on
/// network `net`: (container name, address).
pub fn tasks(h: &Host, service: &str, net: &str) -> Vec<(String, String)> {
    let Ok(ids) = h
        .docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ])
        .ok()
    else {
        return Vec::new();
    };
    ids.split_whitespace()
        .filter_map(|id| {
            let out = h.docker(&[
                "inspect",
                "-f",
                &format!(
                    "{{{{.Name}}}} {{{{with index .NetworkSettings.Networks \"{net}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
                ),
                id,
            ]);
            let text = out.success().then(|| out.stdout.trim().to_string())?;
            let (name, addr) = text.split_once(' ')?;
            (!addr.is_empty()).then(|| (name.trim_start_matches('/').to_string(), addr.to_string()))
        })
        .collect()
}

/// Every task of `service` on network `net`, on every host: (index of the
/// host in `hosts`, container name, address).
pub fn all_tasks(hosts: &[&Host], service: &str, net: &str) -> Vec<(usize, String, String)> {
    hosts
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            tasks(h, service, net)
                .into_iter()
                .map(move |(n, a)| (i, n, a))
        })
        .collect()
}

/// Waits until `service` runs `n` tasks with addresses on `net`.
pub fn wait_tasks(
    hosts: &[&Host],
    service: &str,
    net: &str,
    n: usize,
) -> Result<Vec<(usize, String, String)>> {
    wait_until(&format!("{n} tasks of {service}"), SWARM, || {
        let t = all_tasks(hosts, service, net);
        (t.len() == n).then_some(t)
    })
}

/// Removes `service` (on the manager, the first host) and then network
/// `net`, and waits until no host's dockerd has the network any more
/// (workers drop their copies once it is gone), so that each host's
/// managed plugin is no longer in use.
pub fn remove_service_and_network(
    hosts: &[&Host],
    service: &str,
    net: &str,
    say: &dyn Fn(&str, &str),
) -> Result<()> {
    let manager = hosts.first().context("a swarm needs a host")?;
    docker(manager, &["service", "rm", service], say)?;
    say(manager.nickname(), &format!("$ docker network rm {net}"));
    // Refused while the service's tasks are still shutting down.
    crate::poll::wait_for(&format!("network {net} removed"), SWARM, || {
        manager.docker(&["network", "rm", net]).ok()
    })?;
    for h in hosts {
        wait_until(&format!("{} to drop {net}", h.nickname()), SWARM, || {
            let ls = h
                .docker(&["network", "ls", "-q", "--filter", &format!("name={net}")])
                .ok()
                .ok()?;
            ls.trim().is_empty().then_some(())
        })?;
    }
    Ok(())
}
