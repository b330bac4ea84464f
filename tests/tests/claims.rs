//! Integration tests of address claims across two simulated hosts (issue
//! 15, item 1), as Weave's IPAM made them: an explicit address in space
//! another peer owns is claimed from that peer, which hands it over when it
//! is free, refuses naming the container that holds it, and, unreachable,
//! makes the claim wait (shown in `weave status ipam`) until it is back; a
//! peer that lost its saved ring while its containers kept their addresses
//! claims them back before any other address is handed out, so that no
//! address is ever in use twice; and one whose whole state directory was
//! wiped (container records too) finds its running containers' ports and
//! addresses in the kernel and does the same.
//!
//! The control plane alone decides claims, so the suite runs once, on the
//! harness's default data plane (`cargo xtask test` does not repeat it on
//! xdp and fastdp). Needs root, dockerd and the `weave` binary
//! (`WEAVE_BIN`); run with `cargo xtask test`.

use std::net::Ipv4Addr;
use std::time::Duration;

use weave_tests::convergence::CONVERGE;
use weave_tests::{Cluster, Host, IMAGE, no_address_twice};

/// Gossip of the ring must reach the other peer (and a stopped peer be
/// noticed) within this.
const GOSSIP: Duration = Duration::from_secs(30);

/// `weave run ARGS... busybox sleep 3600` that must succeed; the container's
/// short id and addresses.
#[track_caller]
fn run(h: &Host, args: &[&str]) -> (String, Vec<String>) {
    let out = try_run(h, args);
    assert!(out.success(), "{}: {out}", h.nickname());
    let id = out.stdout.trim()[..12].to_string();
    let cidrs = h
        .ps()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("{}: {id} not in weave ps", h.nickname()))
        .cidrs;
    (id, cidrs)
}

fn try_run(h: &Host, args: &[&str]) -> weave_tests::Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    h.weave(&all)
}

/// Waits until `h` no longer reaches `peer` (a nickname).
#[track_caller]
fn wait_unreachable(h: &Host, peer: &str) {
    h.wait_status(&format!("{peer} unreachable"), GOSSIP, |s| {
        let reachable = s
            .ipam
            .peers
            .iter()
            .any(|p| p.nickname.as_deref() == Some(peer) && p.reachable);
        anyhow::ensure!(!reachable, "{peer} still reachable");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn explicit_addresses_are_claimed_from_their_owner_and_a_lost_ring_is_reclaimed() {
    let c = Cluster::new("clm", 2);
    let (h1, h2) = (&c[0], &c[1]);

    // h1 owns the range, then gives h2 half of it (10.40.0.0/13).
    h1.launch(&[]);
    let (_, a) = run(h1, &[]);
    assert_eq!(a, ["10.32.0.1/12"]);
    h2.launch(&[&h1.lan_addr()]);
    h2.wait_established(&["h1"], CONVERGE);
    let (on_h2, b) = run(h2, &["--name", "keeper"]);
    assert_eq!(b, ["10.40.0.1/12"]);

    // A free address of h2's space, asked for on h1: h2 hands it over.
    let (on_h1, got) = run(h1, &["10.40.0.5/12", "--name", "taker"]);
    assert_eq!(got, ["10.40.0.5/12"]);
    h1.assert_ping(&on_h1, "10.40.0.1");
    // Held now, on either side: the owner refuses and names the holder.
    let out = try_run(h2, &["10.40.0.5/12"]);
    assert!(
        !out.success()
            && out.stderr.contains("cannot claim 10.40.0.5")
            && out.stderr.contains("in use by container taker on peer h1"),
        "{out}"
    );
    let out = try_run(h1, &["10.40.0.1/12"]);
    assert!(
        !out.success() && out.stderr.contains("in use by container keeper on peer h2"),
        "{out}"
    );

    // The owner is away: the claim waits, shown in the status, and goes
    // through once the owner is back.
    h2.weave_ok(&["stop"]);
    wait_unreachable(h1, "h2");
    let wanted: Ipv4Addr = "10.40.0.9".parse().unwrap();
    std::thread::scope(|s| {
        let claim = s.spawn(|| try_run(h1, &["10.40.0.9/12"]));
        h1.wait_status(
            "a pending claim of 10.40.0.9 from unreachable h2",
            GOSSIP,
            |s| {
                let pending = s
                    .ipam
                    .claims
                    .iter()
                    .any(|c| c.addr == wanted && !c.owner_reachable && c.refused.is_none());
                anyhow::ensure!(
                    pending && s.ipam.pending_allocates == 1,
                    "claims: {:?}",
                    s.ipam.claims
                );
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let text = h1.weave_ok(&["status", "ipam"]);
        assert!(
            text.contains("claiming 10.40.0.9 for run/attach from")
                && text.contains("(h2) - unreachable!"),
            "{text}"
        );
        h2.launch(&[]);
        let out = claim.join().expect("the claiming run");
        assert!(
            out.success(),
            "the claim must go through once h2 is back: {out}"
        );
    });
    assert!(h1.status().ipam.claims.is_empty());
    no_address_twice(&[h1, h2]).unwrap_or_else(|e| panic!("{e:#}"));

    // h2 goes away and loses its saved ring, its container keeping
    // 10.40.0.1; h1 takes over h2's space meanwhile (rmpeer), so its ring
    // says 10.40.0.1 is h1's. Relaunched, h2 claims it back from h1 before
    // anything else is handed out.
    h2.weave_ok(&["stop"]);
    wait_unreachable(h1, "h2");
    h1.weave_ok(&["rmpeer", "h2"]);
    let state_file = h2.state_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["ring"] = serde_json::Value::Null;
    std::fs::write(&state_file, state.to_string()).unwrap();
    h2.launch(&[]);
    h2.wait_established(&["h1"], CONVERGE);
    h2.wait_status("10.40.0.1 re-claimed from h1", GOSSIP, |s| {
        anyhow::ensure!(
            s.ipam.claims.is_empty() && s.ipam.ring_id.is_some(),
            "claims: {:?}, status {}",
            s.ipam.claims,
            s.ipam.status
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        h2.ps()
            .iter()
            .any(|e| e.id == on_h2 && e.cidrs == ["10.40.0.1/12"])
    );
    // Every peer allocates where 10.40.0.1 lives: never that address.
    for _ in 0..3 {
        run(h1, &["net:10.40.0.0/24"]);
        run(h2, &["net:10.40.0.0/24"]);
    }
    no_address_twice(&[h1, h2]).unwrap_or_else(|e| panic!("{e:#}"));
    h1.assert_ping(&on_h1, "10.40.0.1");
}

#[test]
fn a_wiped_state_dir_keeps_the_addresses_running_containers_hold() {
    let c = Cluster::new("clw", 2);
    let (h1, h2) = (&c[0], &c[1]);
    h1.launch(&[]);
    let (on_h1, _) = run(h1, &[]);
    h2.launch(&[&h1.lan_addr()]);
    h2.wait_established(&["h1"], CONVERGE);
    let (on_h2, b) = run(h2, &[]);
    assert_eq!(b, ["10.40.0.1/12"]);
    let before = h2.ps();

    // h2 goes away and its whole state directory with it (records, ring,
    // peer name; the log is kept to read on failure) while its container
    // keeps running with 10.40.0.1. As Weave asks, the lost peer is
    // removed from the others (rmpeer), so h1's ring says 10.40.0.1 is h1's.
    h2.weave_ok(&["stop"]);
    wait_unreachable(h1, "h2");
    h1.weave_ok(&["rmpeer", "h2"]);
    for entry in std::fs::read_dir(h2.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "agent.log") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }

    // What an attach the agent died in leaves: a port whose container side
    // is `ethwe` without an address (`weave run` failed with the agent).
    let half = h2
        .docker_ok(&["run", "-d", IMAGE, "sleep", "3600"])
        .trim()
        .to_string();
    let pid = h2.container_pid(&half).to_string();
    let half_port = format!("vethwepl{pid}");
    h2.netns()
        .exec(
            "ip",
            &[
                "link", "add", &half_port, "type", "veth", "peer", "name", "ethwe", "netns", &pid,
            ],
        )
        .expect_ok();

    // Relaunched, h2 finds the container's port, keeps it with the
    // address the container holds, and claims it back from h1; the port
    // without an address goes.
    h2.launch(&[&h1.lan_addr()]);
    assert!(
        !h2.link_names().contains(&half_port),
        "the port of an unfinished attach is removed: {:?}",
        h2.link_names()
    );
    assert!(
        !h2.exec(&half, &["test", "-e", "/sys/class/net/ethwe"])
            .success(),
        "its ethwe went with it"
    );
    assert!(
        !h2.ps().iter().any(|e| half.starts_with(&e.id)),
        "weave ps does not list it: {:?}",
        h2.ps()
    );
    h2.wait_established(&["h1"], CONVERGE);
    h2.wait_status("10.40.0.1 re-claimed from h1", GOSSIP, |s| {
        anyhow::ensure!(
            s.ipam.claims.is_empty() && s.ipam.ring_id.is_some(),
            "claims: {:?}, status {}",
            s.ipam.claims,
            s.ipam.status
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let after = h2.ps();
    let kept = after.iter().find(|e| e.id == on_h2);
    assert_eq!(
        kept,
        before.iter().find(|e| e.id == on_h2),
        "weave ps after the relaunch: {after:?}"
    );
    h1.assert_ping(&on_h1, "10.40.0.1");
    // Every peer allocates where 10.40.0.1 lives: never that address.
    for _ in 0..3 {
        run(h1, &["net:10.40.0.0/24"]);
        run(h2, &["net:10.40.0.0/24"]);
    }
    no_address_twice(&[h1, h2]).unwrap_or_else(|e| panic!("{e:#}"));
    h1.assert_ping(&on_h1, "10.40.0.1");
}
