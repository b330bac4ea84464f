//! Integration tests of IP address management across three simulated hosts,
//! and of subnet isolation across hosts (issue 4).
//!
//! What they prove: the first container on the first host gets 10.32.0.1/12
//! and the first on a second host 10.40.0.1/12; 200 containers started at
//! once on three hosts get 200 distinct addresses; after an agent restart
//! every container keeps its address and nothing is handed out twice;
//! addresses of removed or detached containers come back; `weave reset`
//! hands a peer's space over and `weave rmpeer` takes over a dead peer's,
//! which is then reused without duplicates; two separately initialised rings
//! refuse each other; two groups of peers started apart (2 and 3 of 5)
//! start one ring, the majority's, which the minority adopts once they
//! meet; the first ping to a container given an address just donated is
//! answered, 20 times in a row; and subnets isolate containers across
//! hosts, even when
//! a container adds routes, changes its address, or sends crafted ARP.
//!
//! Each test builds its own three hosts (see `multi_host.rs`) and removes them,
//! also when it fails. Every wait polls against a deadline. Agents run on
//! the data plane `WEAVE_TEST_DATAPLANE` names: `cargo xtask test` runs the
//! suite on plain, xdp and fastdp, so isolation holds on each.
//!
//! Needs root, dockerd, nftables, tcpdump and the `weave` binary (`WEAVE_BIN`);
//! run with `cargo xtask test`, which runs them one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use weave_agent::status::IpamPeerStatus;
use weave_tests::convergence::CONVERGE;
use weave_tests::{Cluster, Host, IMAGE, Output, wait_for};

/// Gossip of the ring must reach every peer (and a dead peer be noticed)
/// within this.
const GOSSIP: Duration = Duration::from_secs(30);
/// Containers started at once across the three hosts.
const CONCURRENT: usize = 200;
/// `weave run`s in flight at once per host.
const PER_HOST_PARALLEL: usize = 12;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `weave run ARGS... busybox sleep 3600`; the container id and addresses.
#[track_caller]
fn run(h: &Host, args: &[&str]) -> (String, Vec<String>) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    let id = h.weave_ok(&all).trim().to_string();
    assert_eq!(id.len(), 64, "weave run prints the container id: {id:?}");
    let cidrs = ps(h)
        .remove(&id)
        .unwrap_or_else(|| panic!("{}: {id} not in weave ps", h.nickname()));
    (id, cidrs)
}

/// `weave ps`: full container id → its CIDRs.
fn ps(h: &Host) -> BTreeMap<String, Vec<String>> {
    let full: BTreeMap<String, String> = h
        .containers()
        .into_iter()
        .map(|id| (id[..12].to_string(), id))
        .collect();
    h.ps()
        .into_iter()
        .map(|e| (full.get(&e.id).cloned().unwrap_or(e.id), e.cidrs))
        .collect()
}

/// Every address in use on `hosts`, asserting none appears twice.
#[track_caller]
fn all_addresses(hosts: &[&Host]) -> BTreeSet<Ipv4Addr> {
    let mut seen: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for h in hosts {
        for (id, cidrs) in ps(h) {
            for cidr in cidrs {
                let addr: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
                let here = format!("{}:{}", h.nickname(), &id[..12]);
                if let Some(other) = seen.insert(addr, here.clone()) {
                    panic!("{addr} handed out twice: to {other} and to {here}");
                }
            }
        }
    }
    seen.into_keys().collect()
}

/// The peers that own part of the range, as `h` sees them.
fn ipam(h: &Host) -> Vec<IpamPeerStatus> {
    h.status().ipam.peers
}

/// Waits until the IPAM peers `h` sees satisfy `check`.
#[track_caller]
fn wait_ipam(
    h: &Host,
    what: &str,
    check: impl Fn(&[IpamPeerStatus]) -> bool,
) -> Vec<IpamPeerStatus> {
    h.wait_status(what, GOSSIP, |s| {
        let peers = &s.ipam.peers;
        anyhow::ensure!(check(peers), "ipam peers: {peers:#?}");
        Ok(peers.clone())
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Addresses of the range owned by `peers` together.
fn owned(peers: &[IpamPeerStatus]) -> u64 {
    peers.iter().map(|p| u64::from(p.owned)).sum()
}

fn nickname_is(p: &IpamPeerStatus, nickname: &str) -> bool {
    p.nickname.as_deref() == Some(nickname)
}

/// `weave run` of `n` containers on `h`, `PER_HOST_PARALLEL` at a time.
fn run_many(h: &Host, n: usize) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PER_HOST_PARALLEL {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let out = h.weave(&["run", "-d", IMAGE, "sleep", "3600"]);
                    let id = out.expect_ok().trim().to_string();
                    ids.lock().unwrap().push(id);
                }
            });
        }
    });
    ids.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn addresses_are_unique_across_hosts_survive_restarts_and_come_back() {
    let c = Cluster::new("ipa", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);

    // The first container on the first host: h1 alone claims the range.
    h1.launch(&[]);
    let (first, cidrs) = run(h1, &[]);
    assert_eq!(cidrs, ["10.32.0.1/12"]);
    assert_eq!(h1.ethwe_cidrs(&first), ["10.32.0.1/12"]);
    assert_eq!(h1.status().ipam.status, "ready");

    // A second host joins and runs its first container: h1 gives it half.
    h2.launch(&[&h1.lan_addr()]);
    h2.wait_established(&["h1"], CONVERGE);
    let (second, cidrs) = run(h2, &[]);
    assert_eq!(cidrs, ["10.40.0.1/12"]);
    assert_eq!(h2.ethwe_cidrs(&second), ["10.40.0.1/12"]);
    wait_ipam(h1, "h1 and h2 own half each", |p| {
        p.len() == 2 && p.iter().all(|p| p.percent == 50.0 && p.reachable)
    });
    h1.assert_ping(&first, "10.40.0.1");

    h3.launch(&[&h1.lan_addr()]);
    h3.wait_established(&["h1", "h2"], CONVERGE);

    // 200 at once, across the three hosts, through the CLI.
    let per_host = [
        CONCURRENT / 3,
        CONCURRENT / 3,
        CONCURRENT - 2 * (CONCURRENT / 3),
    ];
    let started: Vec<Vec<String>> = std::thread::scope(|s| {
        let runs: Vec<_> = [h1, h2, h3]
            .into_iter()
            .zip(per_host)
            .map(|(h, n)| s.spawn(move || run_many(h, n)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(started.iter().map(Vec::len).sum::<usize>(), CONCURRENT);
    let before = all_addresses(&[h1, h2, h3]);
    assert_eq!(before.len(), CONCURRENT + 2, "{before:?}");
    let views = wait_ipam(h3, "three owners, all of the range", |p| {
        p.len() == 3 && owned(p) == 1 << 20
    });
    assert!(views.iter().all(|p| p.reachable), "{views:#?}");

    // Restart every agent (a crash for h2): everyone keeps its address.
    let ps_before: Vec<_> = [h1, h2, h3].iter().map(|h| ps(h)).collect();
    h2.kill_agent();
    h1.weave_ok(&["stop"]);
    h3.weave_ok(&["stop"]);
    for h in [h1, h2, h3] {
        h.launch(&[]);
    }
    for (h, before) in [h1, h2, h3].iter().zip(&ps_before) {
        assert_eq!(&ps(h), before, "{}: weave ps after a restart", h.nickname());
    }
    h1.wait_established(&["h2", "h3"], CONVERGE);
    // New containers never get an address already in use.
    let more: Vec<String> = [h1, h2, h3].iter().flat_map(|h| run_many(h, 3)).collect();
    assert_eq!(more.len(), 9);
    let after = all_addresses(&[h1, h2, h3]);
    assert_eq!(after.len(), CONCURRENT + 2 + 9);
    assert!(before.is_subset(&after));

    // Released addresses come back: a removed container's (Docker tells the
    // agent), and a detached one's.
    h1.docker_ok(&["rm", "-f", &first]);
    wait_for("h1 to release 10.32.0.1", GOSSIP, || {
        anyhow::ensure!(!ps(h1).contains_key(&first), "still attached");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (_, cidrs) = run(h1, &[]);
    assert_eq!(cidrs, ["10.32.0.1/12"]);
    h2.weave_ok(&["detach", &second]);
    let (_, cidrs) = run(h2, &[]);
    assert_eq!(cidrs, ["10.40.0.1/12"]);
    all_addresses(&[h1, h2, h3]);
}

#[test]
fn reset_and_rmpeer_hand_space_over_and_separate_rings_refuse_each_other() {
    let c = Cluster::new("ipr", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);

    // Two rings initialised separately meet: both refuse, nothing merges.
    h1.launch(&[]);
    h2.launch(&[]);
    let (_, a) = run(h1, &[]);
    let (_, b) = run(h2, &[]);
    assert_eq!(a, ["10.32.0.1/12"]);
    assert_eq!(b, ["10.32.0.1/12"]);
    h2.weave_ok(&["connect", &h1.lan_addr()]);
    h2.wait_established(&["h1"], CONVERGE);
    for h in [h1, h2] {
        h.wait_status("the IPAM status to refuse the other ring", GOSSIP, |s| {
            let line = &s.ipam.status;
            anyhow::ensure!(
                line.contains("refusing the ring of peer")
                    && line.contains("initialised separately"),
                "IPAM status: {line}"
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        let peers = ipam(h);
        assert_eq!(peers.len(), 1, "{}: {peers:#?}", h.nickname());
    }

    // h2 starts over (reset), joins h1's ring; h3 joins too.
    h2.weave_ok(&["reset"]);
    h2.launch(&[&h1.lan_addr()]);
    h3.launch(&[&h1.lan_addr()]);
    h1.wait_established(&["h2", "h3"], CONVERGE);
    let (_, c2) = run(h2, &[]);
    let (_, c3) = run(h3, &[]);
    assert_eq!(h1.status().ipam.status, "ready");
    all_addresses(&[h1, h2, h3]);
    assert_ne!(c2, c3);
    wait_ipam(h1, "three owners", |p| p.len() == 3);

    // h2 leaves with reset: its space goes to another peer.
    h2.weave_ok(&["reset"]);
    let left = wait_ipam(h1, "h2's space handed over", |p| {
        p.len() == 2 && owned(p) == 1 << 20
    });
    assert!(left.iter().all(|p| !nickname_is(p, "h2")), "{left:#?}");

    // h3 dies: its space is unreachable until rmpeer.
    let h3_addrs: Vec<String> = ps(h3).into_values().flatten().collect();
    let h3_name = ipam(h1)
        .into_iter()
        .find(|p| nickname_is(p, "h3"))
        .expect("h3 owns space")
        .name;
    h3.kill_agent();
    // Gone, it is still shown, and named, by its nickname.
    wait_ipam(h1, "h3 unreachable", |p| {
        p.iter()
            .any(|p| p.name == h3_name && !p.reachable && nickname_is(p, "h3"))
    });
    let out = h1.weave(&["rmpeer", "nosuchpeer"]);
    assert!(
        !out.success() && out.stderr.contains("unknown peer nosuchpeer"),
        "{out}"
    );
    let out = h1.weave_ok(&["rmpeer", "h3"]);
    assert!(
        out.contains(&format!("IPs taken over from {h3_name}")),
        "{out}"
    );
    let peers = wait_ipam(h1, "h1 owns everything", |p| p.len() == 1);
    assert_eq!(peers[0].percent, 100.0);
    // What h3 handed out is h1's to give now: claimed explicitly, then
    // automatic addresses never collide with them.
    for cidr in &h3_addrs {
        let (_, got) = run(h1, &[cidr]);
        assert_eq!(got, [cidr.as_str()]);
    }
    run_many(h1, 5);
    all_addresses(&[h1]);
    // rmpeer of ourselves is refused.
    let h1_name = peers[0].name.to_string();
    let out = h1.weave(&["rmpeer", &h1_name]);
    assert!(!out.success(), "rmpeer of ourselves must fail: {out}");
}

#[test]
fn subnets_isolate_containers_across_hosts() {
    let c = Cluster::new("ipi", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    h1.launch(&[]);
    h2.launch(&[&h1.lan_addr()]);
    h3.launch(&[&h1.lan_addr()]);
    h1.wait_established(&["h2", "h3"], CONVERGE);
    h2.wait_established(&["h1", "h3"], CONVERGE);

    let (a, _) = run(h1, &["10.0.1.1/24"]);
    let (b, _) = run(h2, &["10.0.1.2/24"]);
    let (cc, _) = run(h2, &["10.0.2.2/24"]);
    let (d, _) = run(h3, &["10.0.2.1/24"]);
    let (e1, e1_cidrs) = run(h1, &[]);
    let (e3, e3_cidrs) = run(h3, &[]);
    let addr = |cidrs: &[String]| cidrs[0].split('/').next().unwrap().to_string();
    let (e1_addr, e3_addr) = (addr(&e1_cidrs), addr(&e3_cidrs));

    // Positive controls: the pairs of one subnet, both ways, across hosts.
    h1.assert_ping(&a, "10.0.1.2");
    h2.assert_ping(&b, "10.0.1.1");
    h2.assert_ping(&cc, "10.0.2.1");
    h3.assert_ping(&d, "10.0.2.2");
    h1.assert_ping(&e1, &e3_addr);

    let no_other_pair = |stage: &str| {
        eprintln!("isolation: {stage}");
        for (h, who, targets) in [
            (
                h1,
                &a,
                vec!["10.0.2.2", "10.0.2.1", e1_addr.as_str(), e3_addr.as_str()],
            ),
            (
                h2,
                &b,
                vec!["10.0.2.2", "10.0.2.1", e1_addr.as_str(), e3_addr.as_str()],
            ),
            (
                h2,
                &cc,
                vec!["10.0.1.1", "10.0.1.2", e1_addr.as_str(), e3_addr.as_str()],
            ),
            (
                h3,
                &d,
                vec!["10.0.1.1", "10.0.1.2", e1_addr.as_str(), e3_addr.as_str()],
            ),
            (h1, &e1, vec!["10.0.1.2", "10.0.2.1", "10.0.2.2"]),
            (h3, &e3, vec!["10.0.1.1", "10.0.1.2", "10.0.2.2"]),
        ] {
            for target in targets {
                h.assert_no_ping(who, target);
            }
        }
    };
    no_other_pair("as configured");

    // Everyone routes the other subnets through ethwe.
    for (h, who) in [
        (h1, &a),
        (h2, &b),
        (h2, &cc),
        (h3, &d),
        (h1, &e1),
        (h3, &e3),
    ] {
        for net in ["10.0.1.0/24", "10.0.2.0/24", "10.32.0.0/12"] {
            let _ = h
                .container_command(who, "ip")
                .args(["route", "add", net, "dev", "ethwe"])
                .output();
        }
    }
    no_other_pair("with routes to every subnet");
    h1.assert_ping(&a, "10.0.1.2");

    // d (h3, 10.0.2.1) takes an address in a's and b's subnet and drops its
    // own: it still reaches neither, nor do they reach it.
    h3.container_ip(&d, &["addr", "add", "10.0.1.3/24", "dev", "ethwe"]);
    h3.container_ip(&d, &["addr", "del", "10.0.2.1/24", "dev", "ethwe"]);
    assert_eq!(h3.ethwe_cidrs(&d), ["10.0.1.3/24"]);
    h3.assert_no_ping(&d, "10.0.1.1");
    h3.assert_no_ping(&d, "10.0.1.2");
    h1.assert_no_ping(&a, "10.0.1.3");
    h2.assert_no_ping(&b, "10.0.1.3");
    h3.container_ip(&d, &["addr", "del", "10.0.1.3/24", "dev", "ethwe"]);
    h3.container_ip(&d, &["addr", "add", "10.0.2.1/24", "dev", "ethwe"]);

    // Crafted ARP reaching b (h2, 10.0.1.2): a's legitimate request does
    // (the capture works); d's, whether it claims a's address or its own,
    // never does; nor does a request from the default subnet.
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut capture = h2.capture_in_container(&b, &["arp"]).unwrap();
    h1.send_arp(&a, ip("10.0.1.1"), ip("10.0.1.2"));
    capture
        .wait_decoded(&["-n", "-e"], Duration::from_secs(20), |d| {
            d.contains("tell 10.0.1.1")
        })
        .unwrap_or_else(|e| panic!("a's own ARP must reach b: {e:#}"));
    h3.send_arp(&d, ip("10.0.1.1"), ip("10.0.1.2"));
    h3.send_arp(&d, ip("10.0.2.1"), ip("10.0.1.2"));
    h3.send_arp(&e3, ip(&e3_addr), ip("10.0.1.2"));
    h3.send_arp(&e3, ip("10.0.1.9"), ip("10.0.1.2"));
    // A marker sent after them, from a: once it arrived, so would have
    // they (the same overlay, a shorter path for them than for it).
    h1.send_arp(&a, ip("10.0.1.1"), ip("10.0.1.254"));
    let seen = capture
        .wait_decoded(&["-n", "-e"], Duration::from_secs(20), |d| {
            d.contains("who-has 10.0.1.254")
        })
        .unwrap_or_else(|e| panic!("the marker ARP must reach b: {e:#}"));
    capture.stop().unwrap();
    let d_mac = h3.ethwe_mac(&d);
    let e3_mac = h3.ethwe_mac(&e3);
    for mac in [d_mac, e3_mac] {
        let text = mac.map(|b| format!("{b:02x}")).join(":");
        assert!(
            !seen.contains(&text),
            "an ARP from {text} (h3) reached b:\n{seen}"
        );
    }
    for spoof in ["tell 10.0.2.1", "tell 10.0.1.9", &format!("tell {e3_addr}")] {
        assert!(!seen.contains(spoof), "`{spoof}` reached b:\n{seen}");
    }
    // And the pairs still work.
    h3.assert_ping(&d, "10.0.2.2");
    h2.assert_ping(&b, "10.0.1.1");
}

/// Issue 14, item 2: five peers, each launched with the four others, start
/// in two groups that cannot reach each other (2 and 3). The minority never
/// initialises a ring however long it asks; the majority agrees on one,
/// shared among its three peers; once the groups meet, the minority adopts
/// it and no address is handed out twice. (A lone peer launched without
/// peers still starts the ring at once: the tests above start that way.)
#[test]
fn groups_started_apart_start_one_ring_and_the_minority_waits() {
    // dockerd only where containers run: one host in each group.
    let c = Cluster::with_docker_on("ipq", 5, |i| i == 1 || i == 3);
    let hosts: Vec<&Host> = (0..5).map(|i| &c[i]).collect();
    let (minority, majority) = hosts.split_at(2);
    for a in minority {
        for b in majority {
            c.block(a, b);
        }
    }
    let lan: Vec<String> = hosts.iter().map(|h| h.lan_addr()).collect();
    for (i, h) in hosts.iter().enumerate() {
        let others: Vec<&str> = lan
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.as_str())
            .collect();
        h.launch(&others);
    }
    let (h1, h3) = (hosts[0], hosts[2]);
    h1.wait_established(&["h2"], CONVERGE);
    h3.wait_established(&["h4", "h5"], CONVERGE);

    // The minority asks first, and keeps asking in the background.
    let asking = std::thread::scope(|scope| {
        let minority_prime = scope.spawn(|| h1.weave(&["prime", "--timeout", "120"]));
        h1.wait_status("h1 to wait for a majority", GOSSIP, |s| {
            anyhow::ensure!(
                s.ipam.status == "waiting for consensus: 3 of 5 peers must agree, 2 reachable",
                "{}",
                s.ipam.status
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));

        // The majority agrees: one ring shared by its three peers.
        h3.weave_ok(&["prime", "--timeout", "60"]);
        let ring = h3.status().ipam;
        let ring_id = ring.ring_id.expect("h3 primed: the ring exists");
        let owners: BTreeSet<String> = ring
            .peers
            .iter()
            .filter_map(|p| p.nickname.clone())
            .collect();
        assert_eq!(owners, ["h3", "h4", "h5"].map(String::from).into());
        for h in &hosts[3..] {
            wait_ipam(h, "the majority's ring", |p| p.len() == 3);
        }
        // However long it asked, the minority started nothing.
        for h in minority {
            let ipam = h.status().ipam;
            assert_eq!(ipam.ring_id, None, "{}: {}", h.nickname(), ipam.status);
        }
        assert!(
            !minority_prime.is_finished(),
            "h1's prime returned before a ring existed"
        );

        // The groups meet: one ring, the majority's, everywhere.
        for a in minority {
            for b in majority {
                c.unblock(a, b);
            }
        }
        c.wait_full_mesh(CONVERGE);
        wait_for("h1's prime to return", GOSSIP, || {
            anyhow::ensure!(minority_prime.is_finished(), "still waiting");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        let primed = minority_prime.join().expect("the prime thread");
        assert!(primed.success(), "weave prime on h1: {primed:?}");
        ring_id
    });
    for h in &hosts {
        h.wait_status("the one ring", GOSSIP, |s| {
            anyhow::ensure!(
                s.ipam.ring_id == Some(asking),
                "ring {:?}: {}",
                s.ipam.ring_id,
                s.ipam.status
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    // Both groups' hosts allocate: no address twice.
    for _ in 0..3 {
        run(h1, &[]);
        run(h3, &[]);
    }
    weave_tests::no_address_twice(&[h1, h3]).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Rounds of the first ping after a donation (issue 15, item 3).
const DONATIONS: usize = 20;

/// One ping (`-c 1 -W 2`) from the network namespace `netns` (a
/// container's, looked up once so that nothing comes between an attach
/// and the ping) to `addr`.
fn one_ping(netns: &std::path::Path, addr: &str) -> Output {
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={}", netns.display()))
        .args(["ping", "-n", "-c", "1", "-W", "2", addr]);
    weave_tests::run(&mut c, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The address `weave attach` printed (its only line).
#[track_caller]
fn attached(h: &Host, args: &[&str]) -> String {
    let mut all = vec!["attach"];
    all.extend_from_slice(args);
    let out = h.weave_ok(&all);
    let addr = out.trim();
    assert!(
        addr.parse::<Ipv4Addr>().is_ok(),
        "weave attach printed {out:?}"
    );
    addr.to_owned()
}

/// Issue 15, item 3: the first packet to a container whose address h1 has
/// just donated to h2, behind a MAC nobody has learnt, is delivered (the
/// ARP request floods, the reply and the ping follow), in every round.
#[test]
fn the_first_ping_after_a_donation_is_answered() {
    let c = Cluster::new("ipf", 2);
    let (h1, h2) = (&c[0], &c[1]);
    // h1 alone claims the range, so every subnet below is its to give.
    h1.launch(&[]);
    let (a, _) = run(h1, &[]);
    h2.launch(&[&h1.lan_addr()]);
    h2.wait_established(&["h1"], CONVERGE);
    h1.wait_established(&["h2"], CONVERGE);
    let b = h2.docker_ok(&["run", "-d", IMAGE, "sleep", "3600"]);
    let b = b.trim();
    let (a_ns, b_ns) = (h1.container_netns(&a), h2.container_netns(b));

    // Each round, a subnet nobody used: a's new address in it comes from
    // h1's own space; b's needs h1 to donate part of the subnet to h2. b
    // is attached afresh (a new port, a MAC nobody has learnt), then a
    // pings it once at once, and b answers with a ping of its own.
    let mut lost = Vec::new();
    for round in 0..DONATIONS {
        let subnet = format!("net:10.33.{round}.0/28");
        let from = attached(h1, &[&subnet, &a]);
        let to = attached(h2, &[&subnet, b]);
        let out = one_ping(&a_ns, &to);
        if !out.success() {
            eprintln!("round {round}: the first ping {from} -> {to} was lost:\n{out}");
            lost.push(format!("{round}: {from} -> {to}"));
        }
        let out = one_ping(&b_ns, &from);
        if !out.success() {
            eprintln!("round {round}: the ping back {to} -> {from} was lost:\n{out}");
            lost.push(format!("{round}: {to} -> {from}"));
        }
        // b's port goes with its only address: the next round's is new;
        // a keeps its port (at most four addresses, though).
        h2.weave_ok(&["detach", b]);
        h1.weave_ok(&["detach", &subnet, &a]);
    }
    // Every round was a donation: h2 asked h1 for space in its subnet.
    let log = h2.agent_log();
    for round in 0..DONATIONS {
        let asked = format!("10.33.{round}.0/28");
        assert!(
            log.lines()
                .any(|l| l.contains("asking for space") && l.contains(&asked)),
            "round {round}: h2 never asked for space in {asked}"
        );
    }
    assert!(
        lost.is_empty(),
        "pings lost right after a donation, of {DONATIONS} rounds: {lost:#?}"
    );
}
