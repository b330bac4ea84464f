//! The fault suite (issue 6): crashes, partitions, a dockerd restart and a
//! reboot on three simulated hosts, each ending with full connectivity and
//! no address handed out twice, checked automatically; and a stranger's
//! flood of connections to the control port (issue 14).
//!
//! Each test builds its own hosts (`wvt<pid>-<test>-h1..h3`) and removes
//! them, also when it fails. All traffic stays inside those namespaces.
//! Every wait polls against a deadline; faults are injected on events (a
//! port appearing, a peer declared dead), never after a sleep. Agents run
//! on the data plane `WEAVE_TEST_DATAPLANE` names: `cargo xtask test` runs
//! the suite on plain, xdp and fastdp.
//!
//! Needs root, dockerd, nftables and the `weave` binary (`WEAVE_BIN`); run
//! with `cargo xtask test`.

use std::collections::BTreeMap;
use std::time::Duration;

use weave_tests::convergence::{CONVERGE, DEAD_PEER, REJOIN};
use weave_tests::{Cluster, Host, IMAGE, wait_until};

/// Container ports on a host's bridge are `vethwepl<pid>`.
const PORT_PREFIX: &str = "vethwepl";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Starts an endless ping loop in `container` towards `addr`, one line per
/// answered ping in /tmp/answered: steady traffic across a fault.
#[track_caller]
fn start_ping_loop(h: &Host, container: &str, addr: &str) {
    let script =
        format!("while true; do ping -c 1 -W 1 {addr} >/dev/null && echo y >> /tmp/answered; done");
    h.docker_ok(&["exec", "-d", container, "sh", "-c", &script]);
}

/// How many pings of the loop were answered so far.
#[track_caller]
fn answered(h: &Host, container: &str) -> u64 {
    h.exec_ok(
        container,
        &["sh", "-c", "cat /tmp/answered 2>/dev/null | wc -l"],
    )
    .trim()
    .parse()
    .unwrap()
}

/// Waits until the ping loop in `container` has more than `than` answers.
#[track_caller]
fn wait_answered_more(h: &Host, container: &str, than: u64, timeout: Duration) -> u64 {
    wait_until(
        &format!("{}: pings from {container} answered again", h.nickname()),
        timeout,
        || {
            let n = answered(h, container);
            (n > than).then_some(n)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Every address `weave ps` shows on every host, with where it is; panics
/// if one is listed twice (the property IPAM exists for).
#[track_caller]
fn assert_no_duplicate_addresses(c: &Cluster) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for h in c.hosts() {
        for entry in h.ps() {
            for cidr in &entry.cidrs {
                let addr = cidr.split('/').next().unwrap().to_string();
                let here = format!("{}:{}", h.nickname(), entry.id);
                if let Some(there) = seen.insert(addr.clone(), here.clone()) {
                    panic!("address {addr} is handed out twice: to {there} and to {here}");
                }
            }
        }
    }
    seen
}

/// What `weave ps` says is what the containers have: every listed container
/// has exactly those addresses on ethwe, and no running container has an
/// ethwe weave has no record of (it would escape the bookkeeping).
#[track_caller]
fn assert_ps_matches_containers(h: &Host) {
    let entries = h.ps();
    for entry in &entries {
        let mut want = entry.cidrs.clone();
        want.sort();
        assert_eq!(
            h.ethwe_cidrs(&entry.id),
            want,
            "{}: the addresses weave ps shows for {} are the ones on its ethwe",
            h.nickname(),
            entry.id
        );
    }
    for id in h.containers() {
        let running = h.docker_ok(&["inspect", "-f", "{{.State.Running}}", &id]);
        if running.trim() != "true" {
            continue;
        }
        let has_ethwe = h
            .exec(&id, &["test", "-e", "/sys/class/net/ethwe"])
            .success();
        let listed = entries.iter().any(|e| id.starts_with(&e.id));
        assert_eq!(
            has_ethwe,
            listed,
            "{}: container {} has {} ethwe but weave ps {} it",
            h.nickname(),
            &id[..12],
            if has_ethwe { "an" } else { "no" },
            if listed { "lists" } else { "does not list" }
        );
    }
}

/// The first address of container `id` as `weave ps` shows it.
#[track_caller]
fn addr_of(h: &Host, id: &str) -> String {
    let entry = h
        .ps()
        .into_iter()
        .find(|e| id.starts_with(&e.id))
        .unwrap_or_else(|| panic!("{}: weave ps does not list {}", h.nickname(), &id[..12]));
    entry.cidrs[0].split('/').next().unwrap().to_string()
}

/// Every container pings every other (each by its first address) and gets
/// an answer within the rejoin deadline.
#[track_caller]
fn assert_all_reach_all(members: &[(&Host, &str)]) {
    let addrs: Vec<String> = members.iter().map(|(h, id)| addr_of(h, id)).collect();
    for (i, (h, id)) in members.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                h.wait_ping_within(id, addr, REJOIN)
                    .unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    }
}

/// `ip ARGS...` in the container's network namespace, as its root with
/// `CAP_NET_ADMIN` would run it (Docker gives containers no `CAP_NET_ADMIN`).
#[track_caller]
fn container_ip(h: &Host, container: &str, args: &[&str]) {
    h.in_container(container, "ip", args).expect_ok();
}

/// Deletes what a reboot would take with it: the bridge and the datapath
/// veth pair (container ports went with their containers).
#[track_caller]
fn forget_network_state(h: &Host) {
    for link in ["weave", "vethwe-bridge"] {
        if h.link_names().iter().any(|l| l == link) {
            h.netns().exec("ip", &["link", "del", link]).expect_ok();
        }
    }
}

// ---------------------------------------------------------------------------
// SIGKILL under traffic, while containers are being attached
// ---------------------------------------------------------------------------

#[test]
fn an_agent_killed_under_traffic_while_attaching_restarts_consistent() {
    let c = Cluster::new("kill", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    let [_, n2, _] = c.launch_scenario(&[]);
    let s1 = h1.run_container("10.0.1.1/24", "s1");
    let s2 = h2.run_container("10.0.1.2/24", "s2");
    let t2 = h2.run_container("10.0.2.2/24", "t2");
    let a1 = h1.run_container("", "a1");
    let b2 = h2.run_container("", "b2");
    let d3 = h3.run_container("", "d3");
    start_ping_loop(h1, &s1, "10.0.1.2");
    let before_kill = wait_answered_more(h1, &s1, 0, REJOIN);
    let h2_before = h2.ps();

    // Kill h2's agent in the middle of attaching: four `weave run`s at once,
    // and the SIGKILL as soon as the first new container port appears.
    let ports_before = h2
        .link_names()
        .into_iter()
        .filter(|l| l.starts_with(PORT_PREFIX))
        .count();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    h2.weave(&["run", "--name", &format!("k{i}"), IMAGE, "sleep", "3600"])
                })
            })
            .collect();
        wait_until("a new container port on h2", Duration::from_mins(1), || {
            let ports = h2
                .link_names()
                .into_iter()
                .filter(|l| l.starts_with(PORT_PREFIX))
                .count();
            (ports > ports_before).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        h2.kill_agent();
        for run in runs {
            // Some succeeded before the kill, the others failed with it.
            let _ = run.join();
        }
    });

    // While the agent is dead, isolation on h2 holds (its classifiers stay
    // attached): t2 trades its 10.0.2.2/24 for an address in s2's subnet
    // and still cannot reach s2, nor s2 it.
    h1.wait_established(&["h3"], DEAD_PEER);
    container_ip(h2, &t2, &["addr", "add", "10.0.1.99/24", "dev", "ethwe"]);
    container_ip(h2, &t2, &["addr", "del", "10.0.2.2/24", "dev", "ethwe"]);
    h2.assert_no_ping(&t2, "10.0.1.2");
    h2.assert_no_ping(&s2, "10.0.1.99");
    container_ip(h2, &t2, &["addr", "add", "10.0.2.2/24", "dev", "ethwe"]);
    container_ip(h2, &t2, &["addr", "del", "10.0.1.99/24", "dev", "ethwe"]);

    assert_eq!(h2.launch(&[]), n2, "the relaunched agent keeps its name");
    c.wait_full_mesh(REJOIN);

    // Containers attached before the crash keep their addresses.
    let h2_after = h2.ps();
    for entry in &h2_before {
        assert!(
            h2_after.contains(entry),
            "{entry:?} survives the crash unchanged: {h2_after:?}"
        );
    }
    for h in c.hosts() {
        assert_ps_matches_containers(h);
    }
    assert_no_duplicate_addresses(&c);

    // Traffic resumes by itself, and the cluster works as before.
    wait_answered_more(h1, &s1, answered(h1, &s1).max(before_kill), REJOIN);
    let e2 = h2.run_container("", "e2");
    assert_no_duplicate_addresses(&c);
    assert_all_reach_all(&[(h1, &a1), (h2, &b2), (h3, &d3), (h2, &e2)]);
    h2.assert_no_ping(&t2, "10.0.1.1");
    h2.assert_ping(&s2, "10.0.1.1");
}

// ---------------------------------------------------------------------------
// A partition longer than the dead-peer timeout, then healing
// ---------------------------------------------------------------------------

#[test]
fn a_partition_heals_without_duplicate_addresses() {
    let c = Cluster::new("part", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    c.launch_scenario(&[]);
    // Every host owns space before the partition.
    let a1 = h1.run_container("", "a1");
    let b2 = h2.run_container("", "b2");
    let d3 = h3.run_container("", "d3");
    assert_no_duplicate_addresses(&c);

    c.cut(h3);
    h1.wait_established(&["h2"], DEAD_PEER);
    h2.wait_established(&["h1"], DEAD_PEER);
    h3.wait_established(&[], DEAD_PEER);
    // Both sides keep allocating from what they own.
    let a1b = h1.run_container("", "a1b");
    let d3b = h3.run_container("", "d3b");
    let d3c = h3.run_container("", "d3c");

    c.reconnect(h3);
    c.wait_full_mesh(REJOIN);
    assert_no_duplicate_addresses(&c);
    for h in c.hosts() {
        assert_ps_matches_containers(h);
    }
    assert_all_reach_all(&[
        (h1, &a1),
        (h1, &a1b),
        (h2, &b2),
        (h3, &d3),
        (h3, &d3b),
        (h3, &d3c),
    ]);
}

// ---------------------------------------------------------------------------
// dockerd restarting under a running agent
// ---------------------------------------------------------------------------

#[test]
fn a_dockerd_restart_is_survived_without_manual_steps() {
    let mut c = Cluster::new("dockerd", 3);
    c.launch_scenario(&[]);
    let a1 = c[0].run_container("", "a1");
    let s1 = c[0].run_container("10.0.1.1/24", "s1");
    c[1].run_container("", "b2");
    c[1].run_container("10.0.1.2/24", "s2");
    let agent = c[1].agent_pid();

    // Its containers stop with it (no live-restore): their addresses are free.
    c[1].restart_dockerd();
    let h2 = &c[1];
    wait_until(
        "h2's weave ps to drop the containers that died",
        REJOIN,
        || h2.ps().is_empty().then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(h2.agent_pid(), agent, "the agent rode it out");

    // The agent talks to the new dockerd: run, and the freed explicit address
    // is available again.
    let b2 = h2.run_container("", "b2again");
    let s2 = h2.run_container("10.0.1.2/24", "s2again");
    assert_no_duplicate_addresses(&c);
    let (h1, h3) = (&c[0], &c[2]);
    let d3 = h3.run_container("", "d3");
    assert_all_reach_all(&[(h1, &a1), (h2, &b2), (h3, &d3)]);
    h2.assert_ping(&s2, "10.0.1.1");
    h1.assert_ping(&s1, "10.0.1.2");
    for h in c.hosts() {
        assert_ps_matches_containers(h);
    }
}

// ---------------------------------------------------------------------------
// A peer rebooting: agent, dockerd and network state all gone at once
// ---------------------------------------------------------------------------

#[test]
fn a_rebooted_peer_rejoins_and_its_old_addresses_are_reused_safely() {
    let mut c = Cluster::new("reboot", 3);
    let [_, n2, _] = c.launch_scenario(&[]);
    let a1 = c[0].run_container("", "a1");
    c[1].run_container("", "b2");
    let d3 = c[2].run_container("", "d3");

    c[1].kill_agent();
    c[1].restart_dockerd();
    forget_network_state(&c[1]);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    h1.wait_established(&["h3"], DEAD_PEER);

    assert_eq!(h2.launch(&[]), n2, "same state directory, same peer name");
    c.wait_full_mesh(REJOIN);
    assert!(
        h2.ps().is_empty(),
        "the containers that died with the reboot are forgotten: {:?}",
        h2.ps()
    );
    let b2 = h2.run_container("", "b2again");
    assert_no_duplicate_addresses(&c);
    for h in c.hosts() {
        assert_ps_matches_containers(h);
    }
    assert_all_reach_all(&[(h1, &a1), (h2, &b2), (h3, &d3)]);
}

// ---------------------------------------------------------------------------
// A stranger floods the control port
// ---------------------------------------------------------------------------

/// Connections a stranger opens to a peer's control port and holds, sending
/// nothing.
const FLOOD: usize = 3000;

/// Raises this process's open-file limit to its hard limit: the flood holds
/// [`FLOOD`] sockets.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid resource and a pointer to a live,
    // initialised struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0
        }
    };
    assert!(
        ok && limit.rlim_cur as usize > FLOOD + 1024,
        "cannot raise the open-file limit for the flood: {limit:?}"
    );
}

/// File descriptors the process `pid` holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A stranger opens thousands of connections to a peer's control port and
/// never says hello: the peer takes only a bounded number into handshakes
/// (the rest are closed at once and counted), its descriptors stay bounded,
/// and its connection to the other peer stays up throughout.
#[test]
fn a_connection_flood_from_a_stranger_is_bounded() {
    raise_nofile_limit();
    let c = Cluster::new("flood", 3);
    let (h1, h2, stranger) = (&c[0], &c[1], &c[2]);
    h1.launch(&[]);
    h2.launch(&[&h1.lan_addr()]);
    h1.wait_established(&["h2"], CONVERGE);
    let pid = h1.agent_pid();
    let fds_before = open_fds(pid);

    let target: std::net::SocketAddr = format!("{}:6783", h1.lan_addr()).parse().unwrap();
    let held = stranger
        .netns()
        .run_inside(|| {
            (0..FLOOD)
                .filter_map(|_| {
                    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)).ok()
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert!(
        held.len() >= FLOOD / 2,
        "only {} connections opened",
        held.len()
    );

    // While the stranger holds them all: bounded, counted, still meshed.
    let fds = open_fds(pid);
    assert!(
        fds <= fds_before + 200,
        "the agent holds {fds} descriptors during the flood ({fds_before} before)"
    );
    let st = h1.status();
    eprintln!(
        "flood: {} connections held; the agent's descriptors {fds_before} before, {fds} during; \
         {} refused over the limits",
        held.len(),
        st.mesh.counters.connections_over_limit
    );
    assert!(
        st.mesh.counters.connections_over_limit > 0,
        "the refused connections are counted: {:?}",
        st.mesh.counters
    );
    h1.wait_established(&["h2"], CONVERGE);
    drop(held);
    h1.wait_established(&["h2"], CONVERGE);
}
