//! Integration tests on three simulated hosts: network namespaces on a
//! simulated LAN (a bridge in a namespace of its own), each with its own
//! dockerd, the weave agent, and busybox containers.
//!
//! What they prove (issue 3): the launch/connect scenario converges to a full
//! mesh; containers on different hosts in one subnet ping each other (large
//! and fragmented pings too) and carry 100 MB of TCP intact, while subnets
//! stay isolated across hosts; with the direct path between two hosts
//! blocked, their containers talk through the third; a host cut off the LAN
//! and plugged back rejoins by itself; a `SIGKILLed` agent relaunched on the
//! same state restores its connections and its containers' connectivity;
//! the overlay on the wire is VXLAN carrying the containers' frames; garbage
//! on the control and data ports changes nothing.
//!
//! Each test builds its own three hosts (`wvt<pid>-<test>-h1..h3` on
//! `wvt<pid>-<test>-lan`, at 192.168.250.1-3/24) and removes them, also when
//! it fails. All traffic stays inside those namespaces. Every wait polls a
//! condition against a deadline; no timing is asserted.
//!
//! Agents run on the data plane `WEAVE_TEST_DATAPLANE` names (plain by
//! default; `cargo xtask test` runs the suite again on xdp and on fastdp).
//! Where the data planes differ, the expectation says so: the xdp engine
//! coalesces a stream's segments into super-frames, fastdp carries the
//! container's super-frames whole in the kernel, plain does neither.
//!
//! Needs root, dockerd, nftables, tcpdump and the `weave` binary (`WEAVE_BIN`);
//! run with `cargo xtask test`, which runs them one at a time.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use weave_agent::mesh::ConnectionState;
use weave_tests::convergence::{CONVERGE, DEAD_PEER, REJOIN};
use weave_tests::snapshot::{Status, established_with};
use weave_tests::traffic::{assert_tcp_stream, listen};
use weave_tests::wire::{CONTROL_PORT, DATA_PORT, carries, vxlan_pairs};
use weave_tests::{Cluster, Host, Netns, TEST_PREFIX, test_dataplane, wait_until};

/// The default MTU on a 1500-byte LAN: 1500 less VXLAN's 50.
const OVERLAY_MTU: u32 = 1450;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn three_hosts(test: &str) -> Cluster {
    Cluster::new(test, 3)
}

fn hosts(c: &Cluster) -> (&Host, &Host, &Host) {
    (&c[0], &c[1], &c[2])
}

/// `ping -c 3 -s SIZE`, all three answered.
#[track_caller]
fn assert_ping_all(h: &Host, container: &str, addr: &str, size: u32) {
    let out = h.exec(
        container,
        &["ping", "-c", "3", "-W", "2", "-s", &size.to_string(), addr],
    );
    assert!(
        out.success() && out.stdout.contains(" 0% packet loss"),
        "{}: {container} must get all 3 pings of {size} bytes to {addr} answered:\n{out}",
        h.nickname()
    );
}

/// eBPF counter `name` of `h`.
#[track_caller]
fn counter(h: &Host, name: &str) -> u64 {
    h.status()
        .counter(name)
        .unwrap_or_else(|| panic!("{}: no eBPF counter {name}", h.nickname()))
}

/// `ip route add ROUTE dev ethwe` in the container's namespace (containers
/// have no `CAP_NET_ADMIN` of their own).
#[track_caller]
fn add_route(h: &Host, container: &str, route: &str) {
    h.in_container(container, "ip", &["route", "add", route, "dev", "ethwe"])
        .expect_ok();
}

// ---------------------------------------------------------------------------
// (a) The scenario converges to a full mesh
// ---------------------------------------------------------------------------

#[test]
fn launch_connect_and_discovery_converge_to_a_full_mesh() {
    let c = three_hosts("mesh3");
    let (h1, h2, h3) = hosts(&c);

    // Host 1 alone.
    let n1 = h1.launch(&[]);
    let status = h1.status();
    let mesh = &status.mesh;
    assert_eq!(
        (mesh.peers.len(), mesh.connections.len(), mesh.targets.len()),
        (1, 0, 0),
        "h1 alone: 1 peer, 0 connections, no targets: {mesh:#?}"
    );
    assert_eq!(status.ipam.range.to_string(), "10.32.0.0/12");
    let peers = &mesh.peers;
    assert_eq!(
        (peers[0].name.to_string(), peers[0].nickname.as_str()),
        (n1.clone(), "h1")
    );
    assert!(peers[0].connections.is_empty(), "{peers:#?}");

    // Host 2 launches, then connects to host 1.
    let n2 = h2.launch(&[]);
    assert_ne!(n1, n2, "every peer has a name of its own");
    h2.weave_ok(&["connect", &h1.lan_addr()]);
    h2.wait_connected(2, 2, &["h1"], CONVERGE);
    h1.wait_connected(2, 2, &["h2"], CONVERGE);
    let h2_status = h2.status().mesh;
    assert_eq!(h2_status.targets, [h1.lan_addr()], "h2's targets");
    assert_eq!(h2_status.mtu, OVERLAY_MTU, "the overlay MTU");
    let to_h1 = &h2_status.connections;
    assert!(
        to_h1.iter().any(|c| c.state == ConnectionState::Established
            && c.outbound
            && c.address == format!("{}:{CONTROL_PORT}", h1.lan_addr())
            && c.peer.is_some_and(|p| p.to_string() == n1)),
        "h2 dialled h1 at {}:{CONTROL_PORT}: {to_h1:#?}",
        h1.lan_addr()
    );
    let from_h2 = h1.status().mesh.connections;
    assert!(
        from_h2
            .iter()
            .any(|c| c.state == ConnectionState::Established
                && !c.outbound
                && c.peer.is_some_and(|p| p.to_string() == n2)),
        "h1 accepted h2's connection: {from_h2:#?}"
    );

    // Host 3 launches with host 2 as its peer; discovery completes the mesh.
    let n3 = h3.launch(&[&h2.lan_addr()]);
    c.wait_full_mesh(CONVERGE);
    let names = BTreeSet::from([
        (n1, "h1".to_string()),
        (n2, "h2".to_string()),
        (n3, "h3".to_string()),
    ]);
    for h in c.hosts() {
        let mesh = h.status().mesh;
        let peers = &mesh.peers;
        let seen: BTreeSet<(String, String)> = peers
            .iter()
            .map(|p| (p.name.to_string(), p.nickname.clone()))
            .collect();
        assert_eq!(
            seen,
            names,
            "{}: every peer, by name and nickname",
            h.nickname()
        );
        for p in peers {
            let established: BTreeSet<&str> = p
                .connections
                .iter()
                .filter(|c| c.established)
                .map(|c| c.nickname.as_str())
                .collect();
            let others: BTreeSet<&str> = ["h1", "h2", "h3"]
                .into_iter()
                .filter(|n| *n != p.nickname)
                .collect();
            assert_eq!(
                established,
                others,
                "{} sees {} connected to both others: {peers:#?}",
                h.nickname(),
                p.nickname
            );
        }
        assert_eq!(mesh.mtu, OVERLAY_MTU, "{}: the overlay MTU", h.nickname());
        assert_eq!(
            established_with(&mesh).len(),
            mesh.connections.len(),
            "{}: only established connections: {:#?}",
            h.nickname(),
            mesh.connections
        );
    }
    assert_eq!(h3.status().mesh.targets, [h2.lan_addr()], "h3's targets");

    // Forgetting a target stops dialling it; the connection stays (as in Weave).
    h3.weave_ok(&["forget", &h2.lan_addr()]);
    assert!(h3.status().mesh.targets.is_empty(), "h3 forgot h2");
    h3.wait_connected(3, 6, &["h1", "h2"], CONVERGE);
}

// ---------------------------------------------------------------------------
// (b) Containers across hosts: ping, MTU, a 100 MiB TCP stream, isolation
// ---------------------------------------------------------------------------

#[test]
fn containers_on_different_hosts_share_a_subnet_and_nothing_else() {
    let c = three_hosts("xhost");
    let (h1, h2, h3) = hosts(&c);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    let x = h2.run_container("10.0.2.2/24", "xx");
    let y = h3.run_container("10.0.2.3/24", "yy");
    for (h, id) in [(h1, &a), (h2, &b), (h2, &x), (h3, &y)] {
        assert_eq!(
            h.ethwe_mtu(id),
            OVERLAY_MTU,
            "{}: ethwe takes the overlay MTU",
            h.nickname()
        );
    }

    h1.assert_ping(&a, "10.0.1.2");
    h2.assert_ping(&b, "10.0.1.1");
    h2.assert_ping(&x, "10.0.2.3");
    h3.assert_ping(&y, "10.0.2.2");

    // The largest unfragmented ping fills the overlay MTU exactly (1422 + 28
    // = 1450, 1500 on the LAN); larger ones are fragmented by the container.
    for size in [1400, 1422, 4000, 8000] {
        assert_ping_all(h1, &a, "10.0.1.2", size);
        assert_ping_all(h3, &y, "10.0.2.2", size);
    }

    let gso_before = (
        counter(h1, "fastdp_encap_gso"),
        counter(h2, "fastdp_decap_gso"),
    );
    assert_tcp_stream((h1, &a), (h2, &b), "10.0.1.2", 5000);
    // On the xdp data plane the stream's segments enter h2's bridge merged
    // into GSO super-frames; the plain one passes them one by one; on
    // fastdp the stream bypasses the agents: the kernel carries the
    // container's super-frames whole (whether the agent coalesced anything,
    // say frames sent before h1 learnt b's MAC, does not matter).
    let coalesced = h2.status().overlay_stats.frames_coalesced;
    let segmented = h1.status().overlay_stats.frames_segmented;
    let gso = (
        counter(h1, "fastdp_encap_gso"),
        counter(h2, "fastdp_decap_gso"),
    );
    match test_dataplane().as_str() {
        "xdp" => {
            // The container's TSO super-frames reach h1's agent whole, are
            // cut into segments there, and merge again on h2.
            assert!(segmented > 0, "no TCP super-frame reached h1's agent whole");
            assert!(coalesced > 0, "no TCP segment was coalesced on h2");
        }
        "fastdp" => assert!(
            gso.0 > gso_before.0 && gso.1 > gso_before.1,
            "the stream's super-frames crossed in the kernel: encapsulated on h1 and \
             decapsulated on h2 (before, after): {gso_before:?}, {gso:?}"
        ),
        _ => assert_eq!(
            (coalesced, segmented),
            (0, 0),
            "the plain data plane coalesces and cuts nothing"
        ),
    }

    // Subnets stay apart across hosts, even when containers route into the
    // other subnet: frames cross the wire but are dropped at the ports.
    add_route(h1, &a, "10.0.2.0/24");
    add_route(h3, &y, "10.0.1.0/24");
    add_route(h2, &x, "10.0.1.0/24");
    h1.assert_no_ping(&a, "10.0.2.3");
    h1.assert_no_ping(&a, "10.0.2.2");
    h3.assert_no_ping(&y, "10.0.1.1");
    h3.assert_no_ping(&y, "10.0.1.2");
    h2.assert_no_ping(&x, "10.0.1.1");
    // And what works still works.
    h1.assert_ping(&a, "10.0.1.2");
    h3.assert_ping(&y, "10.0.2.2");
}

// ---------------------------------------------------------------------------
// (c) Relay: h1 and h3 cannot reach each other directly
// ---------------------------------------------------------------------------

#[test]
fn with_the_direct_path_blocked_containers_talk_through_the_third_host() {
    let c = three_hosts("relay");
    let (h1, h2, h3) = hosts(&c);
    c.block(h1, h3);

    h1.launch(&[]);
    h2.launch(&[]);
    h2.weave_ok(&["connect", &h1.lan_addr()]);
    h3.launch(&[&h2.lan_addr()]);
    // Everybody knows everybody; h1 and h3 are connected through h2 only.
    h2.wait_connected(3, 4, &["h1", "h3"], CONVERGE);
    h1.wait_connected(3, 4, &["h2"], CONVERGE);
    h3.wait_connected(3, 4, &["h2"], CONVERGE);
    // They did try the direct path (discovery), and the LAN dropped it.
    wait_until("h1 and h3 to try each other", CONVERGE, || {
        (c.blocked_packets(h1, h3) > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h3.run_container("10.0.1.3/24", "bb");
    let mut capture = c
        .lan()
        .capture(h2.lan_port(), &["udp", "port", &DATA_PORT.to_string()])
        .unwrap();
    h1.assert_ping(&a, "10.0.1.3");
    h3.assert_ping(&b, "10.0.1.1");
    assert_ping_all(h1, &a, "10.0.1.3", 4000);
    let decoded = capture
        .wait_decoded(&["-t", "-T", "vxlan"], Duration::from_secs(20), |d| {
            carries(
                d,
                h1.lan_ip(),
                h2.lan_ip(),
                "10.0.1.1 > 10.0.1.3: ICMP echo request",
            ) && carries(
                d,
                h2.lan_ip(),
                h3.lan_ip(),
                "10.0.1.1 > 10.0.1.3: ICMP echo request",
            ) && carries(
                d,
                h3.lan_ip(),
                h2.lan_ip(),
                "10.0.1.3 > 10.0.1.1: ICMP echo reply",
            ) && carries(
                d,
                h2.lan_ip(),
                h1.lan_ip(),
                "10.0.1.3 > 10.0.1.1: ICMP echo reply",
            )
        })
        .unwrap_or_else(|e| panic!("h2 must relay both ways: {e:#}"));
    capture.stop().unwrap();
    assert!(!decoded.is_empty());

    // Unblocked, h1 and h3 connect directly (reconnection with backoff).
    c.unblock(h1, h3);
    c.wait_full_mesh(REJOIN);
    h1.assert_ping(&a, "10.0.1.3");
    h3.assert_ping(&b, "10.0.1.1");
}

// ---------------------------------------------------------------------------
// (d) A host cut off the LAN rejoins by itself
// ---------------------------------------------------------------------------

#[test]
fn a_host_cut_off_the_lan_rejoins_without_a_restart() {
    let c = three_hosts("cut");
    let (h1, h2, h3) = hosts(&c);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h3.run_container("10.0.1.3/24", "bb");
    h1.assert_ping(&a, "10.0.1.3");
    let agents: Vec<u32> = c.hosts().iter().map(Host::agent_pid).collect();

    c.cut(h3);
    // Longer than the dead-peer timeout: until both others have let h3 go.
    h1.wait_established(&["h2"], DEAD_PEER);
    h2.wait_established(&["h1"], DEAD_PEER);
    h1.assert_no_ping(&a, "10.0.1.3");

    c.reconnect(h3);
    c.wait_full_mesh(REJOIN);
    h1.wait_ping_within(&a, "10.0.1.3", REJOIN)
        .unwrap_or_else(|e| panic!("{e:#}"));
    h3.assert_ping(&b, "10.0.1.1");
    let after: Vec<u32> = c.hosts().iter().map(Host::agent_pid).collect();
    assert_eq!(after, agents, "no agent was restarted");
}

// ---------------------------------------------------------------------------
// (e) A killed agent, relaunched, restores everything
// ---------------------------------------------------------------------------

#[test]
fn a_killed_agent_relaunched_restores_its_connections_and_containers() {
    let c = three_hosts("kill");
    let (h1, h2, h3) = hosts(&c);
    let [_, n2, _] = c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    let d = h3.run_container("10.0.1.3/24", "dd");
    h2.assert_ping(&b, "10.0.1.1");
    h2.assert_ping(&b, "10.0.1.3");

    let killed = h2.kill_agent();
    h1.wait_established(&["h3"], DEAD_PEER);
    h3.wait_established(&["h1"], DEAD_PEER);
    assert!(h2.agent_pids().is_empty(), "h2's agent {killed} is gone");

    // Same state directory: same name, same targets, same containers.
    assert_eq!(h2.launch(&[]), n2, "a relaunched agent keeps its peer name");
    assert_eq!(
        h2.status().mesh.targets,
        [h1.lan_addr()],
        "targets persist across a restart"
    );
    c.wait_full_mesh(REJOIN);
    h2.wait_ping_within(&b, "10.0.1.1", REJOIN)
        .unwrap_or_else(|e| panic!("{e:#}"));
    h2.assert_ping(&b, "10.0.1.3");
    h1.assert_ping(&a, "10.0.1.2");
    h3.assert_ping(&d, "10.0.1.2");
    h1.assert_ping(&a, "10.0.1.3");
}

// ---------------------------------------------------------------------------
// (f) On the wire: VXLAN carrying the containers' frames
// ---------------------------------------------------------------------------

#[test]
fn the_overlay_on_the_wire_is_vxlan_carrying_the_containers_frames() {
    let c = three_hosts("wire");
    let (h1, h2, _) = hosts(&c);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.assert_ping(&a, "10.0.1.2");

    // Everything on h1's LAN port, decoded twice: as VXLAN, and the rest.
    let mut capture = c.lan().capture(h1.lan_port(), &[]).unwrap();
    assert_ping_all(h1, &a, "10.0.1.2", 56);
    listen(h2, &b, 5001, "/tmp/hello");
    h1.exec_ok(
        &a,
        &["sh", "-c", "echo hello over vxlan | nc 10.0.1.2 5001"],
    );
    let port = DATA_PORT.to_string();
    let vxlan_filter = ["-t", "-T", "vxlan", "udp", "port", port.as_str()];
    let (l1, l2) = (h1.lan_ip(), h2.lan_ip());
    let decoded = capture
        .wait_decoded(&vxlan_filter, Duration::from_secs(20), |d| {
            carries(d, l1, l2, "10.0.1.1 > 10.0.1.2: ICMP echo request")
                && carries(d, l2, l1, "10.0.1.2 > 10.0.1.1: ICMP echo reply")
                && carries(d, l1, l2, "> 10.0.1.2.5001: Flags [S]")
                && carries(d, l2, l1, "10.0.1.2.5001 > 10.0.1.1.")
        })
        .unwrap_or_else(|e| panic!("the containers' ICMP and TCP inside VXLAN: {e:#}"));
    capture.stop().unwrap();
    for (outer, _) in vxlan_pairs(&decoded) {
        assert!(
            outer.contains("flags [I] (0x08)"),
            "RFC 7348: the I flag alone is set: {outer}"
        );
    }
    assert_eq!(h2.exec_ok(&b, &["cat", "/tmp/hello"]), "hello over vxlan\n");
    // Nothing of the containers crosses the LAN unencapsulated.
    let rest = capture
        .decoded(&["-t", "not", "udp", "port", &port])
        .unwrap();
    assert!(
        !rest.contains("10.0.1."),
        "container traffic outside VXLAN on the LAN:\n{rest}"
    );
}

// ---------------------------------------------------------------------------
// (g) Garbage on the wire
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), for reproducible garbage.
struct Noise(u64);

impl Noise {
    const fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A VXLAN header (flags: I; the given VNI) followed by `payload`.
fn vxlan(vni: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An Ethernet frame carrying an ARP request from `mac`/`ip` for `target`.
fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Opens a TCP connection from `ns` to `to`, sends `data` (then closes its
/// sending half if `half_close`), and reads until the other side closes or
/// `within` has passed. Returns what it read and whether the other side
/// closed (EOF or reset).
fn tcp_session(
    ns: &Netns,
    to: SocketAddrV4,
    data: Vec<u8>,
    half_close: bool,
    within: Duration,
) -> (Vec<u8>, bool) {
    ns.run_inside(move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
        // A peer that refuses may close before everything is written.
        let _ = s.write_all(&data);
        if half_close {
            let _ = s.shutdown(Shutdown::Write);
        }
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (got, true),
            }
            if got.len() > 1 << 20 {
                break;
            }
        }
        (got, false)
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// What h1's data plane dropped of the frames reaching its data port.
const fn overlay_drops(s: &Status) -> u64 {
    let o = &s.overlay_stats;
    o.dropped_malformed + o.dropped_unknown_sender + o.dropped_no_route + o.dropped_oversize
}

/// What the control plane refused or dropped of what reached its port.
const fn mesh_drops(s: &Status) -> u64 {
    let m = &s.mesh.counters;
    m.oversized_frames + m.garbled_messages + m.handshakes_refused + m.handshake_timeouts
}

#[test]
fn garbage_on_the_wire_changes_nothing() {
    let c = three_hosts("junk");
    let (h1, h2, h3) = hosts(&c);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h2.assert_ping(&b, "10.0.1.1");
    // A stranger on the LAN: not a peer.
    let stranger = Netns::create(&format!("{TEST_PREFIX}{}-junk-x", std::process::id())).unwrap();
    c.lan().attach(&stranger, "x", "192.168.250.99/24").unwrap();

    let agent = h1.agent_pid();
    let rss_before = h1.agent_rss_kib();
    let overlay_before = overlay_drops(&h1.status());
    let mesh_before = mesh_drops(&h1.status());
    let log_before = h1.agent_log().lines().count();
    // What reaches container a, to see that nothing of the stranger's does.
    let mut seen_by_a = h1
        .capture_in_container(&a, &["-e", "arp", "or", "icmp"])
        .unwrap();

    // Data port: garbage from the stranger and from h3 (a peer's address),
    // and well-formed VXLAN from the stranger: ARP for a, from a MAC nobody knows.
    let h1_data = SocketAddrV4::new(h1.lan_ip(), DATA_PORT);
    let stranger_mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let forged = arp_request(stranger_mac, [10, 0, 1, 99], [10, 0, 1, 1]);
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut noise = Noise(0x5eed_1234_abcd_ef01);
    for i in 0..3000usize {
        datagrams.push(match i % 6 {
            0 => Vec::new(),
            1 => noise.bytes(7),
            2 => {
                let vni = noise.next() as u32 & 0xff_ffff;
                vxlan(vni, &noise.bytes(10))
            }
            3 => {
                let n = 1 + (noise.next() % 1400) as usize;
                noise.bytes(n)
            }
            4 => {
                let mut p = vxlan(0, &[]);
                p[0] = noise.next() as u8 & !0x08;
                p
            }
            _ => noise.bytes(9000),
        });
    }
    let (forged_sent, garbage_sent) = stranger
        .run_inside({
            let datagrams = datagrams.clone();
            move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                let mut forged_sent = 0;
                for vni in [0, 1, 42, 0xff_ffff] {
                    for _ in 0..25 {
                        s.send_to(&vxlan(vni, &forged), h1_data).unwrap();
                        forged_sent += 1;
                    }
                }
                for d in &datagrams {
                    s.send_to(d, h1_data).unwrap();
                }
                (forged_sent, datagrams.len())
            }
        })
        .unwrap();
    h3.netns()
        .run_inside(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for d in &datagrams {
                s.send_to(d, h1_data).unwrap();
            }
        })
        .unwrap();
    let overlay_dropped = wait_until(
        "h1 to count the garbage it dropped",
        Duration::from_secs(30),
        || {
            let n = overlay_drops(&h1.status()) - overlay_before;
            (n >= 100).then_some(n)
        },
    )
    .unwrap_or_else(|e| panic!("garbage on the data port must be counted: {e:#}"));
    eprintln!(
        "h1 counted {overlay_dropped} dropped datagrams of {} sent",
        forged_sent + 2 * garbage_sent
    );
    let log_after_udp = h1.agent_log().lines().count();
    assert!(
        log_after_udp - log_before < 50,
        "{} garbage datagrams must not be logged one by one: {} log lines:\n{}",
        forged_sent + 2 * garbage_sent,
        log_after_udp - log_before,
        h1.agent_log_tail(60)
    );

    // Control port, from the stranger.
    let h1_control = SocketAddrV4::new(h1.lan_ip(), CONTROL_PORT);
    let hello = |protocol: &str| {
        let body = format!(
            r#"{{"type":"hello","protocol":"{protocol}","min_version":1,"max_version":1,"name":"02:00:00:00:00:99","nickname":"stranger","uid":1,"nonce":2,"listen_port":6783,"data_port":6784}}"#
        );
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        frame
    };
    let within = Duration::from_secs(30);
    // A peer speaking another protocol (Weave's own name) is refused, with the reason.
    let (reply, closed) = tcp_session(&stranger, h1_control, hello("weave"), false, within);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        closed,
        "a wrong protocol name must be refused and the connection closed: {reply}"
    );
    let reply = reply.to_lowercase();
    assert!(
        reply
            .find("refuse")
            .is_some_and(|at| reply[at..].contains("protocol")),
        "the agent refuses, and says it is the protocol: {reply:?}"
    );
    // A frame announcing 4 GiB.
    let mut oversized = vec![0xff, 0xff, 0xff, 0xf0];
    oversized.extend_from_slice(&[b'{'; 2048]);
    let (_, closed) = tcp_session(&stranger, h1_control, oversized, false, within);
    assert!(closed, "an oversized frame must close the connection");
    // A truncated frame, then the stranger's half closed.
    let mut truncated = 1000u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(br#"{"type":"h"#);
    let (_, closed) = tcp_session(&stranger, h1_control, truncated.clone(), true, within);
    assert!(
        closed,
        "a truncated frame and EOF must close the connection"
    );
    // The same, left open: the handshake times out.
    let (_, closed) = tcp_session(&stranger, h1_control, truncated, false, within);
    assert!(closed, "a handshake that never completes must be timed out");
    // Random bytes, many connections.
    for i in 0..100 {
        let junk = noise.bytes(1 + i * 37 % 3000);
        let (_, closed) = tcp_session(&stranger, h1_control, junk, true, within);
        assert!(closed, "connection {i} of random bytes must be closed");
    }
    let mesh_dropped = mesh_drops(&h1.status()) - mesh_before;
    assert!(
        mesh_dropped >= 4,
        "the refused handshakes and bad frames are counted: {mesh_dropped}"
    );

    // The agent is the same process, answers, keeps its mesh and its memory.
    assert_eq!(h1.agent_pid(), agent, "h1's agent did not restart");
    c.wait_full_mesh(CONVERGE);
    let rss_after = h1.agent_rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "the agent's memory must not grow with garbage: {rss_before} KiB -> {rss_after} KiB"
    );
    h2.assert_ping(&b, "10.0.1.1");
    h1.assert_ping(&a, "10.0.1.2");

    // Nothing of the stranger's reached container a, though a's own
    // traffic (the pings just made, after the forged frames) did.
    let seen = seen_by_a
        .wait_decoded(&["-t", "-e"], Duration::from_secs(20), |d| {
            d.contains("10.0.1.2 > 10.0.1.1: ICMP echo request")
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    seen_by_a.stop().unwrap();
    assert!(
        !seen.contains("02:de:ad:be:ef:01") && !seen.contains("10.0.1.99"),
        "forged frames from a stranger must not reach containers:\n{seen}"
    );
    drop(stranger);
}

// ---------------------------------------------------------------------------
// (h) Restart while traffic flows; reset leaves no XDP behind
// ---------------------------------------------------------------------------

/// Kernel objects an agent process holds, by kind of file descriptor.
#[derive(Debug, PartialEq, Eq)]
struct KernelObjects {
    bpf_progs: usize,
    bpf_maps: usize,
    bpf_links: usize,
}

fn kernel_objects(pid: u32) -> KernelObjects {
    let dir = format!("/proc/{pid}/fd");
    let targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect();
    let count = |kind: &str| targets.iter().filter(|t| t.as_str() == kind).count();
    KernelObjects {
        bpf_progs: count("anon_inode:bpf-prog"),
        bpf_maps: count("anon_inode:bpf-map"),
        bpf_links: count("anon_inode:bpf_link"),
    }
}

/// XDP programs attached to any interface of the host's namespace.
fn xdp_attachments(h: &Host) -> usize {
    let out = h.netns().exec("ip", &["-d", "link", "show"]);
    assert!(out.success(), "ip link show: {out:?}");
    out.stdout.matches("prog/xdp").count()
}

#[test]
fn an_agent_restarted_while_traffic_flows_resumes_and_leaks_nothing() {
    let c = three_hosts("restart");
    let (h1, h2, _) = hosts(&c);
    c.launch_scenario(&[]);
    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.assert_ping(&a, "10.0.1.2");
    let xdp = test_dataplane() == "xdp";
    assert_eq!(
        xdp_attachments(h1),
        1,
        "one XDP program, on the datapath port"
    );
    let before = kernel_objects(h1.agent_pid());
    let rss_before = h1.agent_rss_kib();

    // Traffic flows (a ping every 50 ms) while the agent is killed and relaunched.
    let flow = std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            h1.exec_within(
                &a,
                &["ping", "-c", "300", "-i", "0.05", "-W", "1", "10.0.1.2"],
                Duration::from_mins(2),
            )
        });
        let sent = h1.status().overlay_stats.frames_sent;
        wait_until("the ping to flow through h1's data plane", CONVERGE, || {
            (h1.status().overlay_stats.frames_sent >= sent + 5).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        for round in 0..2 {
            h1.kill_agent();
            // The kernel detaches a dead process's links as it releases its
            // files, which can trail the process's exit a little.
            wait_until(
                &format!("round {round}: the dead agent's XDP program to be detached"),
                Duration::from_secs(10),
                || (xdp_attachments(h1) == 0).then_some(()),
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
            h1.launch(&[]);
            h1.wait_established(&["h2", "h3"], REJOIN);
            h1.wait_ping_within(&a, "10.0.1.2", REJOIN)
                .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
            assert_eq!(
                xdp_attachments(h1),
                1,
                "round {round}: XDP programs attached"
            );
            assert_eq!(
                kernel_objects(h1.agent_pid()),
                before,
                "round {round}: the relaunched agent holds what the first one held"
            );
        }
        pinger.join().expect("the pinger thread")
    });
    let replies = flow.stdout;
    assert!(
        replies.contains(" 0% packet loss") || replies.contains("packets received"),
        "the ping ran through the restarts:\n{replies}"
    );
    // The last pings, after the restarts, got through.
    h1.assert_ping(&a, "10.0.1.2");
    h2.assert_ping(&b, "10.0.1.1");
    let rss_after = h1.agent_rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "agent memory stays bounded: {rss_before} KiB at first, {rss_after} KiB after restarts"
    );

    if test_dataplane() == "fastdp" {
        // The relaunched agent runs fastdp, and h2 uses it with h1 again.
        let connections = h2.try_connections().unwrap();
        assert!(
            connections
                .iter()
                .any(|c| c.state == ConnectionState::Established
                    && c.nickname.as_deref() == Some("h1")
                    && c.dataplane == "fastdp"),
            "h2 - h1 on fastdp after h1's restarts: {connections:#?}"
        );
    }
    if xdp {
        let status = h1.status();
        assert_eq!(
            status.overlay, "xdp",
            "the xdp data plane runs after the restarts: {}",
            status.dataplane
        );
        assert!(
            !h1.agent_log().contains("without a destination tag"),
            "copy-mode AF_XDP delivers the datapath program's tag to the agent"
        );
    }

    // `weave reset` leaves no XDP program attached anywhere.
    h1.weave_ok(&["reset"]);
    assert_eq!(xdp_attachments(h1), 0, "no XDP program after weave reset");
}
