//! `cargo xtask image`: the agent's container image, built from this
//! checkout's release binaries with no registry and no base image.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use weave_tests::weave_image::build_image;

use crate::build;
use crate::util::{self, header};

/// The image's name, as `deploy/weave-daemonset.yaml` refers to it.
pub(crate) use weave_tests::weave_image::WEAVE_IMAGE as IMAGE;

/// Build the container image `weave-rs/weave:VERSION` that
/// `deploy/weave-daemonset.yaml` runs, as a `docker load`-able tarball:
/// target/image/weave-image.tar (also `ctr -n k8s.io images import`-able).
///
/// The image holds only the release `weave` and `weave-net`, this
/// machine's `nft` (for the exposed node's masquerading), the shared
/// libraries `ldd` says they need (and the dynamic loader), and empty
/// /run/weave, /var/lib/weave and /tmp: no shell, no base image, nothing
/// pulled. Its entrypoint is `weave`. Builds `cargo build --release -p
/// weave-agent` first unless --no-build.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Use the release binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Write the tarball here instead of target/image/weave-image.tar.
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Also `docker load` it (into the dockerd of `DOCKER_HOST`).
    #[arg(long)]
    load: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let weave = build::release(args.no_build)?;
    let output = args
        .output
        .unwrap_or_else(|| util::target_dir().join("image/weave-image.tar"));
    header(&format!("image: {IMAGE} -> {}", output.display()));
    build_image(&weave, &output)?;
    println!("    wrote {}", output.display());
    if args.load {
        util::run_loud(Command::new("docker").arg("load").arg("-i").arg(&output))?;
    }
    Ok(())
}
