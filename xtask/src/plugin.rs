//! `cargo xtask plugin`: the managed Docker plugin Swarm needs, built from
//! this checkout's binary with no registry.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use weave_tests::weave_image::{PLUGIN_MOUNT, PLUGIN_NAME, build_plugin};

use crate::build;
use crate::util::{self, header};

/// Build the managed (v2) Docker plugin `weave-rs/net-plugin:VERSION` that
/// Swarm's networks need: target/plugin/{config.json,rootfs/}, the
/// directory `docker plugin create` takes.
///
/// Its process is `weave plugin-proxy` (host networking): it serves the
/// network and IPAM driver with a global scope and forwards to the weave
/// agent over the control socket in the host's /run/weave. Builds `cargo
/// build --release -p weave-agent` first unless --no-build. Use it with
/// `docker network create -d weave-rs/net-plugin:VERSION --ipam-driver
/// weave-rs/net-plugin:VERSION --attachable --subnet CIDR NAME` on a swarm
/// manager.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Use the release binary already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Write the plugin here instead of target/plugin.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Also install it into the dockerd of `DOCKER_HOST` (`docker plugin
    /// create` and `enable`; an older install of the same name is removed).
    #[arg(long)]
    install: bool,
    /// With --install: the host directory holding the agent's weave.sock
    /// (the plugin's `run-weave` mount).
    #[arg(long, value_name = "DIR", default_value = "/run/weave")]
    socket_dir: PathBuf,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let weave = build::release(args.no_build)?;
    let output = args
        .output
        .unwrap_or_else(|| util::target_dir().join("plugin"));
    header(&format!("plugin: {PLUGIN_NAME} -> {}", output.display()));
    build_plugin(&weave, &output)?;
    println!("    wrote {}", output.display());
    if args.install {
        let docker = |a: &[&str]| {
            let mut c = Command::new("docker");
            c.args(a);
            c
        };
        // Whatever was installed under this name goes first (quietly).
        let _ = docker(&["plugin", "rm", "-f", PLUGIN_NAME]).output();
        util::run_loud(docker(&["plugin", "create", PLUGIN_NAME]).arg(&output))?;
        util::run_loud(docker(&["plugin", "set", PLUGIN_NAME]).arg(format!(
            "{PLUGIN_MOUNT}.source={}",
            args.socket_dir.display()
        )))?;
        util::run_loud(&mut docker(&["plugin", "enable", PLUGIN_NAME]))?;
    }
    Ok(())
}
