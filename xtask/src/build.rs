//! `cargo xtask build`: the agent binary and, through its build script, the eBPF object.

use std::path::PathBuf;

use anyhow::{Result, ensure};

use crate::setup;
use crate::util::{self, header, run_loud};

/// Build `weave` (agent + CLI); its build script compiles the eBPF programs.
///
/// Checks the prerequisites first and installs only what is missing.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build with the release profile (target/release/weave).
    #[arg(long)]
    pub release: bool,
}

/// Runs setup, builds, and returns the path of the `weave` binary.
pub(crate) fn run(args: Args) -> Result<PathBuf> {
    setup::ensure(true)?;
    build(args.release)
}

/// `cargo build -p weave-agent`; returns the path of the `weave` binary.
pub(crate) fn build(release: bool) -> Result<PathBuf> {
    header(&format!(
        "build: weave ({})",
        if release { "release" } else { "debug" }
    ));
    let mut c = util::cargo();
    c.args(["build", "--package", "weave-agent"]);
    if release {
        c.arg("--release");
    }
    run_loud(&mut c)?;
    let weave = util::weave_path(release);
    ensure!(
        weave.exists(),
        "the build succeeded but {} does not exist",
        weave.display()
    );
    println!("    built {}", weave.display());
    Ok(weave)
}

/// The release `weave` for packaging: built now, or as last built when
/// `no_build` (the caller's `--no-build`).
pub(crate) fn release(no_build: bool) -> Result<PathBuf> {
    if no_build {
        Ok(util::weave_path(true))
    } else {
        build(true)
    }
}
