//! `cargo xtask test`: every test, unit and integration.

use anyhow::{Result, bail};

use crate::util::{self, header, run_loud};
use crate::{build, setup};

/// Run every test: setup, build, unit tests, then the integration tests.
///
/// Needs root: the integration tests create network namespaces, start a dockerd per
/// simulated host, and load BPF programs. They run one at a time against the freshly
/// built `weave` (passed to them as `WEAVE_BIN`), with agents on the plain data
/// plane; then every suite that launches agents runs again on the xdp data
/// plane (`WEAVE_TEST_DATAPLANE=xdp`), and the suites that carry traffic
/// between hosts a third time on fastdp (`WEAVE_TEST_DATAPLANE=fastdp`: eBPF
/// VXLAN in the kernel between fastdp neighbours, xdp for the rest). The
/// `fastdp` suite itself mixes data planes per host and runs once.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build and test with the release profile.
    #[arg(long)]
    release: bool,
    /// Arguments for the integration test binaries (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// The integration suites whose agents run on the data plane that
/// `WEAVE_TEST_DATAPLANE` names: each runs again on xdp.
const AGENT_SUITES: [&str; 6] = [
    "single_host",
    "mesh",
    "multi_host",
    "ipam",
    "encryption",
    "faults",
];

/// Of those, the suites that run again on fastdp: the ones whose traffic
/// crosses between hosts (`single_host` has one host, and `mesh` runs the
/// control plane alone; what fastdp changes there, the negotiation, `mesh`
/// and `fastdp` test directly).
const FASTDP_SUITES: [&str; 4] = ["multi_host", "ipam", "encryption", "faults"];

pub(crate) fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "\n\n    *** cargo xtask test must run as ROOT ***\n\n    The integration tests create network \
             namespaces, start dockerd and load BPF programs.\n    Run it in a root shell (e.g. `sudo -i`, then \
             `cargo xtask test` in this directory).\n"
        );
    }
    setup::ensure(true)?;
    let weave = build::build(args.release)?;
    let profile = |c: &mut std::process::Command| {
        if args.release {
            c.arg("--release");
        }
    };

    header("test: unit tests");
    let mut unit = util::cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "weave-tests",
        "--exclude",
        "weave-ebpf",
    ]);
    profile(&mut unit);
    run_loud(&mut unit)?;

    header(&format!(
        "test: integration tests (root, one at a time), WEAVE_BIN={}",
        weave.display()
    ));
    let mut integration = util::cargo();
    integration
        .env("WEAVE_BIN", &weave)
        .args(["test", "--package", "weave-tests"]);
    profile(&mut integration);
    integration
        .args(["--", "--test-threads=1"])
        .args(&args.test_args);
    run_loud(&mut integration)?;

    // Every suite that launches agents once more on the accelerated data
    // plane, and those that carry traffic between hosts on fastdp too (the
    // run above used the harness's default, plain): every data plane must
    // pass them. (`overlay` runs both engines itself; `classifier` and
    // `fuzz_corpus` launch no agent.)
    let passes = AGENT_SUITES
        .iter()
        .map(|suite| (*suite, "xdp"))
        .chain(FASTDP_SUITES.iter().map(|suite| (*suite, "fastdp")));
    for (suite, dataplane) in passes {
        header(&format!(
            "test: {suite} suite again with WEAVE_TEST_DATAPLANE={dataplane}"
        ));
        let mut again = util::cargo();
        again
            .env("WEAVE_BIN", &weave)
            .env("WEAVE_TEST_DATAPLANE", dataplane)
            .args(["test", "--package", "weave-tests", "--test", suite]);
        profile(&mut again);
        again.args(["--", "--test-threads=1"]).args(&args.test_args);
        run_loud(&mut again)?;
    }

    header("test: all tests passed");
    Ok(())
}
