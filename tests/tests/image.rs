//! The agent's container image (`cargo xtask image`, run by the `DaemonSet` in
//! `deploy/`) in a real container runtime: built from `WEAVE_BIN` and the
//! `weave-net` beside it (the debug build here; xtask packs the release
//! build the same way), loaded into a simulated host's dockerd, and run with
//! no shell in it: `weave --version`, `nft list ruleset` (the agent's
//! masquerading needs it), and the `DaemonSet`'s init step `weave
//! setup-cni` writing into bind-mounted host directories as kubelet's
//! hostPath volumes would.
//!
//! Run as root: `WEAVE_BIN=$PWD/target/debug/weave cargo test -p weave-tests
//! --test image -- --test-threads=1`.

use std::fs;

use weave_tests::weave_image::{WEAVE_IMAGE, build_image};
use weave_tests::{Host, weave_bin};

#[test]
fn the_image_loads_and_runs_weave_and_setup_cni_without_a_shell() {
    let h = Host::new("img", "h1");
    let weave = weave_bin().expect("WEAVE_BIN");
    let tarball = h.dir().join("weave-image.tar");
    build_image(&weave, &tarball).unwrap_or_else(|e| panic!("building the image: {e:#}"));

    let loaded = h.docker_ok(&["load", "-i", tarball.to_str().unwrap()]);
    assert!(loaded.contains(WEAVE_IMAGE), "docker load: {loaded}");

    let version = h.docker_ok(&["run", "--rm", "--network", "none", WEAVE_IMAGE, "--version"]);
    assert!(
        version.starts_with("weave ") && version.contains(env!("CARGO_PKG_VERSION")),
        "weave --version in the image: {version}"
    );

    // The DaemonSet's init container, with the node's CNI directories as
    // bind mounts.
    let bin = h.dir().join("host-cni-bin");
    let conf = h.dir().join("host-cni-conf");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&conf).unwrap();
    h.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/host/opt/cni/bin", bin.display()),
        "-v",
        &format!("{}:/host/etc/cni/net.d", conf.display()),
        WEAVE_IMAGE,
        "setup-cni",
        "--bin-dir=/host/opt/cni/bin",
        "--conf-dir=/host/etc/cni/net.d",
    ]);
    let plugin = bin.join("weave-net");
    assert_eq!(
        fs::read(&plugin).unwrap_or_else(|e| panic!("{}: {e}", plugin.display())),
        fs::read(weave.with_file_name("weave-net")).unwrap(),
        "setup-cni installed the image's weave-net"
    );
    let conflist = fs::read_to_string(conf.join("10-weave.conflist")).unwrap();
    let conflist: serde_json::Value = serde_json::from_str(&conflist).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weave-net");
    assert_eq!(
        conflist["plugins"][0]["socket"], "/run/weave/weave.sock",
        "the socket path the DaemonSet mounts from the node"
    );

    // nft, which the agent runs for an exposed node's masquerading, with
    // its libraries: it reads the (empty) ruleset of the container's netns.
    let nft = h.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-add",
        "NET_ADMIN",
        "--entrypoint",
        "/usr/bin/nft",
        WEAVE_IMAGE,
        "list",
        "ruleset",
    ]);
    assert!(nft.success(), "nft in the image: {nft:?}");

    // The image's entrypoint is weave itself: nothing else to run.
    let shell = h.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/sh",
        WEAVE_IMAGE,
    ]);
    assert!(!shell.success(), "the image has no shell");
}
