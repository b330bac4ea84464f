//! Swarm mode (issue 17, part 2): the managed plugin (`weave plugin-proxy`,
//! built as `cargo xtask plugin` builds it) installed on three simulated
//! hosts' dockerds, each in its own mount and UTS namespace (its own
//! `/run/docker/plugins` and hostname), one swarm of them, one cluster for
//! every check (CI time).
//!
//! What it proves: `docker network create -d <plugin> --attachable` on the
//! manager gives a network every node's tasks join; a global service's
//! tasks on the three hosts ping each other by address and by their
//! container names in weaveDNS; a replicated service scaled 1 -> 12 -> 0 ->
//! 1 gets addresses that are never in use twice, and none leaks (the
//! manager's `weave status --json`): the swarm manager's allocator calls
//! the IPAM driver on the manager only, and each node's Docker then asks
//! its own agent for the address the manager got (a borrow, not a second
//! allocation). Swarm's node list seeds the mesh: h3, launched with no
//! peer, is connected once its dockerd joins the swarm (libnetwork's
//! `DiscoverNew` for the other nodes). `weave reset` disables and removes
//! the managed plugin, refusing (with the networks named) while a network
//! uses it, and removes a crashed agent's plugin socket.
//!
//! Needs root, dockerd (with Swarm mode) and the `weave` binary (`WEAVE_BIN`).

use std::collections::BTreeSet;

use weave_tests::convergence::CONVERGE;
use weave_tests::swarm::{self, SWARM};
use weave_tests::weave_image::PLUGIN_NAME;
use weave_tests::{Cluster, Host, IMAGE, wait_until};

/// The ring every host launches with.
const RANGE: &str = "10.5.0.0/16";
/// The swarm network's subnet.
const SUBNET: &str = "10.5.2.0/24";
/// weaveDNS's address (weave-agent's `dns::DEFAULT_LISTEN`).
const DNS_ADDR: &str = "169.254.53.53";

/// Waits until `service` runs `n` tasks with addresses on swarmnet.
#[track_caller]
fn wait_tasks(c: &Cluster, service: &str, n: usize) -> Vec<(usize, String, String)> {
    let hosts: Vec<&Host> = c.hosts().iter().collect();
    swarm::wait_tasks(&hosts, service, "swarmnet", n).unwrap_or_else(|e| {
        let log: Vec<String> = c[0]
            .dockerd()
            .log_tail(400)
            .lines()
            .filter(|l| !l.contains("kernel parameter"))
            .map(str::to_string)
            .collect();
        panic!(
            "{e:#}\n{}\n{}\nmanager's dockerd:\n{}",
            c[0].docker(&["service", "ps", "--no-trunc", service]),
            c[0].docker(&["network", "inspect", "swarmnet"]),
            log[log.len().saturating_sub(40)..].join("\n")
        )
    })
}

fn in_use(h: &Host) -> usize {
    h.status().ipam.in_use_here
}

#[test]
fn swarm_services_span_three_hosts() {
    let c = Cluster::new("swarm", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    h1.launch(&["--ipalloc-range", RANGE]);
    h2.launch(&["--ipalloc-range", RANGE, &h1.lan_addr()]);
    // h3 is told of no peer: Swarm's node list brings it in (below).
    h3.launch(&["--ipalloc-range", RANGE]);

    // The managed plugin, on every dockerd: its process reaches the host's
    // agent through the control socket's directory, mounted. Then one
    // swarm: h1 the manager, h2 and h3 workers; nodes named by hostname.
    let all: Vec<&Host> = c.hosts().iter().collect();
    let quiet = |_: &str, _: &str| {};
    swarm::install_plugin(
        &all,
        &weave_tests::weave_bin().unwrap(),
        &h1.dir().join("plugin"),
        &quiet,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    swarm::form_swarm(&all, &quiet).unwrap_or_else(|e| panic!("{e:#}"));
    // Docker tells each node's global-scope driver of the other nodes
    // (`DiscoverNew`): their addresses become connect targets, and h3,
    // launched alone, joins the mesh.
    c.wait_full_mesh(CONVERGE);
    let targets = h3.weave_ok(&["status", "targets"]);
    for h in [h1, h2] {
        assert!(targets.contains(&h.lan_ip().to_string()), "{targets}");
    }

    let base = in_use(h1);
    // The name reset looks for.
    assert!(PLUGIN_NAME.starts_with(&format!("{}:", weave_agent::config::MANAGED_PLUGIN)));
    h1.docker_ok(&[
        "network",
        "create",
        "-d",
        PLUGIN_NAME,
        "--ipam-driver",
        PLUGIN_NAME,
        "--attachable",
        "--subnet",
        SUBNET,
        "swarmnet",
    ]);
    let scope = h1.docker_ok(&["network", "inspect", "-f", "{{.Scope}}", "swarmnet"]);
    assert_eq!(scope.trim(), "swarm");

    // A global service: a task on every host, with weaveDNS behind Docker's
    // resolver. DNS round robin: no virtual IP (and no load balancer).
    let service = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            name,
            "--network",
            "swarmnet",
            "--endpoint-mode",
            "dnsrr",
            "--dns",
            DNS_ADDR,
            "--dns-search",
            "weave.local",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        h1.docker_ok(&args);
    };
    service("pinger", &["--mode", "global"]);
    let pingers = wait_tasks(&c, "pinger", 3);
    let hosts: BTreeSet<usize> = pingers.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(hosts.len(), 3, "one task per host: {pingers:?}");
    for (_, _, a) in &pingers {
        assert!(a.starts_with("10.5.2."), "{pingers:?}");
    }
    // The manager's agent allocated them all.
    assert_eq!(in_use(h1), base + 3, "{pingers:?}");
    // The ping matrix, by address and by the container's name in weaveDNS.
    for (i, from, _) in &pingers {
        for (_, to, addr) in &pingers {
            c[*i]
                .wait_ping(from, addr)
                .unwrap_or_else(|e| panic!("{e:#}"));
            c[*i]
                .wait_ping(from, &format!("{to}.weave.local"))
                .unwrap_or_else(|e| panic!("{e:#}\n{}", c[*i].weave_ok(&["status", "dns"])));
        }
    }

    // Scale 1 -> 12 -> 0 -> 1: never an address twice, none leaked.
    service("scaler", &["--replicas", "1"]);
    wait_tasks(&c, "scaler", 1);
    h1.docker_ok(&["service", "scale", "--detach", "scaler=12"]);
    let scaled = wait_tasks(&c, "scaler", 12);
    let mut addrs: Vec<&str> = scaled
        .iter()
        .chain(&pingers)
        .map(|(_, _, a)| a.as_str())
        .collect();
    addrs.sort_unstable();
    let before = addrs.len();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        before,
        "an address twice: {scaled:?} {pingers:?}"
    );
    wait_until("the manager to hold 15 addresses", SWARM, || {
        (in_use(h1) == base + 15).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", in_use(h1)));
    h1.docker_ok(&["service", "scale", "--detach", "scaler=0"]);
    wait_tasks(&c, "scaler", 0);
    wait_until("scaler's addresses back", SWARM, || {
        (in_use(h1) == base + 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", in_use(h1)));
    h1.docker_ok(&["service", "scale", "--detach", "scaler=1"]);
    wait_tasks(&c, "scaler", 1);

    // Everything removed: every address back, the network gone everywhere.
    h1.docker_ok(&["service", "rm", "scaler", "pinger"]);
    wait_until("every address back", SWARM, || {
        (in_use(h1) == base).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", in_use(h1)));
    for h in [h2, h3] {
        assert_eq!(in_use(h), 0, "a worker allocated nothing");
    }

    // `weave reset` removes what weave installed for Docker. A network
    // still using the managed plugin: reset says so, leaves the plugin, and
    // fails once the rest is done.
    let out = h1.weave(&["reset"]);
    assert!(
        !out.success() && out.stderr.contains("swarmnet") && out.stderr.contains(PLUGIN_NAME),
        "{out}"
    );
    assert!(plugins(h1).contains(&PLUGIN_NAME.to_string()));
    h1.docker_ok(&["network", "rm", "swarmnet"]);
    // Workers drop their copies of a swarm network once it is gone.
    for h in [h2, h3] {
        wait_until("the workers to drop swarmnet", SWARM, || {
            let ls = h.docker_ok(&["network", "ls", "-q", "--filter", "name=swarmnet"]);
            ls.trim().is_empty().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    // A crashed agent leaves its plugin socket behind: reset removes it.
    h2.kill_agent();
    let legacy = h2.plugin_socket().unwrap();
    assert!(legacy.exists(), "{}", legacy.display());
    for h in c.hosts() {
        let out = h.weave(&["reset"]);
        assert!(out.success(), "{out}");
        assert_eq!(plugins(h), Vec::<String>::new(), "{out}");
        let socket = h.plugin_socket().unwrap();
        assert!(!socket.exists(), "{} after reset", socket.display());
    }
}

/// `docker plugin ls`: the names of the managed plugins installed.
fn plugins(h: &Host) -> Vec<String> {
    h.docker_ok(&["plugin", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}
