//! `cargo xtask run`: the agent in the foreground on this host.

use anyhow::{Result, bail};
use std::process::Command;

use crate::build;
use crate::util::{self, describe, header};

/// Build, then run `weave launch --foreground [ARGS]` on this host (as root; Ctrl-C stops it).
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
    /// Arguments for `weave launch --foreground` (after `--`).
    #[arg(last = true)]
    launch_args: Vec<String>,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let weave = build::run(build::Args {
        release: args.release,
    })?;
    let mut c = Command::new(&weave);
    c.args(["launch", "--foreground"]).args(&args.launch_args);
    header(&format!("run: {}", describe(&c)));
    util::catch_interrupts(); // Ctrl-C goes to weave, which stops itself; we wait for it.
    let status = c.status()?;
    if !status.success() {
        bail!("weave launch --foreground ended: {status}");
    }
    Ok(())
}
