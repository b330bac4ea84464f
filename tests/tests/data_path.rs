//! Data-path liveness (issue 14, item 1): a TCP control connection that is
//! up says nothing about UDP between the two peers. Each pair exchanges
//! heartbeats over the data port; a connection counts as established for
//! forwarding only while they arrive.
//!
//! What the tests prove: with UDP blocked between two of three hosts while
//! TCP works, the pair's connection stays up, status says its data path is
//! down and through whom frames go, and their containers talk through the
//! third host; unblocked, they go direct again. A host whose UDP source
//! port is rewritten on the way out (a port-mapping NAT) is reached at the
//! address its heartbeats come from, not at the one its TCP connection
//! suggests.
//!
//! Path MTU: with UDP packets over 700 bytes dropped between two hosts
//! (and no ICMP said so), each side's probes find the size that passes;
//! status shows it; a 10,000-byte ping (IPv4 fragments without DF) is cut
//! to fit and a TCP stream (DF) learns the MTU from an ICMP answer; with
//! the drop removed, the overlay MTU comes back.
//!
//! A host on a private network behind a router namespace that masquerades
//! it (address and ports) joins a host on the LAN, which cannot dial it,
//! and their containers talk.
//!
//! Each test builds its own hosts (`wvt<pid>-<test>-h*`) and removes them,
//! also when it fails; every wait polls `weave status --json` against a
//! deadline. Agents run on `WEAVE_TEST_DATAPLANE` (plain by default; `cargo
//! xtask test` runs the suite on xdp and fastdp too).
//!
//! Needs root, dockerd, nftables and the `weave` binary (`WEAVE_BIN`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use weave_agent::mesh::{ConnectionState, ConnectionStatus, DataPathState, MeshStatus};
use weave_tests::convergence::CONVERGE;
use weave_tests::snapshot::Status;
use weave_tests::wire::DATA_PORT;
use weave_tests::{Cluster, Host, Netns, TEST_PREFIX, test_dataplane};

/// Heartbeats declare a data path dead after 6 s; routes follow at once.
const DATA_PATH_CHANGE: Duration = Duration::from_secs(45);
/// The nftables table these tests add (in the LAN's or a host's namespace).
const NFT_TABLE: &str = "wvdatapath";
/// The port a NAT'd host's data port is rewritten to on the way out.
const MAPPED_PORT: u16 = 16784;

/// `nft ARGS` in `h`'s namespace (or the LAN's), which must succeed.
#[track_caller]
fn nft(netns: &Netns, args: &[&str]) {
    netns.exec("nft", args).expect_ok();
}

/// Drops UDP to the data port between `a` and `b`, both ways, on the LAN
/// (so that no data plane, in the kernel or not, gets round it); TCP passes.
fn block_udp(c: &Cluster, a: &Host, b: &Host) {
    let port = DATA_PORT.to_string();
    drop_on_lan(c, a, b, &["udp", "dport", &port]);
}

/// Drops the IPv4 packets between `a` and `b` (both ways) that also match
/// `matching` (nft words), on the LAN, counted; [`unblock_udp`] undoes it.
fn drop_on_lan(c: &Cluster, a: &Host, b: &Host, matching: &[&str]) {
    let lan = c.lan().netns();
    nft(lan, &["add", "table", "bridge", NFT_TABLE]);
    nft(
        lan,
        &[
            "add",
            "chain",
            "bridge",
            NFT_TABLE,
            "forward",
            "{ type filter hook forward priority 0; policy accept; }",
        ],
    );
    for (from, to) in [(a, b), (b, a)] {
        let (from, to) = (from.lan_ip().to_string(), to.lan_ip().to_string());
        let mut rule = vec![
            "add", "rule", "bridge", NFT_TABLE, "forward", "ip", "saddr", &from, "ip", "daddr", &to,
        ];
        rule.extend_from_slice(matching);
        rule.extend(["counter", "drop"]);
        nft(lan, &rule);
    }
}

fn unblock_udp(c: &Cluster) {
    nft(c.lan().netns(), &["delete", "table", "bridge", NFT_TABLE]);
}

/// Packets the UDP block dropped so far.
fn udp_blocked(c: &Cluster) -> u64 {
    let listing = c
        .lan()
        .netns()
        .exec("nft", &["list", "table", "bridge", NFT_TABLE])
        .expect_ok();
    listing
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "packets")?;
            words.get(i + 1)?.parse::<u64>().ok()
        })
        .sum()
}

/// `h`'s established connection to the peer nicknamed `peer`.
fn connection_to<'a>(mesh: &'a MeshStatus, peer: &str) -> anyhow::Result<&'a ConnectionStatus> {
    mesh.connections
        .iter()
        .find(|c| c.state == ConnectionState::Established && c.nickname.as_deref() == Some(peer))
        .with_context(|| format!("no established connection to {peer}"))
}

/// The nickname of the next hop towards the peer nicknamed `peer`.
fn route_to(mesh: &MeshStatus, peer: &str) -> anyhow::Result<String> {
    let nickname = |name| {
        mesh.peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.nickname.clone())
    };
    mesh.routes
        .iter()
        .find(|r| nickname(r.destination).as_deref() == Some(peer))
        .and_then(|r| nickname(r.via))
        .with_context(|| format!("no route to {peer}"))
}

/// `h`'s connection to `peer` has its data path `state`, and frames to it
/// go through `via`.
fn data_path_is(
    st: &Status,
    peer: &str,
    state: DataPathState,
    via: &str,
) -> anyhow::Result<ConnectionStatus> {
    let conn = connection_to(&st.mesh, peer)?;
    let data = conn
        .data_path
        .as_ref()
        .with_context(|| format!("no data path shown for {peer}"))?;
    ensure!(data.state == state, "data path to {peer}: {data:?}");
    let hop = route_to(&st.mesh, peer)?;
    ensure!(hop == via, "route to {peer} via {hop}, not {via}");
    if state == DataPathState::Down {
        ensure!(
            data.relay.as_deref() == Some(via),
            "relay shown for {peer}: {data:?}"
        );
    }
    Ok(conn.clone())
}

#[test]
fn with_udp_blocked_between_two_hosts_they_relay_through_the_third_and_come_back() {
    let c = Cluster::new("dpath", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.assert_ping(&a, "10.0.1.2");
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        h.wait_status("data path up, direct", CONVERGE, |st| {
            data_path_is(st, peer, DataPathState::Up, peer)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    block_udp(&c, h1, h2);
    // The control connection stays; its data path is down; routes go round.
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        h.wait_status("data path down, relayed by h3", DATA_PATH_CHANGE, |st| {
            data_path_is(st, peer, DataPathState::Down, "h3")
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let text = h1.weave_ok(&["status", "connections"]);
    assert!(
        text.lines().any(|l| l.contains("h2)")
            && l.contains("established")
            && l.contains("data path: no heartbeat for")
            && l.contains("relaying through h3")),
        "weave status connections says why h2 is relayed:\n{text}"
    );
    let relayed = h3.status().overlay_stats.frames_relayed;
    h1.wait_ping(&a, "10.0.1.2")
        .unwrap_or_else(|e| panic!("a pings b through h3: {e:#}"));
    h2.assert_ping(&b, "10.0.1.1");
    assert!(
        h3.status().overlay_stats.frames_relayed > relayed,
        "h3 relayed the pings"
    );
    assert!(udp_blocked(&c) > 0, "the block dropped the heartbeats");
    let counters = h1.status().mesh.counters;
    assert!(
        counters.heartbeats_sent > 0 && counters.heartbeats_received > 0,
        "{counters:?}"
    );

    unblock_udp(&c);
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        h.wait_status("data path up again, direct", DATA_PATH_CHANGE, |st| {
            data_path_is(st, peer, DataPathState::Up, peer)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let text = h1.weave_ok(&["status", "connections"]);
    assert!(!text.contains("data path:"), "{text}");
    h1.wait_ping(&a, "10.0.1.2")
        .unwrap_or_else(|e| panic!("a pings b directly: {e:#}"));
}

/// `h`'s outgoing UDP from the data port leaves from `MAPPED_PORT`, and the
/// data port takes nothing that did not come back through that mapping:
/// the host is reachable only at the address its packets come from, as
/// behind a port-mapping NAT.
fn port_mapping_nat(h: &Host) {
    let ns = h.netns();
    let (port, mapped) = (DATA_PORT.to_string(), MAPPED_PORT.to_string());
    let ip = h.lan_ip().to_string();
    nft(ns, &["add", "table", "ip", NFT_TABLE]);
    nft(
        ns,
        &[
            "add",
            "chain",
            "ip",
            NFT_TABLE,
            "raw",
            "{ type filter hook prerouting priority raw; policy accept; }",
        ],
    );
    nft(
        ns,
        &[
            "add",
            "chain",
            "ip",
            NFT_TABLE,
            "post",
            "{ type nat hook postrouting priority srcnat; policy accept; }",
        ],
    );
    // Before conntrack: nothing reaches the data port directly, so every
    // flow from it starts here and is mapped.
    nft(
        ns,
        &[
            "add", "rule", "ip", NFT_TABLE, "raw", "udp", "dport", &port, "drop",
        ],
    );
    nft(
        ns,
        &[
            "add",
            "rule",
            "ip",
            NFT_TABLE,
            "post",
            "udp",
            "sport",
            &port,
            "snat",
            "to",
            &format!("{ip}:{mapped}"),
        ],
    );
}

#[test]
fn a_host_behind_a_port_mapping_nat_is_reached_where_its_heartbeats_come_from() {
    if test_dataplane() == "fastdp" {
        // fastdp encapsulates in the kernel's TC hooks, which netfilter's
        // NAT never sees: the NAT'd host's kernel path would send from the
        // unmapped port. Userspace engines send through the socket.
        // Straight to stderr, past the test harness's capture: a skip is
        // never silent.
        let _ = writeln!(
            std::io::stderr(),
            "\n\n*** SKIPPED on fastdp: the port-mapping NAT is simulated with \
             nftables in the host's namespace, which the in-kernel data path \
             bypasses; this test runs on plain and xdp. ***\n\n"
        );
        return;
    }
    let c = Cluster::new("dpnat", 2);
    let (h1, h2) = (&c[0], &c[1]);
    port_mapping_nat(h2);
    h1.launch(&[]);
    h2.launch(&[&h1.lan_addr()]);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    h2.wait_connected(2, 2, &["h1"], CONVERGE);
    let mapped = SocketAddr::from((h2.lan_ip(), MAPPED_PORT));
    h1.wait_status(
        "h2's data address learnt from its heartbeats",
        CONVERGE,
        |st| {
            let conn = connection_to(&st.mesh, "h2")?;
            let data = conn.data_path.as_ref().context("no data path shown")?;
            if data.address != Some(mapped) || data.state != DataPathState::Up {
                bail!("data path to h2: {data:?}, expected up at {mapped}");
            }
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.wait_ping(&a, "10.0.1.2")
        .unwrap_or_else(|e| panic!("a reaches b behind the NAT: {e:#}"));
    h2.assert_ping(&b, "10.0.1.1");
    let st = h1.status().overlay_stats;
    assert!(st.frames_received > 0, "{st:?}");
}

/// The router's address on the LAN (the hosts are .1 and .2).
const ROUTER_LAN: &str = "192.168.250.200";
/// The private network behind the router: router .1, host .2.
const PRIVATE_NET: &str = "10.99.7";
/// Where the router maps the private host's ports (TCP and UDP): never
/// the data port itself, so the other side must learn it.
const MASQUERADE_PORTS: &str = "20000-20999";

/// A router namespace between the LAN and `host`, which it takes off the
/// LAN: `host` keeps only a private address and a default route through
/// the router, whose traffic to the LAN leaves masqueraded, ports remapped.
/// Nothing on the LAN can reach `host` unless `host` spoke first. Dropped,
/// the namespace goes, and its veths with it.
struct NatRouter {
    netns: Netns,
}

impl NatRouter {
    fn put_behind(c: &Cluster, host: &Host, tag: &str) -> Self {
        let name = format!("{TEST_PREFIX}{}-{tag}-nat", std::process::id());
        let netns = Netns::create(&name).unwrap_or_else(|e| panic!("{e:#}"));
        let router = Self { netns };
        let ns = &router.netns;
        c.lan()
            .attach(ns, &format!("{tag}nat"), &format!("{ROUTER_LAN}/24"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        // Off the LAN: no address, no carrier.
        let h = host.netns();
        h.exec("ip", &["addr", "flush", "dev", "eth0"]).expect_ok();
        h.exec("ip", &["link", "set", "eth0", "down"]).expect_ok();
        ns.exec(
            "ip",
            &[
                "link",
                "add",
                "inside",
                "type",
                "veth",
                "peer",
                "name",
                "eth1",
                "netns",
                h.name(),
            ],
        )
        .expect_ok();
        let (router_ip, host_ip) = (format!("{PRIVATE_NET}.1"), format!("{PRIVATE_NET}.2"));
        ns.exec(
            "ip",
            &["addr", "add", &format!("{router_ip}/24"), "dev", "inside"],
        )
        .expect_ok();
        ns.exec("ip", &["link", "set", "inside", "up"]).expect_ok();
        h.exec(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", "eth1"],
        )
        .expect_ok();
        h.exec("ip", &["link", "set", "eth1", "up"]).expect_ok();
        h.exec("ip", &["route", "add", "default", "via", &router_ip])
            .expect_ok();
        ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .expect_ok();
        nft(ns, &["add", "table", "ip", NFT_TABLE]);
        nft(
            ns,
            &[
                "add",
                "chain",
                "ip",
                NFT_TABLE,
                "post",
                "{ type nat hook postrouting priority srcnat; policy accept; }",
            ],
        );
        nft(
            ns,
            &[
                "add",
                "rule",
                "ip",
                NFT_TABLE,
                "post",
                "oifname",
                "eth0",
                "meta",
                "l4proto",
                "{ tcp, udp }",
                "masquerade",
                "to",
                &format!(":{MASQUERADE_PORTS}"),
            ],
        );
        router
    }

    /// Connections the router masqueraded so far (its conntrack table).
    fn masqueraded(&self) -> String {
        self.netns
            .exec("nft", &["list", "table", "ip", NFT_TABLE])
            .expect_ok()
    }
}

#[test]
fn a_host_behind_a_masquerading_router_joins_and_carries_traffic() {
    let c = Cluster::new("dprouter", 2);
    let (h1, h2) = (&c[0], &c[1]);
    let router = NatRouter::put_behind(&c, h2, "dpr");
    h1.launch(&[]);
    // Only h2 can dial: h1 learns h2's addresses but cannot reach them.
    h2.launch(&[&h1.lan_addr()]);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    h2.wait_connected(2, 2, &["h1"], CONVERGE);
    let router_ip: std::net::IpAddr = ROUTER_LAN.parse().expect("an address");
    let (low, high) = MASQUERADE_PORTS
        .split_once('-')
        .map(|(l, h)| (l.parse::<u16>().unwrap(), h.parse::<u16>().unwrap()))
        .expect("a port range");
    h1.wait_status(
        "h2's data address learnt as the router's mapping",
        CONVERGE,
        |st| {
            let conn = connection_to(&st.mesh, "h2")?;
            let data = conn.data_path.as_ref().context("no data path shown")?;
            let learnt = data.address.context("no data address learnt")?;
            if learnt.ip() != router_ip
                || !(low..=high).contains(&learnt.port())
                || data.state != DataPathState::Up
            {
                bail!("data path to h2: {data:?}, expected up at {router_ip}:{low}-{high}");
            }
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.wait_ping(&a, "10.0.1.2")
        .unwrap_or_else(|e| panic!("a reaches b behind the router: {e:#}"));
    h2.assert_ping(&b, "10.0.1.1");
    // Full-size frames (and, on fastdp, super-frames) through the router.
    let sent = weave_tests::traffic::assert_tcp_stream_of(16, (h2, &b), (h1, &a), "10.0.1.1", 5201);
    assert!(sent > 0);
    let listing = router.masqueraded();
    assert!(listing.contains("masquerade"), "{listing}");
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        let st = h.status();
        let conn = connection_to(&st.mesh, peer).unwrap_or_else(|e| panic!("{e:#}"));
        let data = conn.data_path.as_ref().expect("a data path");
        assert_eq!(data.state, DataPathState::Up, "{}: {data:?}", h.nickname());
    }
}

/// How long path MTU discovery may take (a healthy path is rechecked every
/// 30 s, then the search takes about half a minute), and its return once
/// the path takes the full size again (a recheck every 5 s).
const PATH_MTU_CHANGE: Duration = Duration::from_mins(2);
/// UDP packets on the LAN between the two hosts larger than this (IPv4
/// total length) are dropped without a word.
const PATH_LIMIT: u32 = 700;

/// Drops UDP packets over [`PATH_LIMIT`] bytes between `a` and `b`, both
/// ways, on the LAN (where no data plane gets round it).
fn drop_big_udp(c: &Cluster, a: &Host, b: &Host) {
    let limit = PATH_LIMIT.to_string();
    drop_on_lan(
        c,
        a,
        b,
        &["ip", "protocol", "udp", "ip", "length", ">", &limit],
    );
}

/// The path MTU `h`'s connection to `peer` shows (`None`: the overlay's).
fn path_mtu(st: &Status, peer: &str) -> anyhow::Result<Option<u32>> {
    let conn = connection_to(&st.mesh, peer)?;
    let data = conn.data_path.as_ref().context("no data path shown")?;
    Ok(data.mtu)
}

#[test]
fn a_path_that_drops_big_packets_gets_its_mtu_found_and_big_packets_through() {
    path_mtu_is_found_and_big_packets_pass("dpmtu", None);
}

/// The same with a password: probes are authenticated with keys derived
/// from the connection's, fragments are sealed one by one, and the seal's
/// 24 bytes come off the MTU too.
#[test]
fn with_a_password_too() {
    path_mtu_is_found_and_big_packets_pass("dpmtupw", Some("path-mtu-secret"));
}

fn path_mtu_is_found_and_big_packets_pass(tag: &str, password: Option<&str>) {
    let c = Cluster::new(tag, 2);
    let (h1, h2) = (&c[0], &c[1]);
    let env: Vec<(&str, &str)> = password
        .map(|p| ("WEAVE_PASSWORD", p))
        .into_iter()
        .collect();
    h1.launch_env(&[], &env);
    h2.launch_env(&[&h1.lan_addr()], &env);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    h2.wait_connected(2, 2, &["h1"], CONVERGE);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.assert_ping(&a, "10.0.1.2");
    assert_eq!(path_mtu(&h1.status(), "h2").unwrap(), None);

    drop_big_udp(&c, h1, h2);
    // Outer IPv4 (20), UDP (8), VXLAN (8), the inner Ethernet header (14)
    // and the seal (24) come off the limit; the search stops within 8
    // bytes of it.
    let fits = PATH_LIMIT - 50 - if password.is_some() { 24 } else { 0 };
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        h.wait_status(
            "path MTU discovered",
            PATH_MTU_CHANGE,
            |st| match path_mtu(st, peer)? {
                Some(mtu) if (fits - 8..=fits).contains(&mtu) => Ok(()),
                other => bail!(
                    "path MTU to {peer}: {other:?}, expected {} to {fits}",
                    fits - 8
                ),
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let text = h1.weave_ok(&["status", "connections"]);
    assert!(
        text.lines()
            .any(|l| l.contains("h2)") && l.contains("(path MTU; overlay")),
        "weave status connections shows the path MTU:\n{text}"
    );
    // IPv4 fragments (no DF) over the limit are cut again; the receiver
    // reassembles them.
    let big_ping = || {
        h1.exec(
            &a,
            &["ping", "-c", "1", "-W", "2", "-s", "10000", "10.0.1.2"],
        )
        .success()
        .then_some(())
    };
    weave_tests::wait_until("a 10,000-byte ping from a to b", CONVERGE, big_ping)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let fragmented = h1.status().overlay_stats.path_mtu_fragments;
    assert!(fragmented > 0, "h1 cut frames to fit the path");
    // TCP sends with DF: an ICMP answer lowers its segments to fit.
    let sent = weave_tests::traffic::assert_tcp_stream_of(8, (h2, &b), (h1, &a), "10.0.1.1", 5202);
    assert!(sent > 0);
    let icmp = h2.status().overlay_stats.path_mtu_icmp;
    assert!(icmp > 0, "h2 told its container the path MTU");
    assert!(udp_blocked(&c) > 0, "the limit dropped big packets");

    unblock_udp(&c);
    for (h, peer) in [(h1, "h2"), (h2, "h1")] {
        h.wait_status(
            "the overlay MTU back",
            PATH_MTU_CHANGE,
            |st| match path_mtu(st, peer)? {
                None => Ok(()),
                Some(mtu) => bail!("path MTU to {peer} still {mtu}"),
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    h1.assert_ping(&a, "10.0.1.2");
}
