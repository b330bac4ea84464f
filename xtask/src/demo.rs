//! `cargo xtask demo`: the main job, narrated: three simulated hosts on a
//! LAN form a mesh, and containers on different hosts share subnets.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use weave_tests::report::{self, Summary};
use weave_tests::{Cluster, Host, IMAGE, LAN_NET};

use crate::build;
use crate::util::{self, header};

/// Prefix of the demo's namespaces and directories: `wvdemo-lan`, `wvdemo-h1`...
const PREFIX: &str = "wvdemo";
/// How long the mesh may take to form.
const CONVERGE: Duration = Duration::from_mins(1);
/// Attempts per cell of the ping matrix (`ping -c 1 -W 1` each).
const PING_ATTEMPTS: usize = 3;

/// Show weave across three simulated hosts: a mesh forms, containers on different hosts share subnets.
///
/// Creates a simulated LAN (namespace wvdemo-lan with a bridge) and three hosts on it
/// (namespaces wvdemo-h1..h3, eth0 192.168.250.1-3/24), each with its own dockerd and busybox
/// image. Then plays the scenario: h1 `weave launch`; h2 `weave launch` and
/// `weave connect <h1>`; h3 `weave launch <h2>`; the three converge to a full mesh. Then `weave run`s
/// containers on each host, with explicit addresses (10.0.1.x/24, 10.0.2.x/24) and automatic
/// ones (from the range the peers share through the IPAM ring), adds one on each host with Docker's own
/// commands (`docker network create -d weave`, `docker run --net`), and prints a matrix of who
/// pings whom across hosts. With --swarm it also forms a Swarm of the three dockerds and runs a
/// global service through the managed plugin, whose tasks join the matrix. Everything is removed
/// at the end, also on Ctrl-C. Needs root.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
    /// Add a step: Swarm mode on the three hosts (the managed plugin
    /// installed on each dockerd, `docker swarm init` on h1 and `join` on
    /// h2 and h3, a network of the plugin and a global service whose tasks
    /// join the ping matrix); the clean-up removes the service, the
    /// network, the plugins and the swarm.
    #[arg(long)]
    swarm: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "cargo xtask demo must run as root: it creates network namespaces, starts dockerd and loads BPF programs"
        );
    }
    let weave = build::run(build::Args {
        release: args.release,
    })?;
    util::catch_interrupts();
    let result = demo(&weave, args.swarm);
    if weave_tests::interrupted() {
        header("demo: interrupted; everything it created has been removed");
        std::process::exit(130);
    }
    result?;
    header("demo: done; everything it created has been removed");
    Ok(())
}

/// Prints its message when dropped: declared after the cluster, it speaks
/// just before the cluster's guards clean up.
struct Announce(&'static str);

impl Drop for Announce {
    fn drop(&mut self) {
        header(self.0);
    }
}

pub(crate) fn say(who: &str, text: &str) {
    println!("==> {who}: {text}");
}

pub(crate) fn show(text: &str) {
    for line in text.trim_end().lines() {
        println!("    {line}");
    }
}

fn step(n: u32, text: &str) {
    println!();
    header(&format!("step {n}: {text}"));
}

fn check_interrupted() -> Result<()> {
    if weave_tests::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs `weave args` on `host`, narrated with its output; returns the output.
fn weave(host: &Host, args: &[&str]) -> Result<String> {
    check_interrupted()?;
    say(host.nickname(), &format!("weave {}", args.join(" ")));
    let out = host.try_weave(args)?;
    show(&out);
    Ok(out)
}

/// Runs `weave args` on `host` and prints only the lines whose key is in `keys`.
fn excerpt(host: &Host, args: &[&str], keys: &[&str]) -> Result<String> {
    check_interrupted()?;
    say(
        host.nickname(),
        &format!("weave {}   (excerpt)", args.join(" ")),
    );
    let out = host.try_weave(args)?;
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| keys.contains(&k.trim()))
        })
        .collect();
    show(&lines.join("\n"));
    Ok(out)
}

fn lan_addr(host: &Host) -> String {
    host.lan_ip().to_string()
}

/// Polls until `host` knows `peers` peers and is connected to exactly the
/// hosts named in `with`.
fn wait_connected(host: &Host, peers: usize, with: &[&str]) -> Result<()> {
    let want: BTreeSet<String> = with.iter().map(ToString::to_string).collect();
    weave_tests::wait_for(
        &format!(
            "{} to know {peers} peers, connected to {want:?}",
            host.nickname()
        ),
        CONVERGE,
        || {
            let summary = host.summary()?;
            let established = host.established_with()?;
            ensure!(
                summary.peers == peers && established == want,
                "{} peers, connected to {established:?}",
                summary.peers
            );
            Ok(())
        },
    )
}

/// One container of the ping matrix.
pub(crate) struct Container {
    pub(crate) host: usize,
    /// As the matrix shows it.
    pub(crate) name: String,
    /// Docker's name for it (a Swarm task's is long).
    pub(crate) container: String,
    pub(crate) addr: String,
    pub(crate) subnet: String,
}

fn demo(weave_bin: &Path, swarm: bool) -> Result<()> {
    step(
        1,
        "three simulated hosts on a LAN, each with its own dockerd",
    );
    println!(
        "    h1, h2, h3 are network namespaces {PREFIX}-h1..h3; the LAN is a bridge in namespace\n    \
         {PREFIX}-lan; each host has eth0 {LAN_NET}.N/24 on it (MTU 1500)."
    );
    let cluster = Cluster::create(PREFIX, 3, weave_bin.to_path_buf(), say)?;
    let _cleanup = Announce(
        "clean up: weave reset on every host, stop the dockerds, delete the namespaces and the LAN",
    );
    let (h1, h2, h3) = (&cluster[0], &cluster[1], &cluster[2]);

    step(2, "h1: weave launch");
    weave(h1, &["launch"])?;
    let status = excerpt(h1, &["status"], &["Name", "Peers", "Connections", "Range"])?;
    let summary = Summary::parse(&status)?;
    ensure!(
        summary.peers == 1 && summary.connections.total == 0,
        "h1 alone must show 1 peer and 0 connections:\n{status}"
    );

    step(3, "h2: weave launch, then weave connect <h1>");
    weave(h2, &["launch"])?;
    weave(h2, &["connect", &lan_addr(h1)])?;
    let started = Instant::now();
    wait_connected(h1, 2, &["h2"])?;
    wait_connected(h2, 2, &["h1"])?;
    say(
        "h1, h2",
        &format!("connected after {:.1} s", started.elapsed().as_secs_f64()),
    );
    for h in [h1, h2] {
        excerpt(h, &["status"], &["Peers", "Connections", "Targets"])?;
    }
    weave(h2, &["status", "connections"])?;

    step(4, "h3: weave launch <h2>; discovery completes the mesh");
    weave(h3, &["launch", &lan_addr(h2)])?;
    let started = Instant::now();
    for (h, others) in [(h1, ["h2", "h3"]), (h2, ["h1", "h3"]), (h3, ["h1", "h2"])] {
        wait_connected(h, 3, &others)?;
    }
    say(
        "h1, h2, h3",
        &format!("full mesh after {:.1} s", started.elapsed().as_secs_f64()),
    );
    for h in [h1, h2, h3] {
        excerpt(h, &["status"], &["Peers", "Connections"])?;
    }
    weave(h3, &["status", "peers"])?;
    weave(h1, &["status", "connections"])?;

    step(5, "containers: weave run on every host");
    let mut containers = Vec::new();
    for (host, name, cidr) in [
        (0, "n1", "10.0.1.1/24"),
        (1, "n2", "10.0.1.2/24"),
        (2, "n3", "10.0.1.3/24"),
        (1, "m2", "10.0.2.2/24"),
        (2, "m3", "10.0.2.3/24"),
    ] {
        weave(
            &cluster[host],
            &["run", cidr, "--name", name, IMAGE, "sleep", "3600"],
        )?;
        let (addr, subnet) = cidr.split_once('/').context("a CIDR")?;
        let subnet = format!(
            "{}.0/{subnet}",
            addr.rsplit_once('.').context("an address")?.0
        );
        containers.push(Container {
            host,
            name: name.to_string(),
            container: name.to_string(),
            addr: addr.to_string(),
            subnet,
        });
    }
    // Automatic addresses: the peers share 10.32.0.0/12 through the IPAM ring.
    let mut auto = Vec::new();
    for (host, name) in [(0, "auto1"), (1, "auto2")] {
        let h = &cluster[host];
        weave(h, &["run", "--name", name, IMAGE, "sleep", "3600"])?;
        let ps = weave(h, &["ps"])?;
        let id = h.docker_ok(&["inspect", "-f", "{{.Id}}", name]);
        let cidr = ps
            .lines()
            .find(|l| l.starts_with(&id.trim()[..12]))
            .and_then(|l| l.split_whitespace().nth(2))
            .with_context(|| format!("`weave ps` does not show {name}'s address"))?
            .to_string();
        auto.push((host, name, cidr));
    }
    println!(
        "    auto1 (h1) got {} and auto2 (h2) got {}: the peers agreed on one allocation\n    \
         ring (the smallest peer name claimed the range), and a peer without space was\n    \
         given a share of another's; no address is handed out twice across hosts.",
        auto[0].2, auto[1].2
    );
    ensure!(
        auto[0].2 != auto[1].2,
        "two hosts handed out the same address"
    );
    weave(h1, &["status", "ipam"])?;
    for (host, name, cidr) in &auto {
        let addr = cidr.split('/').next().unwrap_or(cidr).to_string();
        let status = cluster[*host].try_weave(&["status"])?;
        let default_subnet = report::require_field(&status, "DefaultSubnet")?;
        containers.push(Container {
            host: *host,
            name: name.to_string(),
            container: name.to_string(),
            addr,
            subnet: format!("{default_subnet} (automatic)"),
        });
    }

    step(
        6,
        "Docker's own commands: docker network create -d weave, docker run --net",
    );
    // The agent is also Docker's network and IPAM driver: a network without
    // --subnet takes its addresses from the ring, in the default subnet, so
    // these containers share it with the automatic ones above.
    let default_label = containers
        .last()
        .map(|c| c.subnet.clone())
        .context("no automatic container")?;
    for (host, name) in [(0, "dk1"), (1, "dk2"), (2, "dk3")] {
        let h = &cluster[host];
        let create = [
            "network",
            "create",
            "-d",
            "weave",
            "--ipam-driver",
            "weave",
            "demo",
        ];
        say(h.nickname(), &format!("$ docker {}", create.join(" ")));
        h.docker_ok(&create);
        let run = [
            "run", "-d", "--net", "demo", "--name", name, IMAGE, "sleep", "3600",
        ];
        say(h.nickname(), &format!("$ docker {}", run.join(" ")));
        h.docker_ok(&run);
        let addr = h
            .docker_ok(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ])
            .trim()
            .to_string();
        ensure!(!addr.is_empty(), "{name} got no address on network demo");
        println!("    {name} ({}) got {addr} from the ring", h.nickname());
        containers.push(Container {
            host,
            name: name.to_string(),
            container: name.to_string(),
            addr,
            subnet: default_label.clone(),
        });
    }

    let mut n = 7;
    if swarm {
        step(
            n,
            "Swarm: a global service on all three hosts, through the managed plugin",
        );
        containers.extend(crate::demo_swarm::start(&cluster, weave_bin)?);
        n += 1;
    }

    step(
        n,
        "who pings whom (ping from the row's container to the column's address)",
    );
    // Positive pairs first reach each other once, so that the first ARP across
    // the overlay is not mistaken for a failure.
    for from in &containers {
        for to in containers
            .iter()
            .filter(|t| t.subnet == from.subnet && t.name != from.name)
        {
            let _ = cluster[from.host].wait_ping_within(
                &from.container,
                &to.addr,
                Duration::from_secs(10),
            );
        }
    }
    let matrix = ping_matrix(&cluster, &containers)?;
    print_matrix(&containers, &matrix);
    let mut wrong = Vec::new();
    for (i, from) in containers.iter().enumerate() {
        for (j, to) in containers.iter().enumerate() {
            if i != j && matrix[i][j] != (from.subnet == to.subnet) {
                wrong.push(format!(
                    "{} -> {} ({}): {}",
                    from.name,
                    to.name,
                    to.addr,
                    if matrix[i][j] {
                        "reached, but must not"
                    } else {
                        "not reached"
                    }
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "the matrix is not what subnets promise:\n  {}",
        wrong.join("\n  ")
    );
    println!(
        "    ✓ only within a subnet, across hosts alike: 10.0.1.0/24 spans h1, h2 and h3;\n    \
         10.0.2.0/24 spans h2 and h3; the automatic subnet (weave run and docker run\n    \
         --net alike) is apart from both."
    );
    if swarm {
        println!(
            "    ✓ the Swarm service's tasks ({}) reach each other across the three hosts,\n    \
             and nothing else.",
            crate::demo_swarm::SUBNET
        );
    }

    step(n + 1, "the mesh, as each host reports it");
    for h in [h1, h2, h3] {
        let status = h.try_weave(&["status"])?;
        let peers = report::field(&status, "Peers").unwrap_or("?");
        let conns = report::field(&status, "Connections").unwrap_or("?");
        say(
            h.nickname(),
            &format!("Peers: {peers}; Connections: {conns}"),
        );
    }
    // Which data plane carries each connection (fastdp where both ends run
    // it, in the kernel; xdp or plain otherwise).
    weave(h1, &["status", "connections"])?;
    if swarm {
        println!();
        header("clean up the swarm: the service and its network");
        crate::demo_swarm::stop(&cluster)?;
    }
    Ok(())
}

/// `matrix[i][j]`: whether container `i` reaches container `j`'s address
/// (any of [`PING_ATTEMPTS`] single pings). One thread per row.
fn ping_matrix(cluster: &Cluster, containers: &[Container]) -> Result<Vec<Vec<bool>>> {
    let rows: Vec<Result<Vec<bool>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, from)| {
                scope.spawn(move || -> Result<Vec<bool>> {
                    let host = &cluster[from.host];
                    let mut row = Vec::new();
                    for (j, to) in containers.iter().enumerate() {
                        check_interrupted()?;
                        row.push(
                            i != j
                                && (0..PING_ATTEMPTS).any(|_| {
                                    !weave_tests::interrupted()
                                        && host.ping(&from.container, &to.addr)
                                }),
                        );
                    }
                    Ok(row)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| bail!("a ping thread panicked")))
            .collect()
    });
    rows.into_iter().collect()
}

fn print_matrix(containers: &[Container], matrix: &[Vec<bool>]) {
    let label = |c: &Container| format!("{} h{} {}", c.name, c.host + 1, c.addr);
    let width = containers.iter().map(|c| label(c).len()).max().unwrap_or(0);
    print!("    {:width$}  ", "from \\ to");
    for c in containers {
        print!(" {:>6}", c.name);
    }
    println!();
    for (i, from) in containers.iter().enumerate() {
        print!("    {:width$}  ", label(from));
        for (j, reached) in matrix[i].iter().enumerate() {
            let cell = if i == j {
                "-"
            } else if *reached {
                "✓"
            } else {
                "✗"
            };
            print!(" {cell:>6}");
        }
        println!();
    }
    println!();
    for c in containers {
        println!(
            "    {:6} on h{}: {}  (subnet {})",
            c.name,
            c.host + 1,
            c.addr,
            c.subnet
        );
    }
}
