//! The CNI plugin (`weave-net`, issue 19), invoked as a runtime invokes it:
//! `CNI_*` variables and a network configuration on stdin, inside a
//! simulated host's namespace, against that host's agent; pods are network
//! namespaces the test creates (what a runtime does before ADD).
//!
//! What they prove: every verb (ADD, DEL, CHECK, STATUS, GC, VERSION) does
//! what the spec says; a second ADD for the same attachment is refused and
//! leaves the first intact; DEL frees the address (`weave status --json`)
//! and the port, and succeeds again when everything is gone; GC frees the
//! address of a pod whose DEL never came and keeps the valid ones; the error
//! codes for an incompatible version (1), missing environment (4), an
//! undecodable (6) or invalid (7) configuration, and an agent that is not
//! running (11, and 50 for STATUS); pods get the same isolation as
//! containers (a pod and a `weave run` container in one subnet talk, a pod
//! in another subnet is cut off); pods on two hosts ping each other; and a
//! pod's default route through its exposed node takes it to the node, to
//! the outside world (masqueraded) and to a service address the node rewrites, but
//! not into another subnet.
//!
//! Each test builds its own hosts and pod namespaces (`wvt<pid>-cni...`)
//! and removes them, also when it fails. Every wait polls a condition
//! against a deadline.
//!
//! Needs root, dockerd, and the `weave` and `weave-net` binaries (`WEAVE_BIN`
//! names `weave`; `weave-net` is beside it).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use weave_tests::convergence::CONVERGE;
use weave_tests::{Cluster, Host, Netns, TEST_PREFIX, wait_until, weave_bin};

/// Within this a freshly attached pod answers pings.
const PING: Duration = Duration::from_secs(20);
/// The agent's weaveDNS address (weave-agent's `dns::DEFAULT_LISTEN`).
const DNS_ADDR: &str = "169.254.53.53";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// What one plugin run printed, and its exit status.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    #[expect(dead_code, reason = "read through Debug when an assertion fails")]
    stderr: String,
}

impl Run {
    /// The error result's code; panics unless the run failed with one.
    #[track_caller]
    fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {self:?}");
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("the error result is not JSON ({e}): {self:?}"));
        assert!(v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
        v["code"].as_u64().unwrap_or_else(|| panic!("no code: {v}"))
    }

    #[track_caller]
    fn json(&self) -> Value {
        assert!(self.ok, "the plugin failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn silent_success(&self) {
        assert!(self.ok && self.stdout.trim().is_empty(), "{self:?}");
    }
}

fn plugin_bin() -> PathBuf {
    let bin = weave_bin()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .with_file_name("weave-net");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p weave-agent",
        bin.display()
    );
    bin
}

/// The configuration a runtime would pass for this host's network.
fn conf(h: &Host, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "weave",
        "type": "weave-net",
        "socket": h.socket(),
    })
}

/// Runs the plugin in `h`'s namespace with exactly these `CNI_*` variables.
fn plugin(h: &Host, vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd: Command = h.netns().command(plugin_bin());
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning weave-net");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("writing the configuration");
    let out = child.wait_with_output().expect("waiting for weave-net");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A pod: a network namespace, as a runtime creates before ADD.
struct Pod {
    id: String,
    ns: Netns,
}

impl Pod {
    fn new(test: &str, name: &str) -> Self {
        let id = format!("{TEST_PREFIX}{}-{test}-{name}", std::process::id());
        let ns = Netns::create(&id).unwrap_or_else(|e| panic!("{e:#}"));
        Self { id, ns }
    }

    fn netns(&self) -> String {
        self.ns.path().display().to_string()
    }

    /// `verb` for this pod's `eth0`.
    fn call(&self, h: &Host, verb: &str, stdin: &Value) -> Run {
        let netns = self.netns();
        plugin(
            h,
            &[
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", &self.id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &stdin.to_string(),
        )
    }

    /// ADD; returns the pod's address (without the prefix) and the result.
    #[track_caller]
    fn add(&self, h: &Host, stdin: &Value) -> (String, Value) {
        let result = self.call(h, "ADD", stdin).json();
        let addr = result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {result}"));
        (addr.split('/').next().unwrap().to_string(), result)
    }

    fn ping(&self, addr: &str) -> bool {
        self.ns
            .exec("ping", &["-c", "1", "-W", "1", addr])
            .success()
    }

    #[track_caller]
    fn wait_ping(&self, addr: &str) {
        wait_until(&format!("{} pings {addr}", self.id), PING, || {
            self.ping(addr).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// Addresses in use on this peer (`weave status --json`).
fn in_use(h: &Host) -> usize {
    h.status().ipam.in_use_here
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Every verb and every error code on one host, in the order a runtime's
/// life brings them.
#[test]
fn every_verb_and_error_code_on_one_host() {
    let h = Host::new("cni", "h1");
    let v11 = conf(&h, "1.1.0");
    let p1 = Pod::new("cni", "p1");

    // Before the agent runs: STATUS says not available, ADD try again later.
    assert_eq!(
        plugin(&h, &[("CNI_COMMAND", "STATUS")], &v11.to_string()).code(),
        50
    );
    assert_eq!(p1.call(&h, "ADD", &v11).code(), 11);

    h.launch(&[]);
    plugin(&h, &[("CNI_COMMAND", "STATUS")], &v11.to_string()).silent_success();

    // VERSION echoes the caller's version and lists ours.
    let version = plugin(
        &h,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"0.4.0"}"#,
    )
    .json();
    assert_eq!(version["cniVersion"], "0.4.0");
    assert_eq!(
        version["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    // Bad input: each with its code, and nothing allocated.
    let mut bad_version = v11.clone();
    bad_version["cniVersion"] = json!("0.2.0");
    assert_eq!(p1.call(&h, "ADD", &bad_version).code(), 1);
    let mut no_name = v11.clone();
    no_name.as_object_mut().unwrap().remove("name");
    assert_eq!(p1.call(&h, "ADD", &no_name).code(), 7);
    let mut bad_addr = v11.clone();
    bad_addr["addresses"] = json!(["10.0.0.1"]);
    assert_eq!(p1.call(&h, "ADD", &bad_addr).code(), 7);
    assert_eq!(
        plugin(
            &h,
            &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
            &v11.to_string()
        )
        .code(),
        4
    );
    assert_eq!(plugin(&h, &[], &v11.to_string()).code(), 4);
    let garbage = plugin(
        &h,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
        ],
        "{not json",
    );
    assert_eq!(garbage.code(), 6);
    // ADD into a namespace that has the interface already (the spec: an
    // error), or that does not exist: refused, the address given back and
    // no port left behind on the bridge.
    let taken = Pod::new("cni", "taken");
    taken
        .ns
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let exists = taken.call(&h, "ADD", &v11);
    assert_eq!(exists.code(), 100, "{exists:?}");
    let nowhere = plugin(
        &h,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "nowhere"),
            ("CNI_NETNS", "/var/run/netns/no-such-namespace"),
            ("CNI_IFNAME", "eth0"),
        ],
        &v11.to_string(),
    );
    assert_eq!(nowhere.code(), 100, "{nowhere:?}");
    assert_eq!(in_use(&h), 0, "failed ADDs allocate nothing");
    assert!(
        !h.link_names().iter().any(|l| l.starts_with("vethwep")),
        "no port is left from a failed ADD: {:?}",
        h.link_names()
    );
    taken.call(&h, "DEL", &v11).silent_success();

    // ADD: eth0 in the pod with the address of the result, both ends up.
    let (a1, result) = p1.add(&h, &v11);
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], p1.netns());
    let host_port = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        h.link_names().contains(&host_port),
        "{host_port} on the host: {:?}",
        h.link_names()
    );
    let inside = p1.ns.ip(&["-4", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(inside.contains(&format!("{a1}/")), "{inside}");
    assert_eq!(in_use(&h), 1);
    p1.call(&h, "CHECK", &v11).silent_success();

    // A second ADD for the same attachment is an error and changes nothing.
    let again = p1.call(&h, "ADD", &v11);
    assert_eq!(again.code(), 100, "{again:?}");
    assert_eq!(in_use(&h), 1);
    p1.call(&h, "CHECK", &v11).silent_success();

    // Pods talk to each other and to a `weave run` container in their
    // subnet, as any container does; a pod elsewhere is cut off.
    let p2 = Pod::new("cni", "p2");
    let (a2, _) = p2.add(&h, &v11);
    p1.wait_ping(&a2);
    let c1_id = h.run_container("", "c1");
    let c1 = h
        .ps()
        .into_iter()
        .find(|e| c1_id.starts_with(&e.id))
        .expect("the container in weave ps");
    let c1_addr = c1.cidrs[0].split('/').next().unwrap().to_string();
    p1.wait_ping(&c1_addr);
    let other = Pod::new("cni", "p3");
    let mut other_subnet = v11.clone();
    other_subnet["addresses"] = json!(["net:10.33.0.0/24"]);
    let (a3, _) = other.add(&h, &other_subnet);
    assert!(a3.starts_with("10.33.0."), "{a3}");
    // With a route to the default subnet (a test may add one; a real pod
    // lacks CAP_NET_ADMIN), only isolation stands in the way.
    other
        .ns
        .ip(&["route", "add", "10.32.0.0/12", "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        !other.ping(&a1),
        "a pod in 10.33.0.0/24 must not reach {a1}"
    );

    // DEL frees the address and the port; again, and without a namespace,
    // it still succeeds.
    let before = in_use(&h);
    p1.call(&h, "DEL", &v11).silent_success();
    assert_eq!(in_use(&h), before - 1);
    assert!(!h.link_names().contains(&host_port), "{host_port} is gone");
    assert!(
        p1.ns.ip(&["link", "show", "eth0"]).is_err(),
        "eth0 is gone from the pod"
    );
    p1.call(&h, "DEL", &v11).silent_success();
    plugin(
        &h,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &p1.id),
            ("CNI_IFNAME", "eth0"),
        ],
        &v11.to_string(),
    )
    .silent_success();
    // CHECK of what is gone is an error.
    assert_eq!(p1.call(&h, "CHECK", &v11).code(), 100);

    // CHECK notices a pod interface that lost its address.
    other.call(&h, "CHECK", &v11).silent_success();
    other
        .ns
        .ip(&["addr", "flush", "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(other.call(&h, "CHECK", &v11).code(), 100);

    // GC: p3's DEL never came; only p2 is still valid. The container
    // started by `weave run` is not the runtime's and stays.
    let before = in_use(&h);
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": p2.id, "ifname": "eth0"}]);
    plugin(
        &h,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &gc.to_string(),
    )
    .silent_success();
    assert_eq!(in_use(&h), before - 1, "GC freed exactly p3's address");
    p2.call(&h, "CHECK", &v11).silent_success();
    assert_eq!(other.call(&h, "CHECK", &v11).code(), 100);
    assert!(
        h.ps().iter().any(|e| e.id == c1.id),
        "GC left the container alone"
    );

    // Verbs the configuration's version does not have.
    assert_eq!(p2.call(&h, "CHECK", &conf(&h, "0.3.1")).code(), 1);
    assert_eq!(
        plugin(
            &h,
            &[("CNI_COMMAND", "STATUS")],
            &conf(&h, "1.0.0").to_string()
        )
        .code(),
        1
    );

    // The agent stops: STATUS is 50, DEL is "try again later" (the
    // address must not leak), and after a relaunch DEL frees it.
    h.weave_ok(&["stop"]);
    assert_eq!(
        plugin(&h, &[("CNI_COMMAND", "STATUS")], &v11.to_string()).code(),
        50
    );
    assert_eq!(p2.call(&h, "DEL", &v11).code(), 11);
    h.launch(&[]);
    p2.call(&h, "CHECK", &v11).silent_success();
    let before = in_use(&h);
    p2.call(&h, "DEL", &v11).silent_success();
    assert_eq!(in_use(&h), before - 1);
}

/// Pods on two hosts ping each other over the overlay; they reach weaveDNS
/// and the result says so; a pod of an exposed node has it as its gateway.
#[test]
fn pods_on_two_hosts_ping_each_other() {
    let c = Cluster::new("cnix", 2);
    let (h1, h2) = (&c[0], &c[1]);
    h1.launch(&[]);
    h2.launch(&[&h1.lan_addr()]);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    let p1 = Pod::new("cnix", "p1");
    let p2 = Pod::new("cnix", "p2");
    let (a1, r1) = p1.add(h1, &conf(h1, "1.0.0"));
    let (a2, _) = p2.add(h2, &conf(h2, "1.0.0"));
    p1.wait_ping(&a2);
    p2.wait_ping(&a1);

    // weaveDNS: in the result for the runtime's resolv.conf, and reachable
    // from the pod (an on-link route to its address out of eth0).
    assert_eq!(
        r1["dns"],
        json!({"nameservers": [DNS_ADDR], "search": ["weave.local"]}),
        "{r1}"
    );
    assert_eq!(
        r1["routes"],
        json!([{"dst": format!("{DNS_ADDR}/32")}]),
        "{r1}"
    );
    h2.run_container("", "web");
    let web = h2
        .ethwe_cidrs("web")
        .first()
        .and_then(|c| c.split('/').next().map(ToString::to_string))
        .expect("web's address");
    wait_until("p1 resolves web through weaveDNS", PING, || {
        let out = p1.ns.exec(
            "dig",
            &[
                &format!("@{DNS_ADDR}"),
                "+short",
                "+tries=1",
                "+time=2",
                "web.weave.local",
            ],
        );
        (out.stdout.trim() == web).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // The node exposed (as the DaemonSet does): a pod added now has the
    // node's bridge address as its gateway, and node and pod reach each
    // other (the kubelet's probes).
    let gw = h1.weave_ok(&["expose"]).trim().to_string();
    let gw = gw.split('/').next().unwrap().to_string();
    let p3 = Pod::new("cnix", "p3");
    let (a3, r3) = p3.add(h1, &conf(h1, "1.0.0"));
    assert_eq!(
        r3["routes"][1],
        json!({"dst": "0.0.0.0/0", "gw": gw}),
        "{r3}"
    );
    let routes = p3.ns.exec("ip", &["-4", "route", "show", "default"]).stdout;
    assert!(
        routes.contains(&format!("default via {gw} dev eth0")),
        "{routes}"
    );
    p3.wait_ping(&gw);
    assert!(
        h1.netns()
            .exec("ping", &["-c", "1", "-W", "2", &a3])
            .success()
    );
    // A pod added before the exposure has no default route.
    let routes = p1.ns.exec("ip", &["-4", "route", "show", "default"]).stdout;
    assert!(routes.trim().is_empty(), "{routes}");

    for (p, h) in [(&p1, h1), (&p2, h2), (&p3, h1)] {
        p.call(h, "DEL", &conf(h, "1.0.0")).silent_success();
    }
}

/// A pod's default route through its exposed node, as a Kubernetes user
/// of weave-kube relies on: the pod reaches (a) the node's LAN address,
/// (b) a machine outside the overlay, which sees the node's address (the
/// agent's masquerading), and (c) a service address the node DNATs to a pod
/// of the same subnet on another node (kube-proxy's cluster IP); (d) a pod
/// in another subnet stays cut off even through the node. Two hosts without
/// dockerd, and an "outside" namespace on their LAN.
#[test]
fn an_exposed_nodes_pods_reach_the_node_a_service_and_the_outside() {
    const OUTSIDE: &str = "192.168.250.200";
    const CLUSTER_IP: &str = "10.96.0.10";
    let prefix = format!("{TEST_PREFIX}{}-cnigw", std::process::id());
    let bin = weave_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let c = Cluster::create_with(
        &prefix,
        2,
        bin,
        |_| false,
        |host, step| {
            eprintln!("[{prefix}-{host}] {step}");
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (h1, h2) = (&c[0], &c[1]);
    let outside = Netns::create(&format!("{prefix}-out")).unwrap_or_else(|e| panic!("{e:#}"));
    c.lan()
        .attach(&outside, "gw-outside", &format!("{OUTSIDE}/24"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    h1.launch(&[]);
    h2.launch(&[&h1.lan_addr()]);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    let gw = h1.weave_ok(&["expose"]).trim().to_string();
    let gw = gw.split('/').next().unwrap().to_string();
    let h2_gw = h2.weave_ok(&["expose"]).trim().to_string();
    let h2_gw = h2_gw.split('/').next().unwrap().to_string();
    let tables = h1
        .netns()
        .exec("nft", &["list", "table", "ip", "weave"])
        .stdout;
    assert!(tables.contains("masquerade"), "{tables}");

    let pa = Pod::new("cnigw", "pa");
    let pb = Pod::new("cnigw", "pb");
    let pc = Pod::new("cnigw", "pc");
    let (_, ra) = pa.add(h1, &conf(h1, "1.0.0"));
    assert_eq!(
        ra["routes"][1],
        json!({"dst": "0.0.0.0/0", "gw": gw}),
        "{ra}"
    );
    let (b, _) = pb.add(h2, &conf(h2, "1.0.0"));
    let mut other_subnet = conf(h2, "1.0.0");
    other_subnet["addresses"] = json!(["net:10.33.0.0/24"]);
    let (pc_addr, _) = pc.add(h2, &other_subnet);
    pa.wait_ping(&b);

    // (a) The node's own LAN address, answered from the node's stack.
    pa.wait_ping(&h1.lan_addr());

    // (b) The outside namespace knows no route to the overlay: its answer
    // comes back only because the request came from the node's address,
    // which its counter confirms.
    outside
        .exec("nft", &["add", "table", "ip", "seen"])
        .expect_ok();
    outside
        .exec(
            "nft",
            &["add chain ip seen in { type filter hook input priority 0; }"],
        )
        .expect_ok();
    outside
        .exec(
            "nft",
            &[&format!(
                "add rule ip seen in ip saddr {} icmp type echo-request counter",
                h1.lan_addr()
            )],
        )
        .expect_ok();
    pa.wait_ping(OUTSIDE);
    let seen = outside.exec("nft", &["list", "table", "ip", "seen"]).stdout;
    assert!(
        !seen.contains("packets 0 "),
        "the outside saw the pod's echo requests from the node's address: {seen}"
    );

    // (c) A service address the node DNATs to pb, on the other node, as
    // kube-proxy does; the answer comes back from the service address.
    h1.netns()
        .exec(
            "nft",
            &[&format!(
                "add table ip svc; add chain ip svc pre {{ type nat hook prerouting priority dstnat; }}; \
                 add rule ip svc pre ip daddr {CLUSTER_IP} dnat to {b}"
            )],
        )
        .expect_ok();
    pa.wait_ping(CLUSTER_IP);

    // (d) pa sends for pc's subnet through its gateway: the node takes it
    // (gateway_passed) and routes it over the bridge, where pc's port drops
    // what reaches it (the node's ARP for pc, or the ping: no reply of any
    // connection pc made).
    pa.ns
        .ip(&["route", "add", "10.33.0.0/24", "via", &gw])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dropped = || h2.status().counter("drop_other_subnet").unwrap_or_default();
    let before = dropped();
    assert!(
        !pa.ping(&pc_addr),
        "pa must not reach {pc_addr} through the node"
    );
    let after = dropped();
    assert!(
        after > before,
        "pc's port dropped the routed ping: {before} -> {after}"
    );
    let passed = h1.status().counter("gateway_passed").unwrap_or_default();
    assert!(passed > 0, "gateway_passed = {passed}");
    // Nor is a node the gateway of a subnet it is not exposed in, even one
    // nested in its exposed 10.32.0.0/12: pc, made to route through h2
    // anyway, gets nothing up to it (h2's answer could not come back
    // either: its ARP for pc is from another subnet).
    // (Its ARP for the gateway would be dropped: it is given the bridge's MAC.)
    let link = h2
        .netns()
        .ip(&["link", "show", "weave"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bridge_mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"));
    pc.ns
        .ip(&["neigh", "add", &h2_gw, "lladdr", bridge_mac, "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    pc.ns
        .ip(&[
            "route", "add", "default", "via", &h2_gw, "dev", "eth0", "onlink",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let via_h2 = || h2.status().counter("gateway_passed").unwrap_or_default();
    let before = via_h2();
    assert!(
        !pc.ping(&h2.lan_addr()),
        "pc must not use h2 as its gateway"
    );
    assert_eq!(via_h2(), before, "pc's port let nothing up to h2");

    // Hidden, the node is no gateway: no table is left.
    h1.weave_ok(&["hide"]);
    let tables = h1.netns().exec("nft", &["list", "tables"]).stdout;
    assert!(!tables.contains("table ip weave"), "{tables}");
    for (p, h) in [(&pa, h1), (&pb, h2)] {
        p.call(h, "DEL", &conf(h, "1.0.0")).silent_success();
    }
    pc.call(h2, "DEL", &other_subnet).silent_success();
    // Still exposed, h2 has its table until `weave reset`.
    let listed = |h: &Host| h.netns().exec("nft", &["list", "tables"]).stdout;
    assert!(listed(h2).contains("table ip weave"), "{}", listed(h2));
    h2.weave_ok(&["reset"]);
    assert!(!listed(h2).contains("table ip weave"), "{}", listed(h2));
}

// ---------------------------------------------------------------------------
// A real runtime: containerd's `ctr run --cni`
// ---------------------------------------------------------------------------

/// The containerd namespace the pods run in (dockerd's containers live in
/// another, named after the host); it also names their cgroups.
fn ctr_namespace() -> String {
    format!("{TEST_PREFIX}{}-cni", std::process::id())
}

/// A host's containerd (the one its dockerd started) as `ctr` drives it.
fn ctr(h: &Host) -> Command {
    let mut c = Command::new("ctr");
    c.arg("-a")
        .arg(h.dir().join("docker/exec/containerd/containerd.sock"))
        .arg("-n")
        .arg(ctr_namespace());
    c
}

/// Pods started with `ctr run -d`: Drop kills and deletes them (their
/// processes would outlive the host's containerd and shim otherwise) and
/// removes their cgroups. Declared after the cluster, it runs first.
struct CtrPods<'a> {
    pods: Vec<(&'a Host, String)>,
}

impl Drop for CtrPods<'_> {
    fn drop(&mut self) {
        for (h, id) in &self.pods {
            for args in [
                &["task", "kill", "-s", "KILL", id.as_str()][..],
                &["task", "delete", "-f", id.as_str()],
                &["container", "delete", id.as_str()],
            ] {
                let mut c = ctr(h);
                c.args(args);
                let _ = weave_tests::run(&mut c, Duration::from_secs(20));
            }
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let ns = h.path().join(ctr_namespace());
                for id in self.pods.iter().map(|(_, id)| id) {
                    let _ = std::fs::remove_dir(ns.join(id));
                }
                let _ = std::fs::remove_dir(ns);
            }
        }
    }
}

#[track_caller]
fn ctr_ok(h: &Host, args: &[&str]) -> String {
    let mut c = ctr(h);
    c.args(args);
    weave_tests::check(&mut c).unwrap_or_else(|e| panic!("{}: {e:#}", h.nickname()))
}

/// Installs the plugin with `weave setup-cni` into the host's own CNI
/// directories and the busybox image into its containerd.
fn prepare_ctr(h: &Host) -> String {
    let cni = h.dir().join("cni");
    let (bin, conf) = (cni.join("bin"), cni.join("net.d"));
    h.weave_ok(&[
        "setup-cni",
        "--bin-dir",
        bin.to_str().unwrap(),
        "--conf-dir",
        conf.to_str().unwrap(),
        "--plugin",
        plugin_bin().to_str().unwrap(),
    ]);
    let tarball = h.dir().join("busybox.tar");
    h.docker_ok(&["save", "-o", tarball.to_str().unwrap(), weave_tests::IMAGE]);
    ctr_ok(h, &["images", "import", tarball.to_str().unwrap()]);
    format!("docker.io/library/{}", weave_tests::IMAGE)
}

/// `ctr run -d --cni IMAGE ID sleep 3600` in the host's namespace. ctr reads
/// CNI from the fixed `/opt/cni/bin` and `/etc/cni/net.d`: it runs in a
/// mount namespace of its own where those are the host's test directories
/// (the machine's own directories are never touched).
#[track_caller]
fn ctr_run<'a>(pods: &mut CtrPods<'a>, h: &'a Host, image: &str, id: &str) {
    pods.pods.push((h, id.to_owned()));
    let cni = h.dir().join("cni");
    let scratch = h.dir().join("cni-mnt");
    std::fs::create_dir_all(&scratch).unwrap();
    let script = format!(
        "set -e
         mount -t tmpfs tmpfs /opt
         mkdir -p /opt/cni/bin
         mount --bind {bin} /opt/cni/bin
         mount -t tmpfs tmpfs {scratch}
         mkdir {scratch}/upper {scratch}/work
         mount -t overlay overlay -o lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work /etc
         mkdir -p /etc/cni/net.d
         mount --bind {conf} /etc/cni/net.d
         exec nsenter --net={netns} ctr -a {sock} -n {ns} run -d --cni {image} {id} sleep 3600",
        ns = ctr_namespace(),
        bin = cni.join("bin").display(),
        conf = cni.join("net.d").display(),
        scratch = scratch.display(),
        netns = h.netns().path().display(),
        sock = h.dir().join("docker/exec/containerd/containerd.sock").display(),
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    weave_tests::check(&mut c).unwrap_or_else(|e| panic!("{}: ctr run {id}: {e:#}", h.nickname()));
}

/// The address `weave ps` shows for a pod ctr started (its CNI container ID
/// is `<namespace>-<id>`).
#[track_caller]
fn pod_addr(h: &Host, id: &str) -> String {
    let full = format!("{}-{id}", ctr_namespace());
    let short: String = full.chars().take(12).collect();
    let entry = h
        .ps()
        .into_iter()
        .find(|e| e.id == short)
        .unwrap_or_else(|| panic!("{}: {full} is not in weave ps: {:?}", h.nickname(), h.ps()));
    entry.cidrs[0].split('/').next().unwrap().to_string()
}

fn ctr_ping(h: &Host, id: &str, addr: &str) -> bool {
    let mut c = ctr(h);
    c.args([
        "task",
        "exec",
        "--exec-id",
        &format!("ping{}", std::process::id()),
        id,
    ]);
    c.args(["ping", "-c", "1", "-W", "1", addr]);
    weave_tests::run(&mut c, Duration::from_secs(20)).is_ok_and(|o| o.success())
}

/// Pods that containerd runs through `ctr run --cni` on three hosts ping
/// each other and a `weave run` container; when a pod dies without a DEL
/// its address comes back.
#[test]
fn ctr_run_pods_on_three_hosts_reach_each_other() {
    let c = Cluster::new("cnictr", 3);
    c.launch_scenario(&[]);
    let hosts = [&c[0], &c[1], &c[2]];
    let image = prepare_ctr(hosts[0]);
    prepare_ctr(hosts[1]);
    prepare_ctr(hosts[2]);
    let mut pods = CtrPods { pods: Vec::new() };
    let mut addrs = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let id = format!("pod{}", i + 1);
        ctr_run(&mut pods, h, &image, &id);
        addrs.push(pod_addr(h, &id));
    }
    for (i, h) in hosts.iter().enumerate() {
        let id = format!("pod{}", i + 1);
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                wait_until(&format!("{id} pings pod{}", j + 1), PING, || {
                    ctr_ping(h, &id, addr).then_some(())
                })
                .unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    }
    // A container of `weave run` on h3, in the same (default) subnet.
    let c3 = hosts[2].run_container("", "c3");
    let c3_addr = hosts[2]
        .ps()
        .into_iter()
        .find(|e| c3.starts_with(&e.id))
        .map(|e| e.cidrs[0].split('/').next().unwrap().to_string())
        .expect("c3 in weave ps");
    wait_until("pod1 pings the weave run container on h3", PING, || {
        ctr_ping(hosts[0], "pod1", &c3_addr).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(hosts[2].ping("c3", &addrs[0]), "c3 pings pod1");
    // The pod dies without a DEL (ctr -d never sends one): its namespace
    // and port go, and the agent frees the address.
    let before = in_use(hosts[0]);
    ctr_ok(hosts[0], &["task", "kill", "-s", "KILL", "pod1"]);
    wait_until("pod1's address is freed", PING, || {
        (in_use(hosts[0]) == before - 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
