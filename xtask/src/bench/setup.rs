//! Putting two containers on a path: agents launched, kernel VXLAN devices
//! added, containers attached; and taking it all down again.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use weave_tests::{Cluster, Host, IMAGE, LAN_IFNAME};

use super::path::Path;

/// The kernel VXLAN device of the reference path.
const VXLAN_DEV: &str = "vxbench";
/// Its VNI and UDP port: the IANA port, since the agents (launched without
/// peers on that path) keep weave's own data port 6784 bound.
const VXLAN_ID: &str = "42";
const VXLAN_PORT: &str = "4789";
/// Inner MTU of the kernel VXLAN: the LAN's 1500 minus 50 bytes of VXLAN over IPv4.
const VXLAN_MTU: &str = "1450";
/// The bridge weave creates.
const BRIDGE: &str = "weave";
/// How long the agents may take to connect, and the first ping to get through.
const CONNECT_TIMEOUT: Duration = Duration::from_mins(1);

/// `weave launch` refused this path's flags: the error says why, in one line.
#[derive(Debug)]
pub(super) struct LaunchRefused(pub String);

impl std::fmt::Display for LaunchRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchRefused {}

/// One container of a measurement.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// Index of its host in the cluster.
    pub host: usize,
    pub container: &'static str,
    /// Its address (without prefix length).
    pub addr: &'static str,
    /// Its first process, whose network namespace the tools enter.
    pub pid: u32,
}

const CLIENT: (&str, &str) = ("bench-client", "10.2.1.1/24");
const SERVER: (&str, &str) = ("bench-server", "10.2.1.2/24");

/// Two containers connected over one [`Path`]. Drop removes the containers
/// and VXLAN devices and runs `weave reset` on the hosts it launched.
pub(super) struct Setup<'c> {
    undo: Undo<'c>,
    pub client: Endpoint,
    pub server: Endpoint,
    /// Pids of the agents involved.
    pub agents: Vec<u32>,
    /// What `weave status connections` says the connection runs on (overlay paths).
    pub dataplane: Option<String>,
    /// MTU of the client container's `ethwe`.
    pub mtu: Option<u32>,
}

impl<'c> Setup<'c> {
    pub(super) fn create(cluster: &'c Cluster, path: Path, say: &dyn Fn(&str)) -> Result<Self> {
        let hosts: &[usize] = if path.crosses_hosts() { &[0, 1] } else { &[0] };
        let mut undo = Undo {
            cluster,
            launched: Vec::new(),
            containers: Vec::new(),
            vxlans: Vec::new(),
        };
        let flags = path.launch_flags();
        for &i in hosts {
            let host = &cluster[i];
            let mut args = vec!["launch"];
            args.extend(&flags);
            let peer = cluster[0].lan_ip().to_string();
            if path.uses_overlay() {
                if i > 0 {
                    args.push(&peer);
                }
            } else {
                // The references keep weave's overlay out of the way: no peers.
                args.push("--no-discovery");
            }
            say(&format!(
                "{}: weave {}",
                host.nickname(),
                shown_flags(&args)
            ));
            undo.launched.push(i);
            let out = host.weave(&args);
            if !out.success() {
                let why = out
                    .stderr_lines()
                    .last()
                    .map_or("no message", |l| l.trim())
                    .to_string();
                return Err(anyhow::Error::new(LaunchRefused(format!(
                    "`weave {}` failed on {}: {why}",
                    shown_flags(&args),
                    host.nickname()
                ))));
            }
        }
        let agents = hosts
            .iter()
            .map(|&i| match cluster[i].agent_pids().as_slice() {
                &[pid] => Ok(pid),
                pids => bail!(
                    "{}: expected one agent, found {pids:?}",
                    cluster[i].nickname()
                ),
            })
            .collect::<Result<Vec<u32>>>()?;

        if path == Path::Vxlan {
            for &i in hosts {
                let peer = cluster[1 - i].lan_ip().to_string();
                say(&format!(
                    "{}: ip link add {VXLAN_DEV} type vxlan id {VXLAN_ID} dstport {VXLAN_PORT} remote {peer} dev {LAN_IFNAME}; mtu {VXLAN_MTU}, master {BRIDGE}",
                    cluster[i].nickname()
                ));
                undo.vxlans.push(i);
                add_vxlan(&cluster[i], &peer)?;
            }
        }

        let dataplane = if path.uses_overlay() {
            say("wait for h1 and h2 to connect");
            for (a, b) in [(0, 1), (1, 0)] {
                let want = cluster[b].nickname().to_string();
                weave_tests::wait_for(
                    &format!("{} to connect to {want}", cluster[a].nickname()),
                    CONNECT_TIMEOUT,
                    || {
                        let with = cluster[a].established_with()?;
                        ensure!(with.contains(&want), "connected to {with:?}");
                        Ok(())
                    },
                )?;
            }
            // The connection is established before the peer's topology
            // entry arrives and routes follow it; until then it shows the
            // userspace path ("no direct route to the peer yet").
            let mut line = String::new();
            weave_tests::wait_for(
                &format!("h1's connection to use {}", path.dataplane()),
                CONNECT_TIMEOUT,
                || {
                    line = cluster[0]
                        .connections()?
                        .into_iter()
                        .find(weave_tests::report::Connection::is_established)
                        .context("no established connection on h1")?
                        .line;
                    let shown = connection_dataplane(&line);
                    let words: Vec<&str> = shown.split_whitespace().collect();
                    ensure!(
                        words.contains(&path.dataplane())
                            && words.contains(&"encrypted") == path.encrypted(),
                        "launched with {}, but the connection reports `{shown}`: {line}",
                        shown_flags(&flags)
                    );
                    Ok(())
                },
            )?;
            say(&format!("h1: weave status connections: {}", line.trim()));
            if let Some(cipher) = path.required_cipher() {
                ensure!(
                    line.contains(&format!("cipher={cipher}")),
                    "launched with {}, but the connection does not use {cipher}: {line}",
                    shown_flags(&flags)
                );
            }
            if path == Path::XdpBusyPoll {
                for &i in hosts {
                    // Read as JSON: xtask builds without weave-agent's types.
                    let json = cluster[i].try_weave(&["status", "--json"])?;
                    let status: serde_json::Value = serde_json::from_str(&json)?;
                    let described = status["dataplane"].as_str().unwrap_or_default();
                    ensure!(
                        described.contains("busy polling"),
                        "{}: launched with --busy-poll, but the data plane is `{described}`",
                        cluster[i].nickname()
                    );
                }
            }
            let shown = connection_dataplane(&line);
            Some(shown)
        } else {
            None
        };

        let server_host = usize::from(path.crosses_hosts());
        let mut endpoint = |host: usize, (name, cidr): (&'static str, &'static str)| {
            let h = &cluster[host];
            say(&format!(
                "{}: weave run {cidr} --name {name} {IMAGE} sleep 86400",
                h.nickname()
            ));
            undo.containers.push((host, name));
            h.try_weave(&["run", cidr, "--name", name, IMAGE, "sleep", "86400"])?;
            let pid = h
                .docker(&["inspect", "-f", "{{.State.Pid}}", name])
                .ok()?
                .trim()
                .parse()
                .with_context(|| format!("the pid of container {name}"))?;
            Ok::<_, anyhow::Error>(Endpoint {
                host,
                container: name,
                addr: cidr.split('/').next().unwrap_or(cidr),
                pid,
            })
        };
        let client = endpoint(0, CLIENT)?;
        let server = endpoint(server_host, SERVER)?;
        say(&format!(
            "wait for {} to ping {}",
            client.container, server.addr
        ));
        cluster[0].wait_ping_within(client.container, server.addr, CONNECT_TIMEOUT)?;
        let mtu = container_mtu(client.pid)?;
        Ok(Setup {
            undo,
            client,
            server,
            agents,
            dataplane,
            mtu,
        })
    }

    /// Whether every agent still runs; an error with the last log lines otherwise.
    pub(super) fn check_agents(&self) -> Result<()> {
        for (&i, &pid) in self.undo.launched.iter().zip(&self.agents) {
            if !weave_tests::alive(pid) {
                let host = &self.undo.cluster[i];
                bail!(
                    "the agent on {} (pid {pid}) exited; its log ends:\n{}",
                    host.nickname(),
                    host.agent_log_tail(20)
                );
            }
        }
        Ok(())
    }

    pub(super) fn host(&self, endpoint: &Endpoint) -> &'c Host {
        &self.undo.cluster[endpoint.host]
    }
}

/// The MTU of `ethwe` in the network namespace of process `pid`.
fn container_mtu(pid: u32) -> Result<Option<u32>> {
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-o", "link", "show", "ethwe"]);
    let links = weave_tests::check(&mut c)?;
    Ok(weave_tests::parse_links(&links)
        .into_iter()
        .find(|l| l.name == "ethwe")
        .and_then(|l| l.mtu))
}

/// The dataplane words of a `weave status connections` line: between the
/// state and the peer, e.g. `plain`, `xdp`, `encrypted plain`.
fn connection_dataplane(line: &str) -> String {
    line.split_whitespace()
        .skip(3)
        .take_while(|w| !w.contains('(') && !w.starts_with("mtu="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `args` as printed: the password hidden.
fn shown_flags(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if *a == super::path::PASSWORD {
                "<password>"
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds the kernel VXLAN device on `host` towards `peer` and enslaves it to weave's bridge.
fn add_vxlan(host: &Host, peer: &str) -> Result<()> {
    let ns = host.netns();
    ns.ip(&[
        "link", "add", VXLAN_DEV, "type", "vxlan", "id", VXLAN_ID, "dstport", VXLAN_PORT, "remote",
        peer, "dev", LAN_IFNAME,
    ])?;
    ns.ip(&["link", "set", VXLAN_DEV, "mtu", VXLAN_MTU])?;
    ns.ip(&["link", "set", VXLAN_DEV, "master", BRIDGE])?;
    ns.ip(&["link", "set", VXLAN_DEV, "up"])?;
    Ok(())
}

/// What a [`Setup`] has done so far, undone on drop (also after a failure half-way).
struct Undo<'c> {
    cluster: &'c Cluster,
    launched: Vec<usize>,
    containers: Vec<(usize, &'static str)>,
    vxlans: Vec<usize>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for &(i, name) in &self.containers {
            let out = self.cluster[i].docker(&["rm", "-f", name]);
            if !out.success() && !out.stderr.contains("No such container") {
                eprintln!("bench: removing container {name} failed (ignored):\n{out}");
            }
        }
        for &i in &self.vxlans {
            // Gone already when adding it failed.
            let _ = self.cluster[i].netns().ip(&["link", "del", VXLAN_DEV]);
        }
        for &i in &self.launched {
            let out = self.cluster[i].weave(&["reset"]);
            if !out.success() {
                eprintln!("bench: weave reset failed (ignored):\n{out}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dataplane_of_a_connection() {
        let line = "<- 192.168.250.2:52838   established plain  1e:ae:fd:01:a2:91(h2) mtu=1450";
        assert_eq!(connection_dataplane(line), "plain");
        let line = "-> 192.168.250.1:6783 established encrypted xdp 1e:ae:fd:01:a2:91(h1) mtu=1450";
        assert_eq!(connection_dataplane(line), "encrypted xdp");
        assert_eq!(connection_dataplane("-> 1.2.3.4:6783 connecting"), "");
    }

    #[test]
    fn hides_the_password() {
        assert_eq!(
            shown_flags(&Path::PlainEncrypted.launch_flags()),
            "--dataplane plain --password <password>"
        );
    }
}
