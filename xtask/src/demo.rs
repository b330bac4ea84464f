//! `cargo xtask demo`: the main job for now, narrated.

use std::path::Path;

use anyhow::{Context, Result, bail};
use weave_tests::{Host, IMAGE};

use crate::build;
use crate::util::{self, header};

/// The simulated host's name (network namespace and temporary directory).
const HOST: &str = "wvdemo-h1";

/// Show weave on one simulated host: two containers on the `weave` bridge pinging each other.
///
/// Creates network namespace wvdemo-h1 with its own dockerd and a busybox image, launches
/// the agent there, `weave run`s two containers with automatic addresses, prints `weave
/// status` and `weave ps`, and shows the containers pinging each other. Everything is
/// removed at the end, also on Ctrl-C. Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "cargo xtask demo must run as root: it creates a network namespace, starts dockerd and loads BPF programs"
        );
    }
    let weave = build::run(build::Args {
        release: args.release,
    })?;
    util::catch_interrupts();
    let result = demo(&weave);
    if weave_tests::interrupted() {
        header("demo: interrupted; everything it created has been removed");
        std::process::exit(130);
    }
    result?;
    header("demo: done; everything it created has been removed");
    Ok(())
}

/// Prints its message when dropped: declared after the host, it speaks just
/// before the host's guards clean up.
struct Announce(&'static str);

impl Drop for Announce {
    fn drop(&mut self) {
        say(self.0);
    }
}

fn say(text: &str) {
    println!("==> host 1: {text}");
}

fn show(text: &str) {
    for line in text.trim_end().lines() {
        println!("    {line}");
    }
}

/// Runs `weave args` on the host, narrated, and returns its stdout.
fn weave(host: &Host, args: &[&str]) -> Result<String> {
    if weave_tests::interrupted() {
        bail!("interrupted");
    }
    say(&format!("weave {}", args.join(" ")));
    let out = host.try_weave(args)?;
    show(&out);
    Ok(out)
}

fn demo(weave_bin: &Path) -> Result<()> {
    let host = Host::create(HOST, weave_bin.to_path_buf(), say)?;
    let _cleanup = Announce("clean up: weave reset, stop dockerd, delete the network namespace");

    weave(&host, &["launch"])?;
    weave(&host, &["run", "--name=c1", IMAGE, "sleep", "3600"])?;
    weave(&host, &["run", "--name=c2", IMAGE, "sleep", "3600"])?;
    weave(&host, &["status"])?;
    let ps = weave(&host, &["ps"])?;

    let address = |name: &str| -> Result<String> {
        let id = host.docker_ok(&["inspect", "-f", "{{.Id}}", name]);
        let line = ps
            .lines()
            .find(|l| l.starts_with(&id.trim()[..12]))
            .with_context(|| format!("`weave ps` does not list {name}"))?;
        let cidr = line
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("no address for {name} in {line:?}"))?;
        Ok(cidr.split('/').next().unwrap_or(cidr).to_string())
    };
    let (a1, a2) = (address("c1")?, address("c2")?);
    for (from, to, addr) in [("c1", "c2", &a2), ("c2", "c1", &a1)] {
        say(&format!("{from} pings {to} ({addr})"));
        host.wait_ping(from, addr)?;
        println!("    $ docker exec {from} ping -c 3 {addr}");
        let out = host.exec(from, &["ping", "-c", "3", addr]);
        show(&out.stdout);
        if !out.success() {
            bail!("{from} cannot ping {to}:\n{out}");
        }
    }
    Ok(())
}
