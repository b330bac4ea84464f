//! Integration tests on one simulated host: a network namespace with its own
//! dockerd, the weave agent, and busybox containers.
//!
//! What they prove (issue 2): containers with automatic addresses ping each
//! other; subnets are isolated on the bridge, even when a container adds a
//! route or changes its own address; `weave ps` and `weave status` show what
//! is true; `stop` keeps the containers' interfaces and `reset` removes
//! everything; bad input gets a one-line error and changes nothing.
//!
//! Needs root, dockerd and the `weave` binary (`WEAVE_BIN`); run with
//! `cargo xtask test`, which runs them one at a time.

use std::fs;

use weave_tests::report::PsEntry;
use weave_tests::{Host, IMAGE, Output};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn host(test: &str) -> Host {
    Host::new(test, "h1")
}

/// `weave launch`; returns the peer name it prints.
#[track_caller]
fn launch(h: &Host) -> String {
    let out = h.weave_ok(&["launch"]);
    let name = out.trim();
    assert!(
        !name.is_empty() && !name.contains('\n'),
        "weave launch prints the peer name, got {out:?}"
    );
    name.to_string()
}

/// `weave run ARGS... IMAGE sleep 3600`; returns the full container id it prints.
#[track_caller]
fn run(h: &Host, args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    assert_container_id(&h.weave_ok(&all))
}

#[track_caller]
fn assert_container_id(stdout: &str) -> String {
    let id = stdout.trim();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "weave run prints the full container id, got {stdout:?}"
    );
    id.to_string()
}

/// A container started by Docker alone, not attached to weave.
fn docker_container(h: &Host) -> String {
    assert_container_id(&h.docker_ok(&["run", "-d", "--net=none", IMAGE, "sleep", "3600"]))
}

/// The `weave ps` entry of container `id` (full id), which must be listed once.
#[track_caller]
fn ps_entry(h: &Host, id: &str) -> PsEntry {
    let entries = h.ps();
    let mine: Vec<&PsEntry> = entries.iter().filter(|e| e.id == id[..12]).collect();
    assert_eq!(
        mine.len(),
        1,
        "`weave ps` must list {} once: {entries:?}",
        &id[..12]
    );
    mine[0].clone()
}

/// `docker exec` that must succeed.
#[track_caller]
fn exec_ok(h: &Host, container: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", container];
    all.extend_from_slice(args);
    h.docker_ok(&all)
}

fn has_ethwe(h: &Host, container: &str) -> bool {
    h.exec(container, &["test", "-e", "/sys/class/net/ethwe"])
        .success()
}

#[track_caller]
fn ethwe_file(h: &Host, container: &str, file: &str) -> String {
    exec_ok(
        h,
        container,
        &["cat", &format!("/sys/class/net/ethwe/{file}")],
    )
    .trim()
    .to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Asserts the shape of every error: exit 1, nothing on stdout, one line on
/// stderr that begins with `weave: `.
#[track_caller]
fn assert_rejected(out: &Output, what: &str) {
    assert_eq!(out.code, Some(1), "{what}: weave must exit with 1:\n{out}");
    assert!(
        out.stdout.trim().is_empty(),
        "{what}: nothing on stdout:\n{out}"
    );
    let lines = out.stderr_lines();
    assert!(
        lines.len() == 1 && lines[0].starts_with("weave: "),
        "{what}: the error must be one line beginning `weave: `:\n{out}"
    );
}

/// What a failed command must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    containers: Vec<String>,
    /// Each container's ethwe addresses (empty: no ethwe).
    ethwe: Vec<Vec<String>>,
    links: Vec<String>,
    ps: Option<Vec<PsEntry>>,
}

fn snapshot(h: &Host, agent_running: bool) -> Snapshot {
    let containers = h.containers();
    let ethwe = containers
        .iter()
        .map(|c| {
            if has_ethwe(h, c) {
                h.ethwe_cidrs(c)
            } else {
                Vec::new()
            }
        })
        .collect();
    let ps = agent_running.then(|| {
        let mut entries = h.ps();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    });
    Snapshot {
        containers,
        ethwe,
        links: h.link_names(),
        ps,
    }
}

/// What `bpftool net show` lists in the host's namespace (XDP and netlink TC;
/// Debian 12's bpftool 7.1 does not list TCX links).
#[track_caller]
fn bpftool_net_show(h: &Host) -> Vec<String> {
    let out = h.netns().exec("bpftool", &["net", "show"]);
    assert!(out.success(), "bpftool net show:\n{out}");
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .map(str::to_string)
        .collect()
}

/// Every BPF attachment in the host's namespace: the BPF links its processes
/// hold (TCX, XDP), and what bpftool sees.
#[track_caller]
fn bpf_attachments(h: &Host) -> Vec<String> {
    let held = h.netns().bpf_links().unwrap_or_else(|e| panic!("{e:#}"));
    let mut all: Vec<String> = held
        .into_iter()
        .map(|(dev, l)| {
            let dev = dev.as_deref().unwrap_or("?");
            format!(
                "{} link on {dev} ({})",
                l.link_type,
                l.attach_type.as_deref().unwrap_or("-")
            )
        })
        .collect();
    all.extend(bpftool_net_show(h));
    all
}

/// Whether some BPF program is attached to interface `dev` of the host.
#[track_caller]
fn bpf_attached_to(h: &Host, dev: &str) -> bool {
    let held = h.netns().bpf_links().unwrap_or_else(|e| panic!("{e:#}"));
    held.iter().any(|(d, _)| d.as_deref() == Some(dev))
        || bpftool_net_show(h)
            .iter()
            .any(|l| l.starts_with(&format!("{dev}(")))
}

/// The host-side port of a container, `vethwepl<pid>`.
fn port_of(h: &Host, container: &str) -> String {
    format!("vethwepl{}", h.container_pid(container))
}

#[track_caller]
fn assert_on_bridge(h: &Host, container: &str) {
    let port = port_of(h, container);
    let links = h.links();
    let link = links
        .iter()
        .find(|l| l.name == port)
        .unwrap_or_else(|| panic!("no {port} on the host: {links:?}"));
    assert_eq!(
        link.master.as_deref(),
        Some("weave"),
        "{port} must be a port of bridge weave: {link:?}"
    );
}

/// Asserts that `reset` left nothing: only `lo`, no BPF attachment, no state,
/// no socket, no agent.
#[track_caller]
fn assert_nothing_left(h: &Host) {
    assert_eq!(
        h.link_names(),
        ["lo"],
        "after reset only lo remains (no bridge, no vethwe*, no vethwepl*)"
    );
    assert_eq!(
        bpf_attachments(h),
        Vec::<String>::new(),
        "after reset no BPF program is attached"
    );
    assert!(
        !h.bpf_pin_dir().exists(),
        "after reset no pinned BPF link is left in {}",
        h.bpf_pin_dir().display()
    );
    assert!(
        !h.state_dir().exists(),
        "after reset the state dir {} is gone",
        h.state_dir().display()
    );
    assert!(
        !h.socket().exists(),
        "after reset the socket {} is gone",
        h.socket().display()
    );
    assert_eq!(
        h.agent_pids(),
        Vec::<u32>::new(),
        "after reset no agent runs"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn two_containers_with_automatic_addresses_ping_each_other() {
    let h = host("auto");
    launch(&h);
    let a = run(&h, &[]);
    let b = run(&h, &[]);

    assert_eq!(ps_entry(&h, &a).cidrs, ["10.32.0.1/12"]);
    assert_eq!(ps_entry(&h, &b).cidrs, ["10.32.0.2/12"]);
    assert_eq!(h.ethwe_cidrs(&a), ["10.32.0.1/12"]);
    assert_eq!(h.ethwe_cidrs(&b), ["10.32.0.2/12"]);

    let links = h.links();
    let bridge = links
        .iter()
        .find(|l| l.name == "weave")
        .expect("bridge weave exists");
    for id in [&a, &b] {
        assert_on_bridge(&h, id);
        let mac = ethwe_file(&h, id, "address");
        assert_eq!(ps_entry(&h, id).mac, mac, "weave ps shows ethwe's MAC");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert!(
            first & 0x02 != 0 && first & 0x01 == 0,
            "{mac} is a locally administered unicast MAC"
        );
        let mtu: u32 = ethwe_file(&h, id, "mtu").parse().unwrap();
        assert_eq!(Some(mtu), bridge.mtu, "ethwe takes the bridge's MTU");
    }

    h.assert_ping(&a, "10.32.0.2");
    h.assert_ping(&b, "10.32.0.1");
}

#[test]
fn subnets_are_isolated_even_after_route_and_address_changes() {
    let h = host("iso");
    launch(&h);
    let a = run(&h, &["10.0.1.1/24"]);
    let b = run(&h, &["10.0.1.2/24"]);
    let c = run(&h, &["10.0.2.1/24"]);
    for id in [&a, &b, &c] {
        assert_on_bridge(&h, id);
    }

    // Positive control: the same subnet works, both ways.
    h.assert_ping(&a, "10.0.1.2");
    h.assert_ping(&b, "10.0.1.1");

    // 1. As configured.
    h.assert_no_ping(&c, "10.0.1.1");
    h.assert_no_ping(&c, "10.0.1.2");
    h.assert_no_ping(&a, "10.0.2.1");
    h.assert_no_ping(&b, "10.0.2.1");

    // 2. Everyone adds a route to the other subnet through ethwe.
    h.container_ip(&c, &["route", "add", "10.0.1.0/24", "dev", "ethwe"]);
    h.container_ip(&a, &["route", "add", "10.0.2.0/24", "dev", "ethwe"]);
    h.container_ip(&b, &["route", "add", "10.0.2.0/24", "dev", "ethwe"]);
    h.assert_no_ping(&c, "10.0.1.1");
    h.assert_no_ping(&c, "10.0.1.2");
    h.assert_no_ping(&a, "10.0.2.1");
    h.assert_no_ping(&b, "10.0.2.1");
    h.assert_ping(&a, "10.0.1.2");

    // 3. C gives itself an address in A's and B's subnet and drops its own.
    h.container_ip(&c, &["addr", "add", "10.0.1.3/24", "dev", "ethwe"]);
    h.container_ip(&c, &["addr", "del", "10.0.2.1/24", "dev", "ethwe"]);
    assert_eq!(h.ethwe_cidrs(&c), ["10.0.1.3/24"]);
    h.assert_no_ping(&c, "10.0.1.1");
    h.assert_no_ping(&c, "10.0.1.2");
    h.assert_no_ping(&a, "10.0.1.3");
    h.assert_no_ping(&b, "10.0.1.3");

    // A and B are not affected.
    h.assert_ping(&a, "10.0.1.2");
    h.assert_ping(&b, "10.0.1.1");
}

#[test]
fn ps_and_status_show_what_is_true() {
    let h = host("show");
    let peer = launch(&h);

    let status = h.status();
    assert_eq!(
        status.mesh.name.to_string(),
        peer,
        "the peer name launch printed"
    );
    assert!(!status.encryption, "no password, no encryption");
    let mesh = &status.mesh;
    assert_eq!(mesh.peers.len(), 1, "{:#?}", mesh.peers);
    assert!(mesh.connections.is_empty(), "{:#?}", mesh.connections);
    assert_eq!(status.ipam.range.to_string(), "10.32.0.0/12");
    assert_eq!(status.ipam.default_subnet.to_string(), "10.32.0.0/12");
    assert!(
        !status.overlay.is_empty() && !status.classifier.is_empty(),
        "the data planes in use: {status:#?}"
    );
    assert_eq!(status.containers, 0);
    assert_eq!(h.ps(), [], "nothing attached yet");

    let a = run(&h, &["10.0.1.1/24"]);
    let b = run(&h, &[]);
    let c = docker_container(&h);
    assert!(!has_ethwe(&h, &c), "a plain docker container has no ethwe");
    let attached = h.weave_ok(&["attach", "10.0.1.3/24", "10.0.3.3/24", &c]);
    assert_eq!(
        attached.trim(),
        "10.0.1.3 10.0.3.3",
        "attach prints the addresses without prefix, as Weave"
    );
    assert_on_bridge(&h, &c);

    let entries = h.ps();
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (id, cidrs) in [
        (&a, vec!["10.0.1.1/24"]),
        (&b, vec!["10.32.0.1/12"]),
        (&c, vec!["10.0.1.3/24", "10.0.3.3/24"]),
    ] {
        let entry = ps_entry(&h, id);
        assert_eq!(entry.mac, ethwe_file(&h, id, "address"), "MAC of {id}");
        assert_eq!(sorted(entry.cidrs.clone()), cidrs, "weave ps CIDRs of {id}");
        assert_eq!(h.ethwe_cidrs(id), cidrs, "addresses on ethwe of {id}");
    }
    h.assert_ping(&c, "10.0.1.1");

    let c_port = port_of(&h, &c);
    h.weave_ok(&["detach", &c]);
    assert!(!has_ethwe(&h, &c), "detach removes ethwe");
    assert!(!h.link_names().contains(&c_port), "detach removes {c_port}");
    let ids: Vec<String> = h.ps().into_iter().map(|e| e.id).collect();
    assert_eq!(
        sorted(ids),
        sorted(vec![a[..12].to_string(), b[..12].to_string()]),
        "ps after detach"
    );

    let status = h.status();
    assert_eq!(status.mesh.peers.len(), 1);
    assert!(status.mesh.connections.is_empty());
    assert_eq!(status.containers, 2, "a and b are still attached");
}

#[test]
fn run_passes_docker_run_flags() {
    let h = host("flags");
    launch(&h);
    let vol = h.dir().join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("hello"), "hello from the host\n").unwrap();
    let volume = format!("{}:/data", vol.display());

    let id = run(
        &h,
        &[
            "10.0.1.1/24",
            "-itd",
            "--name=wv-flags",
            "-e",
            "FOO=bar",
            "--env",
            "BAZ=qux",
            "-h",
            "flaghost",
            "-l",
            "team=weave",
            "-w",
            "/tmp",
            "-v",
            &volume,
            "--net=none",
        ],
    );
    let seen = h.docker_ok(&[
        "inspect",
        "-f",
        "{{.Name}} {{.Config.Hostname}} {{.Config.WorkingDir}} {{index .Config.Labels \"team\"}} \
         {{.Config.Tty}} {{.Config.OpenStdin}} {{.HostConfig.NetworkMode}}",
        &id,
    ]);
    assert_eq!(seen.trim(), "/wv-flags flaghost /tmp weave true true none");
    let env = exec_ok(&h, &id, &["env"]);
    assert!(
        env.lines().any(|l| l == "FOO=bar") && env.lines().any(|l| l == "BAZ=qux"),
        "{env}"
    );
    assert_eq!(
        exec_ok(&h, &id, &["cat", "/data/hello"]),
        "hello from the host\n"
    );
    assert_eq!(h.ethwe_cidrs(&id), ["10.0.1.1/24"]);

    let id2 =
        assert_container_id(&h.weave_ok(&["run", "--rm", "--entrypoint", "sleep", IMAGE, "3600"]));
    let seen = h.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.AutoRemove}} {{json .Config.Entrypoint}}",
        &id2,
    ]);
    assert_eq!(seen.trim(), "true [\"sleep\"]");
    assert_eq!(ps_entry(&h, &id2).cidrs, ["10.32.0.1/12"]);
}

#[test]
fn stop_keeps_container_interfaces_and_reset_removes_everything() {
    let h = host("stop");
    launch(&h);
    let a = run(&h, &[]);
    let b = run(&h, &[]);
    h.assert_ping(&a, "10.32.0.2");
    let ports = [port_of(&h, &a), port_of(&h, &b)];
    let attached = bpf_attachments(&h);
    for port in &ports {
        assert!(
            bpf_attached_to(&h, port),
            "while the agent runs, a BPF program is attached to {port}: {attached:?}"
        );
    }
    assert!(
        attached.iter().any(|a| a.starts_with("xdp")),
        "and an XDP program to the datapath port: {attached:?}"
    );
    assert_eq!(h.agent_pids().len(), 1, "one agent runs");

    h.weave_ok(&["stop"]);
    assert_eq!(h.agent_pids(), Vec::<u32>::new(), "stop ends the agent");
    assert_eq!(
        h.ethwe_cidrs(&a),
        ["10.32.0.1/12"],
        "stop leaves ethwe in place"
    );
    assert_eq!(
        h.ethwe_cidrs(&b),
        ["10.32.0.2/12"],
        "stop leaves ethwe in place"
    );
    let links = h.link_names();
    for port in &ports {
        assert!(
            links.contains(port),
            "stop leaves {port} in place: {links:?}"
        );
    }

    h.weave_ok(&["reset"]);
    assert_nothing_left(&h);
    assert!(
        !has_ethwe(&h, &a) && !has_ethwe(&h, &b),
        "reset removes the containers' ethwe"
    );

    // Again, with nothing left to remove.
    h.weave_ok(&["reset"]);
    assert_nothing_left(&h);
}

#[test]
fn reset_while_the_agent_runs_removes_everything() {
    let h = host("reset");
    launch(&h);
    let a = run(&h, &["10.0.1.1/24"]);
    assert!(has_ethwe(&h, &a));
    h.weave_ok(&["reset"]);
    assert_nothing_left(&h);
    assert!(!has_ethwe(&h, &a), "reset removes the containers' ethwe");
}

#[test]
fn bad_input_gets_a_one_line_error_and_changes_nothing() {
    let h = host("bad");
    launch(&h);
    let a = run(&h, &["10.0.1.1/24"]);
    let x = docker_container(&h);
    let before = snapshot(&h, true);
    let dead = format!("unix://{}", h.dir().join("no-dockerd.sock").display());

    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        (
            "an invalid address",
            &["run", "10.0.1.300/24", IMAGE, "sleep", "3600"],
            &[],
        ),
        (
            "an address in use (run)",
            &["run", "10.0.1.1/24", IMAGE, "sleep", "3600"],
            &[],
        ),
        (
            "an address in use (attach)",
            &["attach", "10.0.1.1/24", &x],
            &[],
        ),
        (
            "an unknown docker run flag",
            &[
                "run",
                "10.0.1.5/24",
                "--no-such-flag",
                IMAGE,
                "sleep",
                "3600",
            ],
            &[],
        ),
        (
            "an unknown container (attach)",
            &["attach", "10.0.1.6/24", "no-such-container"],
            &[],
        ),
        (
            "an unknown container (detach)",
            &["detach", "no-such-container"],
            &[],
        ),
        (
            "Docker not running (run)",
            &["run", "10.0.1.7/24", IMAGE, "sleep", "3600"],
            &[("DOCKER_HOST", &dead)],
        ),
        (
            "Docker not running (attach)",
            &["attach", "10.0.1.8/24", &x],
            &[("DOCKER_HOST", &dead)],
        ),
    ];
    for (what, args, env) in cases {
        let out = h.weave_env(args, env);
        assert_rejected(&out, what);
        assert_eq!(
            snapshot(&h, true),
            before,
            "{what} must change nothing ({out})"
        );
    }

    // The rejected requests reserved nothing: their addresses are still free.
    let b = run(&h, &["10.0.1.5/24"]);
    h.weave_ok(&["attach", "10.0.1.7/24", &x]);
    h.assert_ping(&b, "10.0.1.1");
    h.assert_ping(&x, "10.0.1.1");
    h.assert_ping(&a, "10.0.1.7");
}

#[test]
fn run_before_launch_and_a_second_launch_are_refused() {
    let h = host("launch");
    let out = h.weave(&["run", "10.0.1.1/24", IMAGE, "sleep", "3600"]);
    assert_rejected(&out, "weave run before launch");
    assert_eq!(
        h.containers(),
        Vec::<String>::new(),
        "weave run before launch creates no container"
    );
    assert_eq!(
        h.link_names(),
        ["lo"],
        "weave run before launch creates no link"
    );

    let peer = launch(&h);
    let a = run(&h, &["10.0.1.1/24"]);
    let before = snapshot(&h, true);
    let agents = h.agent_pids();
    assert_eq!(agents.len(), 1, "one agent runs");

    let out = h.weave(&["launch"]);
    assert_rejected(&out, "a second launch");
    assert!(
        out.stderr.contains("already running"),
        "a second launch says the agent is already running:\n{out}"
    );
    assert_eq!(
        snapshot(&h, true),
        before,
        "a second launch changes nothing"
    );
    assert_eq!(h.agent_pids(), agents, "the first agent still runs, alone");
    assert_eq!(h.status().mesh.name.to_string(), peer, "same peer");

    // The first agent still does its job.
    let b = run(&h, &["10.0.1.2/24"]);
    h.assert_ping(&a, "10.0.1.2");
    h.assert_ping(&b, "10.0.1.1");
}
