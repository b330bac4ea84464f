//! The Docker network and IPAM plugin (issue 17, part 1): Docker's own
//! commands against each simulated host's dockerd, which finds the host's
//! agent's plugin socket in its own `/run/docker/plugins` (a mount
//! namespace per dockerd; see `weave_tests::dockerd`).
//!
//! What they prove, on three hosts: `docker network create -d weave
//! --ipam-driver weave` with the same name and subnet on every host is one
//! network (containers started with `docker run --net` ping across hosts,
//! by address and by name); without `--subnet` the IPAM driver gives the
//! agent's default subnet and addresses from the ring; a container on
//! another weave network cannot reach them; `docker rm` frees the address
//! (`weave status --json`, `weave ps`) and the port; a new container given
//! the freed address announces it, so a container on the other host that
//! had the old MAC cached learns the new one at once; an agent restart keeps
//! the endpoints and networks; containers' names are in weaveDNS (and go
//! with the container), reached from inside through Docker's resolver with
//! `--dns`; the default route is `docker_gwbridge`'s; `docker network rm` works, and Docker
//! refuses it for a network in use; bad input (overlapping subnets, a subnet outside the ring, an
//! unknown driver option, malformed JSON, unknown networks and endpoints)
//! gets a clear error through Docker's error path and the agent goes on.
//!
//! Needs root, dockerd and the `weave` binary (`WEAVE_BIN`).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weave_tests::convergence::CONVERGE;
use weave_tests::{Cluster, Host, IMAGE, wait_until};

/// Within this a fresh container answers pings.
const PING: Duration = Duration::from_secs(20);
/// Within this a neighbour's ARP cache follows an address's announcement
/// (milliseconds; without one, many seconds: see `weave_forms.rs`).
const ANNOUNCED: Duration = Duration::from_secs(3);
/// The ring every host launches with: it holds the networks' subnets.
const RANGE: &str = "10.5.0.0/16";
/// The agents' default subnet: a network created without `--subnet` gets
/// it, so it must not overlap the subnets given by hand (by default it
/// would be the whole range, which the agent refuses beside them).
const DEFAULT_SUBNET: &str = "10.5.128.0/17";

/// `weave launch` with the test's ring, connecting to `peer`.
fn launch(h: &Host, peer: Option<&Host>) {
    let peer = peer.map(Host::lan_addr);
    let mut args = vec![
        "--ipalloc-range",
        RANGE,
        "--ipalloc-default-subnet",
        DEFAULT_SUBNET,
    ];
    args.extend(peer.as_deref());
    h.launch(&args);
}

fn in_use(h: &Host) -> usize {
    h.status().ipam.in_use_here
}

/// Does `weave ps` list `addr`?
fn in_ps(h: &Host, addr: &str) -> bool {
    h.ps()
        .iter()
        .any(|e| e.cidrs.iter().any(|c| c.split('/').next() == Some(addr)))
}

#[track_caller]
fn create_network(h: &Host, name: &str, subnet: &str) {
    h.docker_ok(&[
        "network",
        "create",
        "-d",
        "weave",
        "--ipam-driver",
        "weave",
        "--subnet",
        subnet,
        name,
    ]);
}

/// weaveDNS's address (weave-agent's `dns::DEFAULT_LISTEN`).
const DNS_ADDR: &str = "169.254.53.53";

/// `docker run -d --net=NET --name NAME`, with weaveDNS as the upstream of
/// Docker's embedded resolver (`--dns`, as Weave's `dns-args` gave);
/// returns the container's address.
#[track_caller]
fn run_on(h: &Host, net: &str, name: &str) -> String {
    run_on_with(h, net, name, &[])
}

/// [`run_on`] with more `docker run` options (`--ip ADDR`).
#[track_caller]
fn run_on_with(h: &Host, net: &str, name: &str, options: &[&str]) -> String {
    let mut args = vec![
        "run",
        "-d",
        "--net",
        net,
        "--dns",
        DNS_ADDR,
        "--dns-search",
        "weave.local",
        "--name",
        name,
    ];
    args.extend_from_slice(options);
    args.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    h.docker_ok(&args);
    let addr = h.docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ]);
    addr.trim().to_string()
}

/// The MAC of a Docker network container's weave interface.
fn ethwe0_mac(h: &Host, name: &str) -> String {
    h.exec_ok(name, &["cat", "/sys/class/net/ethwe0/address"])
        .trim()
        .to_owned()
}

/// The MAC container `observer` maps `addr` to on its ethwe0, if any.
fn neighbour(h: &Host, observer: &str, addr: &str) -> Option<String> {
    h.neighbour_mac(observer, "ethwe0", addr)
}

/// A raw HTTP POST to the plugin socket: status and JSON body.
fn post(socket: &Path, path: &str, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{path}: the body is not JSON ({e}): {body:?}"));
    (status, json)
}

#[test]
fn docker_networks_span_hosts_and_are_isolated() {
    let c = Cluster::new("dplug", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    launch(h1, None);
    launch(h2, Some(h1));
    launch(h3, Some(h1));
    c.wait_full_mesh(CONVERGE);

    // Docker finds the plugin by its socket and activates it.
    for h in [h1, h2, h3] {
        create_network(h, "net1", "10.5.0.0/24");
    }
    create_network(h1, "net2", "10.5.1.0/24");
    // Without --subnet: the IPAM driver answers with the agent's default
    // subnet, and the addresses come from the ring.
    for h in [h2, h3] {
        h.docker_ok(&[
            "network",
            "create",
            "-d",
            "weave",
            "--ipam-driver",
            "weave",
            "auto",
        ]);
        let subnet = h.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            "auto",
        ]);
        assert_eq!(subnet.trim(), DEFAULT_SUBNET);
    }
    let driver = h1.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{.Driver}}/{{.IPAM.Driver}}",
        "net1",
    ]);
    assert_eq!(driver.trim(), "weave/weave");

    let a = run_on(h1, "net1", "ca");
    let b = run_on(h2, "net1", "cb");
    let c3 = run_on(h3, "net1", "cc");
    let other = run_on(h1, "net2", "other");
    for addr in [&a, &b, &c3] {
        assert!(addr.starts_with("10.5.0."), "{addr}");
    }
    assert!(other.starts_with("10.5.1."), "{other}");
    assert!(a != b && b != c3 && a != c3, "one ring: no address twice");
    let auto2 = run_on(h2, "auto", "auto2");
    let auto3 = run_on(h3, "auto", "auto3");
    assert_ne!(auto2, auto3, "one ring: no address twice");
    for (h, addr) in [(h2, &auto2), (h3, &auto3)] {
        let ipam = h.status().ipam;
        let ip: std::net::Ipv4Addr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
        assert!(
            ipam.range.contains(&ip) && ipam.default_subnet.contains(&ip),
            "{addr} is not in {}'s range {} and default subnet {}",
            h.nickname(),
            ipam.range,
            ipam.default_subnet
        );
    }
    // The container's interface is weave's: ethwe0 with its address.
    let links = h1.exec_ok("ca", &["ip", "-o", "addr", "show"]);
    assert!(links.contains("ethwe0") && links.contains(&a), "{links}");

    // One network across the hosts.
    h1.wait_ping("ca", &b).unwrap_or_else(|e| panic!("{e:#}"));
    h2.wait_ping("cb", &a).unwrap_or_else(|e| panic!("{e:#}"));
    for addr in [&a, &b] {
        h3.wait_ping("cc", addr).unwrap_or_else(|e| panic!("{e:#}"));
    }
    h3.wait_ping("auto3", &auto2)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Names: the container's name in weaveDNS, on every host; from inside,
    // Docker's embedded resolver knows only this host's containers of a
    // local-scope network and asks weaveDNS (its --dns) for the others.
    wait_until("cb's name on h1", PING, || {
        let out = h1.weave(&["dns-lookup", "cb"]);
        (out.success() && out.stdout.trim() == b).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h1.weave_ok(&["status", "dns"])));
    h1.wait_ping("ca", "cb.weave.local")
        .unwrap_or_else(|e| panic!("{e:#}"));
    h2.wait_ping("cb", "ca").unwrap_or_else(|e| panic!("{e:#}"));
    h3.wait_ping("cc", "ca").unwrap_or_else(|e| panic!("{e:#}"));
    h3.wait_ping("cc", "cb.weave.local")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The default route is docker_gwbridge's (a second interface), as
    // with Weave's plugin; weaveDNS is routed through ethwe.
    let routes = h1.exec_ok("ca", &["ip", "route"]);
    assert!(
        routes.contains("default via") && !routes.contains("default via 10.5."),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{DNS_ADDR} dev ethwe0")),
        "{routes}"
    );
    // Another weave network cannot reach it (the classifier's subnets).
    h1.assert_no_ping("other", &a);
    h1.assert_no_ping("other", &b);

    // weave ps shows Docker's endpoints; docker rm frees the address and port.
    assert!(in_ps(h1, &a), "{:?}", h1.ps());
    let before = in_use(h1);
    let ports_before = h1
        .link_names()
        .iter()
        .filter(|l| l.starts_with("vethwepl"))
        .count();
    h1.docker_ok(&["rm", "-f", "ca"]);
    wait_until("a's address is freed", PING, || {
        (in_use(h1) == before - 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!in_ps(h1, &a), "{:?}", h1.ps());
    // Its name goes with it, on the other host too.
    wait_until("ca's name to go", PING, || {
        (!h2.weave(&["dns-lookup", "ca"]).success()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let ports_after = h1
        .link_names()
        .iter()
        .filter(|l| l.starts_with("vethwepl"))
        .count();
    assert_eq!(ports_after, ports_before - 1, "{:?}", h1.link_names());
    // The freed address can be used again, and the new container joins
    // in: it announces itself (gratuitous ARP once Docker has moved its
    // interface in), so cb, on h2, which still maps the address to ca's
    // MAC, learns the new one at once; without the announcement the old
    // entry would stay until traffic made cb's kernel probe again, many
    // seconds later. Nothing is sent between them before the check.
    let old_mac = neighbour(h2, "cb", &a).expect("cb has pinged ca: an ARP entry");
    let a2 = run_on_with(h1, "net1", "ca2", &["--ip", &a]);
    assert_eq!(a2, a);
    let new_mac = ethwe0_mac(h1, "ca2");
    assert_ne!(new_mac, old_mac);
    wait_until(
        &format!("cb to map {a} to ca2's {new_mac}"),
        ANNOUNCED,
        || (neighbour(h2, "cb", &a).as_deref() == Some(&*new_mac)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}: cb maps it to {:?}", neighbour(h2, "cb", &a)));
    h1.wait_ping("ca2", &b).unwrap_or_else(|e| panic!("{e:#}"));

    // An agent restart keeps the endpoints and the networks: the container
    // still talks, and Docker can start another on the network.
    h1.weave_ok(&["stop"]);
    launch(h1, Some(h2));
    c.wait_full_mesh(CONVERGE);
    h1.wait_ping("ca2", &b).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(in_ps(h1, &a2), "{:?}", h1.ps());
    // Names are kept across the restart.
    assert_eq!(h1.weave_ok(&["dns-lookup", "ca2"]).trim(), a2);
    let a3 = run_on(h1, "net1", "ca3");
    assert!(a3 != a2 && a3 != b, "{a3} is in use already");
    h2.wait_ping("cb", &a3).unwrap_or_else(|e| panic!("{e:#}"));

    // Bad input: Docker's error path with the plugin's message.
    let refused = |args: &[&str], says: &str| {
        let out = h1.docker(args);
        assert!(!out.success(), "{out:?}");
        assert!(
            out.stderr.contains(says),
            "expected {says:?}: {}",
            out.stderr
        );
    };
    refused(
        &[
            "network",
            "create",
            "-d",
            "weave",
            "--ipam-driver",
            "weave",
            "--subnet",
            "10.5.0.0/25",
            "net3",
        ],
        "overlaps",
    );
    refused(
        &[
            "network",
            "create",
            "-d",
            "weave",
            "--ipam-driver",
            "weave",
            "--subnet",
            "192.168.77.0/24",
            "net3",
        ],
        "outside weave's allocation range",
    );
    refused(
        &[
            "network",
            "create",
            "-d",
            "weave",
            "--ipam-driver",
            "weave",
            "-o",
            "color=red",
            "--subnet",
            "10.5.9.0/24",
            "net3",
        ],
        "unknown driver option",
    );
    // A network in use: Docker refuses it itself (libnetwork's
    // ActiveEndpointsError), before asking the driver.
    refused(&["network", "rm", "net1"], "has active endpoints");

    // Raw calls: malformed JSON and unknown IDs get JSON errors, no panic.
    let socket = h1.plugin_socket().expect("h1 runs a dockerd");
    let (status, body) = post(&socket, "/NetworkDriver.Join", "{not json");
    assert_eq!(status, 400);
    assert!(
        body["Err"].as_str().unwrap().contains("malformed"),
        "{body}"
    );
    let ep = "ab".repeat(32);
    let (status, body) = post(
        &socket,
        "/NetworkDriver.CreateEndpoint",
        &format!(
            r#"{{"NetworkID":"nosuch","EndpointID":"{ep}","Interface":{{"Address":"10.5.0.77/24"}}}}"#
        ),
    );
    assert_eq!(status, 500);
    assert!(
        body["Err"]
            .as_str()
            .unwrap()
            .contains("not a weave network"),
        "{body}"
    );
    let (status, body) = post(
        &socket,
        "/NetworkDriver.Join",
        &format!(r#"{{"NetworkID":"nosuch","EndpointID":"{ep}","SandboxKey":"x"}}"#),
    );
    assert_eq!(status, 500);
    assert!(body["Err"].as_str().unwrap().contains("unknown"), "{body}");
    let (status, _) = post(&socket, "/Plugin.Activate", "");
    assert_eq!(status, 200);
    assert!(h1.status().ipam.in_use_here >= 2, "the agent goes on");

    // DeleteNetwork: once its containers are gone, the network goes.
    h1.docker_ok(&["rm", "-f", "other"]);
    h1.docker_ok(&["network", "rm", "net2"]);
    // Its subnet is free for a new network.
    create_network(h1, "net4", "10.5.1.0/24");
    h1.docker_ok(&["network", "rm", "net4"]);
}
