//! weaveDNS on simulated hosts (issue 16): containers find each other by
//! name across hosts with busybox's own `nslookup` and `ping`, with nothing
//! configured by hand; a name given to two containers answers with both
//! addresses, rotated; `dig` on a host gets A and PTR answers from the
//! agent; a removed container's name disappears on every host; names
//! outside the domain go to a real upstream server (dnsmasq, in a namespace
//! of its own on the LAN), and a dead upstream gives SERVFAIL, not a hang.
//! DNS crosses subnets, and nothing else to the DNS address does.
//!
//! Needs root, dockerd, `dig` (dnsutils), `dnsmasq` and the `weave` binary
//! (`WEAVE_BIN`); `cargo xtask setup` installs them. Every wait polls with a
//! deadline.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use weave_tests::convergence::REJOIN;
use weave_tests::{Cluster, Host, LAN_IFNAME, Netns, TEST_PREFIX, wait_until};

/// The agent's DNS address (weave-agent's `dns::DEFAULT_LISTEN`).
const DNS_ADDR: &str = "169.254.53.53";
/// How long a name takes to reach, or leave, every host.
const SPREAD: Duration = Duration::from_secs(15);

/// The container's address without its prefix length.
fn addr_of(h: &Host, container: &str) -> String {
    let cidrs = h.ethwe_cidrs(container);
    let cidr = cidrs
        .first()
        .unwrap_or_else(|| panic!("{container} has no address"));
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// `dig @DNS_ADDR ARGS +short` on the host; the answer lines.
fn dig(h: &Host, args: &[&str]) -> Vec<String> {
    try_dig(h, args).unwrap_or_else(|out| panic!("{}: dig {args:?}:\n{out}", h.nickname()))
}

/// [`dig`], with dig's failure (no answer within its one try) returned.
fn try_dig(h: &Host, args: &[&str]) -> Result<Vec<String>, weave_tests::Output> {
    let mut all = vec![
        format!("@{DNS_ADDR}"),
        "+short".into(),
        "+tries=1".into(),
        "+time=3".into(),
    ];
    all.extend(args.iter().map(ToString::to_string));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = h.netns().exec("dig", &all);
    if !out.success() {
        return Err(out);
    }
    Ok(out.stdout.lines().map(ToString::to_string).collect())
}

/// The status line of a full `dig` answer (`status: NOERROR` ...).
fn dig_status(h: &Host, name: &str) -> String {
    let at = format!("@{DNS_ADDR}");
    let out = h.netns().exec("dig", &[&at, "+tries=1", "+time=10", name]);
    out.stdout
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map_or_else(
            || format!("no status in:\n{out}"),
            |s| s.split(',').next().unwrap_or_default().to_string(),
        )
}

/// Waits until every host answers `name` with exactly `addrs` (sorted).
#[track_caller]
fn wait_answers(c: &Cluster, name: &str, addrs: &[&str]) {
    let mut want: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    want.sort();
    for h in c.hosts() {
        wait_until(
            &format!("{} to answer {name} with {want:?}", h.nickname()),
            SPREAD,
            || {
                let mut got = dig(h, &[name]);
                got.sort();
                (got == want).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", h.weave_ok(&["status", "dns"])));
    }
}

#[test]
fn containers_find_each_other_by_name_across_hosts() {
    let c = Cluster::new("dns3", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    c.launch_scenario(&[]);

    h3.run_container("", "web");
    let web3 = addr_of(h3, "web");
    h1.run_container("", "client");
    // Another subnet: DNS reaches the agent, nothing else crosses.
    h1.run_container("net:10.44.1.0/24", "other");
    wait_answers(&c, "web.weave.local", &[&web3]);

    // busybox in the container, with only what `weave run` configured.
    let out = h1.exec_ok("client", &["nslookup", "web"]);
    assert!(out.contains(&web3), "nslookup web from h1:\n{out}");
    let out = h1.exec_ok("other", &["nslookup", "web.weave.local"]);
    assert!(out.contains(&web3), "nslookup from another subnet:\n{out}");
    for name in ["web", "web.weave.local"] {
        let out = h1.exec("client", &["ping", "-c", "1", "-W", "3", name]);
        assert!(
            out.success() && out.stdout.contains(&web3),
            "ping {name} from h1 reaches web on h3 ({web3}):\n{out}"
        );
    }
    // Isolation holds: the other subnet resolves web but cannot reach it,
    // and the DNS address answers nothing but DNS.
    assert!(
        !h1.exec("other", &["ping", "-c", "1", "-W", "1", "web"])
            .success()
    );
    assert!(
        !h1.exec("client", &["ping", "-c", "1", "-W", "1", DNS_ADDR])
            .success()
    );
    assert!(
        !h1.exec("client", &["nc", "-w", "1", DNS_ADDR, "6782"])
            .success(),
        "TCP to another port of the DNS address must not cross"
    );
    let status = h1.status();
    let passed = status.counter("dns_passed").unwrap_or_default();
    assert!(
        passed > 0,
        "the classifier let DNS cross subnets: dns_passed = {passed}"
    );
    // The containers' ARP for the DNS address stayed on h1.
    let kept = status
        .counter("datapath_dns_arp_dropped")
        .unwrap_or_default();
    assert!(
        kept > 0,
        "ARP for the DNS address never leaves the host: {kept}"
    );
    // Unknown names in the domain: NXDOMAIN, answered here.
    assert_eq!(dig_status(h1, "nope.weave.local"), "NXDOMAIN");

    // PTR.
    let rev = dig(h1, &["-x", &web3]);
    assert_eq!(rev, ["web.weave.local."], "PTR of {web3}");

    host_reaches_exactly_the_exposed_subnets(&c);
    // h2's host on the default subnet, through the agent restart below.
    let exposed2 = h2.weave_ok(&["expose"]).trim().to_string();
    // In the range: which part of it h2 owns depends on how the ring
    // started (shared among the peers that agreed on it).
    let in_range = exposed2
        .strip_suffix("/12")
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .is_some_and(|a| a.octets()[0] == 10 && (32..48).contains(&a.octets()[1]));
    assert!(in_range, "net:default: {exposed2}");
    let client1 = addr_of(h1, "client");
    wait_host_ping(h2, &client1, true);

    // A second `web`, on h2: both addresses everywhere, rotated.
    h2.run_container("", "web");
    let web2 = addr_of(h2, "web");
    wait_answers(&c, "web.weave.local", &[&web2, &web3]);
    let firsts: std::collections::BTreeSet<String> = (0..6)
        .filter_map(|_| dig(h1, &["web.weave.local"]).into_iter().next())
        .collect();
    assert_eq!(firsts.len(), 2, "the first address rotates: {firsts:?}");
    let out = h1.exec_ok("client", &["nslookup", "web"]);
    assert!(
        out.contains(&web2) && out.contains(&web3),
        "nslookup gets both:\n{out}"
    );

    // Removed on h3: gone from every host.
    h3.docker_ok(&["rm", "-f", "web"]);
    wait_answers(&c, "web.weave.local", &[&web2]);

    // An agent killed and relaunched announces its names again, and a name
    // removed while it was down is gone.
    h2.run_container("", "db");
    let db2 = addr_of(h2, "db");
    wait_answers(&c, "db.weave.local", &[&db2]);
    h2.kill_agent();
    h2.docker_ok(&["rm", "-f", "db"]);
    h2.launch(&[&h1.lan_addr()]);
    wait_answers(&c, "db.weave.local", &[]);
    wait_answers(&c, "web.weave.local", &[&web2]);
    let status = h1.weave_ok(&["status", "dns"]);
    assert!(status.contains(&web2), "weave status dns:\n{status}");
    // The exposure survived the SIGKILL: same address, still reaching h1.
    assert_eq!(h2.weave_ok(&["expose", "net:default"]).trim(), exposed2);
    wait_host_ping(h2, &client1, true);

    // A name removed on one side of a partition is not resurrected by the
    // other side's live copy when it heals.
    h3.run_container("", "cache");
    let cache3 = addr_of(h3, "cache");
    wait_answers(&c, "cache.weave.local", &[&cache3]);
    c.cut(h3);
    h3.docker_ok(&["rm", "-f", "cache"]);
    // h3 itself forgets it at once; the others still have the live copy.
    wait_until("h3 to drop cache", SPREAD, || {
        dig(h3, &["cache.weave.local"]).is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(dig(h1, &["cache.weave.local"]), [cache3]);
    c.reconnect(h3);
    c.wait_full_mesh(REJOIN);
    wait_answers(&c, "cache.weave.local", &[]);

    // `weave reset` leaves nothing of the exposure behind.
    h2.weave_ok(&["reset"]);
    let addrs = h2.netns().exec("ip", &["-4", "-o", "addr", "show"]).stdout;
    assert!(!addrs.contains(&exposed2), "after reset:\n{addrs}");
    assert!(!h2.link_names().contains(&"weave".to_string()));
}

/// Polls until a ping from `h`'s own namespace to `addr` succeeds
/// (`reach`), or, for `!reach`, checks that two pings both fail.
#[track_caller]
fn wait_host_ping(h: &Host, addr: &str, reach: bool) {
    let ping = || {
        h.netns()
            .exec("ping", &["-c", "1", "-W", "1", addr])
            .success()
    };
    if reach {
        wait_until(&format!("{} to ping {addr}", h.nickname()), SPREAD, || {
            ping().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", h.weave_ok(&["status"])));
    } else {
        assert!(!ping() && !ping(), "{} must not reach {addr}", h.nickname());
    }
}

/// The host's addresses on the weave bridge, as `ip` shows them.
fn bridge_addrs(h: &Host) -> String {
    h.netns()
        .exec("ip", &["-4", "-o", "addr", "show", "dev", "weave"])
        .stdout
}

/// `weave expose 10.0.1.100/24` on h1: the host reaches 10.0.1.x on every
/// host and not 10.0.2.x, even with a route of its own over the bridge;
/// exposing again answers the same; `hide` takes it away; bad input is a
/// clear error.
fn host_reaches_exactly_the_exposed_subnets(c: &Cluster) {
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    h1.run_container("10.0.1.1/24", "x1");
    h2.run_container("10.0.1.2/24", "x2");
    h3.run_container("10.0.1.3/24", "x3");
    h3.run_container("10.0.2.3/24", "y3");
    for (args, says) in [
        (&["expose", "banana"][..], "invalid address 'banana'"),
        (&["expose", "10.0.1.100"], "missing /PREFIX"),
        (&["expose", "net:10.0.1.0/33"], "invalid address"),
        (&["hide", "10.0.1.100/24"], "is not exposed"),
    ] {
        let out = h1.weave(args);
        assert!(
            !out.success() && out.stderr.contains(says),
            "weave {args:?} must say {says:?}:\n{out}"
        );
    }
    assert_eq!(
        h1.weave_ok(&["expose", "10.0.1.100/24"]).trim(),
        "10.0.1.100/24"
    );
    assert_eq!(
        h1.weave_ok(&["expose", "10.0.1.100/24"]).trim(),
        "10.0.1.100/24"
    );
    assert_eq!(
        h1.weave_ok(&["expose", "net:10.0.1.0/24"]).trim(),
        "10.0.1.100/24"
    );
    // `weave ps` lists the host first, as Weave's `weave:expose` line.
    let ps = h1.ps();
    assert!(
        ps.first()
            .is_some_and(|e| e.id == "weave:expose" && e.cidrs == ["10.0.1.100/24"]),
        "weave ps: {ps:?}"
    );
    let out = h1.weave(&["expose", "10.0.1.101/24"]);
    assert!(
        !out.success() && out.stderr.contains("hide it first"),
        "{out}"
    );
    for addr in ["10.0.1.1", "10.0.1.2", "10.0.1.3"] {
        wait_host_ping(h1, addr, true);
    }
    // And back: a container on h2 reaches h1's host, also with a stream
    // (on fastdp it arrives as super-frames, decapsulated for the bridge).
    h2.assert_ping("x2", "10.0.1.100");
    h1.docker_ok(&[
        "run",
        "-d",
        "--net=host",
        "--name",
        "host-rx",
        weave_tests::IMAGE,
        "sleep",
        "3600",
    ]);
    weave_tests::traffic::assert_tcp_stream((h2, "x2"), (h1, "host-rx"), "10.0.1.100", 7000);
    // On fastdp the super-frames for the bridge were decapsulated in the
    // kernel, none passed up (the bridge keeps the MAC fastdp knows it by).
    let restricted = h1.status().counter("fastdp_to_agent_gso_restricted");
    assert!(
        restricted.unwrap_or_default() == 0,
        "super-frames for the exposed host passed up: {restricted:?}"
    );
    h1.docker_ok(&["rm", "-f", "host-rx"]);
    // Not another subnet: no route, and with a route of the host's own over
    // the bridge, the far container's port drops it (and its answer).
    wait_host_ping(h1, "10.0.2.3", false);
    h1.netns()
        .exec("ip", &["route", "add", "10.0.2.0/24", "dev", "weave"]);
    wait_host_ping(h1, "10.0.2.3", false);
    h3.assert_no_ping("y3", "10.0.1.100");
    h1.netns()
        .exec("ip", &["route", "del", "10.0.2.0/24", "dev", "weave"]);

    assert_eq!(
        h1.weave_ok(&["hide", "net:10.0.1.0/24"]).trim(),
        "10.0.1.100/24"
    );
    assert!(
        !bridge_addrs(h1).contains("10.0.1.100"),
        "{}",
        bridge_addrs(h1)
    );
    wait_host_ping(h1, "10.0.1.2", false);
    let out = h1.weave(&["hide", "10.0.1.100/24"]);
    assert!(
        !out.success() && out.stderr.contains("is not exposed"),
        "{out}"
    );
    for (h, name) in [(h1, "x1"), (h2, "x2"), (h3, "x3"), (h3, "y3")] {
        h.docker_ok(&["rm", "-f", name]);
    }
}

/// `count` queries for names outside the domain, as fast as they go.
fn flood(dns: &str, count: u64) {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    socket.connect((dns, 53)).expect("connecting to the agent");
    for i in 0..count {
        let mut q = ((i % 65_536) as u16).to_be_bytes().to_vec();
        q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        let label = format!("n{i}");
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
        q.extend([4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
        let _ = socket.send(&q);
    }
}

/// dnsmasq in its own namespace on the LAN; killed (and the namespace
/// removed) on drop.
struct Upstream {
    child: Option<Child>,
    ns: Netns,
}

impl Upstream {
    fn start(c: &Cluster, ip: Ipv4Addr) -> Self {
        let name = format!("{TEST_PREFIX}{}-dnsup", std::process::id());
        let ns = Netns::create(&name).expect("upstream namespace");
        c.lan()
            .attach(
                &ns,
                &format!("wvtup{}", std::process::id() % 100_000),
                &format!("{ip}/24"),
            )
            .expect("plugging the upstream into the LAN");
        let child = ns
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                &format!("--listen-address={ip}"),
                "--address=/outside.test/192.0.2.7",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq (cargo xtask setup installs it)");
        Self {
            child: Some(child),
            ns,
        }
    }

    /// Dead as a host that is gone: no process, and no answer at all (not
    /// even "port unreachable"), so the agent's questions time out.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = self.ns.exec("ip", &["link", "set", LAN_IFNAME, "down"]);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn other_names_go_upstream_and_a_dead_upstream_is_servfail() {
    let c = Cluster::new("dnsup", 1);
    let h1 = &c[0];
    let ip = Ipv4Addr::new(192, 168, 250, 53);
    let mut upstream = Upstream::start(&c, ip);
    let conf: PathBuf = h1.dir().join("upstream-resolv.conf");
    std::fs::write(&conf, format!("nameserver {ip}\n")).expect("writing resolv.conf");
    h1.launch(&["--resolv-conf", conf.to_str().expect("utf-8 path")]);
    h1.run_container("", "client");

    // Through the agent, from the container and from the host.
    wait_until("the upstream to answer", Duration::from_secs(20), || {
        let out = h1.exec("client", &["nslookup", "outside.test"]);
        out.stdout.contains("192.0.2.7").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h1.weave_ok(&["status", "dns"])));
    assert_eq!(dig(h1, &["outside.test"]), ["192.0.2.7"]);
    assert_eq!(dig_status(h1, "outside.test"), "NOERROR");

    // By hand: dns-add, dns-lookup, dns-remove, and what they refuse.
    let client = addr_of(h1, "client");
    let out = h1.weave(&["dns-add", "10.99.0.1", "client"]);
    assert!(
        !out.success() && out.stderr.contains("outside every subnet"),
        "dns-add of an address outside the container's subnets:\n{out}"
    );
    let out = h1.weave(&["dns-add", "client", "-h", "no way!"]);
    assert!(
        !out.success() && out.stderr.contains("not a valid DNS name"),
        "dns-add of a name that is not a DNS name:\n{out}"
    );
    let out = h1.weave(&["dns-add", "client", "-h", "web.example.com"]);
    assert!(
        !out.success(),
        "a name outside the domain is refused:\n{out}"
    );
    h1.weave_ok(&["dns-add", "client", "-h", "alias"]);
    assert_eq!(
        dig(h1, &["alias.weave.local"]),
        std::slice::from_ref(&client)
    );
    assert_eq!(h1.weave_ok(&["dns-lookup", "alias"]).trim(), client);
    h1.weave_ok(&["dns-remove", "client", "-h", "alias"]);
    assert!(dig(h1, &["alias.weave.local"]).is_empty());
    assert!(!h1.weave(&["dns-lookup", "alias"]).success());

    // A name given by hand survives an agent restart (even SIGKILL), as
    // the container's own name does.
    h1.weave_ok(&["dns-add", "client", "-h", "kept"]);
    h1.kill_agent();
    h1.launch(&["--resolv-conf", conf.to_str().expect("utf-8 path")]);
    wait_until("kept.weave.local after the restart", SPREAD, || {
        (dig(h1, &["kept.weave.local"]) == [client.clone()]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h1.weave_ok(&["status", "dns"])));

    // `weave run -h NAME.weave.local`: the host name is the container's
    // name in weaveDNS (as in Weave); a host name outside the domain is not,
    // and the container name is used.
    h1.weave_ok(&[
        "run",
        "--name",
        "hosted",
        "-h",
        "db.weave.local",
        weave_tests::IMAGE,
        "sleep",
        "3600",
    ]);
    let hosted = addr_of(h1, "hosted");
    assert_eq!(dig(h1, &["db.weave.local"]), [hosted]);
    assert!(dig(h1, &["hosted.weave.local"]).is_empty());
    h1.weave_ok(&[
        "run",
        "--name",
        "plain",
        "-h",
        "plain.example.com",
        weave_tests::IMAGE,
        "sleep",
        "3600",
    ]);
    assert_eq!(dig(h1, &["plain.weave.local"]), [addr_of(h1, "plain")]);

    upstream.stop();
    assert_eq!(dig_status(h1, "outside.test"), "SERVFAIL");
    // A flood of queries to forward: bounded, the excess dropped and
    // counted, and the agent still answers.
    let sent = 3000;
    weave_tests::in_netns(&h1.netns().path(), || flood(DNS_ADDR, sent)).expect("flooding");
    // A query that arrives while the socket's buffer is still full of the
    // flood is lost like the flood's excess (UDP); the agent must answer
    // again once it has drained it, so ask until it does.
    wait_until("an answer after the flood", SPREAD, || {
        try_dig(h1, &["client.weave.local"])
            .ok()
            .filter(|answer| *answer == [client.clone()])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h1.weave_ok(&["status", "dns"])));
    let status = h1.status();
    let counters = &status.dns.as_ref().expect("weaveDNS is on").counters;
    assert!(
        counters.dropped > 0 && counters.forwarded <= sent + 10,
        "the flood beyond the forwarding limit is dropped and counted: {counters:?}"
    );
    // The domain is still answered locally.
    assert_eq!(dig(h1, &["client.weave.local"]), [addr_of(h1, "client")]);
    let status = h1.weave_ok(&["status", "dns"]);
    assert!(status.contains("upstream_failed"), "{status}");
}
