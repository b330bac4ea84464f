//! `cargo xtask lint`: formatting and clippy, as CI runs them.

use anyhow::{Result, bail};

use crate::util::{self, header, run_loud};

/// Check formatting and run clippy with warnings as errors (the lints are
/// `[workspace.lints]` in the root Cargo.toml).
///
/// Three checks, all run even when one fails: `cargo fmt --check`; clippy on
/// the host crates (every target: libraries, binaries, tests, build scripts);
/// clippy on the eBPF crate. The eBPF crate is linted for the host: its code
/// compiles there by design (only its `no_std`/`no_main` attributes, panic
/// handler and licence section are BPF-only), so the same clippy covers it
/// without a second toolchain. Clippy on weave-agent runs its build script,
/// which builds the eBPF object: run `cargo xtask setup` once first.
#[derive(clap::Args)]
pub(crate) struct Args;

pub(crate) fn run(_: Args) -> Result<()> {
    let mut failed = Vec::new();

    header("lint: rustfmt");
    let mut fmt = util::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    if let Err(e) = run_loud(&mut fmt) {
        println!("{e:#}\n    (`cargo fmt --all` fixes it)");
        failed.push("rustfmt");
    }

    header("lint: clippy, host crates");
    let mut host = util::cargo();
    host.args([
        "clippy",
        "--workspace",
        "--exclude",
        "weave-ebpf",
        "--all-targets",
    ])
    .args(["--", "-D", "warnings"]);
    if let Err(e) = run_loud(&mut host) {
        println!("{e:#}");
        failed.push("clippy (host crates)");
    }

    header("lint: clippy, eBPF crate (checked for the host)");
    let mut ebpf = util::cargo();
    ebpf.args(["clippy", "--package", "weave-ebpf", "--all-targets"])
        .args(["--", "-D", "warnings"]);
    if let Err(e) = run_loud(&mut ebpf) {
        println!("{e:#}");
        failed.push("clippy (weave-ebpf)");
    }

    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("\nlint: formatting and clippy are clean");
    Ok(())
}
