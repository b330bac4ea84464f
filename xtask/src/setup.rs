//! `cargo xtask setup`: check the prerequisites and install what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{self, header, run_loud};

/// Check this machine's prerequisites and install what is missing.
///
/// Checks the Debian/Ubuntu packages (the eBPF toolchain: Debian's rustc-web with a
/// prebuilt `core` for BPF and LLVM 22; dockerd; busybox-static; network tools; kubectl) and
/// bpf-linker. Installs only what is missing, as root: `apt-get update` once, then
/// `apt-get install`, then `cargo install bpf-linker` built against LLVM 22. Running it
/// again changes nothing. A rustup nightly with rust-src is accepted instead of
/// Debian's rustc. Elsewhere it stops and lists exactly what is missing.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only check and report; install nothing (fails if something is missing).
    #[arg(long)]
    check: bool,
}

/// A Debian package: its name, what it is for, and a file that shows it is
/// there on systems without dpkg.
struct Package {
    name: &'static str,
    why: &'static str,
    probe: Probe,
}

enum Probe {
    Program(&'static str),
    Path(&'static str),
    /// A program that any package may provide: present is enough, even
    /// where dpkg knows no package of this name (so setup never installs a
    /// second, conflicting copy).
    AnyProgram(&'static str),
}

const fn pkg(name: &'static str, why: &'static str, probe: Probe) -> Package {
    Package { name, why, probe }
}

/// Debian's Rust toolchain for the eBPF crate (see ../shared/notes/toolchain.md).
const DEBIAN_RUST: &[Package] = &[
    pkg(
        "rustc-web",
        "Debian's rustc on LLVM 22, compiles the eBPF crate",
        Probe::Path("/usr/bin/rustc"),
    ),
    pkg(
        "cargo-web",
        "the cargo that goes with rustc-web",
        Probe::Path("/usr/bin/cargo"),
    ),
    pkg(
        "libstd-rust-web-dev-bpf",
        "prebuilt `core` for bpfel-unknown-none",
        Probe::Path("/usr/lib/rustlib/bpfel-unknown-none"),
    ),
];

/// Everything else: bpf-linker's LLVM, the Docker engine, the test image, tools.
const PACKAGES: &[Package] = &[
    pkg(
        "llvm-22-dev",
        "LLVM 22, which bpf-linker is built against",
        Probe::Path("/usr/lib/llvm-22/lib"),
    ),
    pkg(
        "docker.io",
        "dockerd for the simulated hosts",
        Probe::Program("dockerd"),
    ),
    pkg(
        "busybox-static",
        "the containers' image (/bin/busybox)",
        Probe::Path("/bin/busybox"),
    ),
    pkg(
        "iproute2",
        "`ip` for the test namespaces",
        Probe::Program("ip"),
    ),
    pkg(
        "iperf3",
        "throughput measurements",
        Probe::Program("iperf3"),
    ),
    pkg("tcpdump", "looking at frames", Probe::Program("tcpdump")),
    pkg(
        "bpftool",
        "inspecting BPF programs and links",
        Probe::Program("bpftool"),
    ),
    pkg("iputils-ping", "ping on the hosts", Probe::Program("ping")),
    pkg(
        "ethtool",
        "turning a LAN interface's tunnel segmentation off in the fastdp tests",
        Probe::Program("ethtool"),
    ),
    pkg(
        "nftables",
        "blocking paths between simulated hosts in tests",
        Probe::Program("nft"),
    ),
    pkg(
        "prometheus",
        "a real Prometheus scraping /metrics, and `promtool check metrics` (http tests)",
        Probe::Program("promtool"),
    ),
    pkg(
        "chromium",
        "headless Chromium rendering the topology page (http tests)",
        Probe::Program("chromium"),
    ),
    pkg(
        "dnsutils",
        "`dig` asking weaveDNS for A and PTR records (dns tests)",
        Probe::Program("dig"),
    ),
    pkg(
        "dnsmasq-base",
        "a real upstream DNS server for names outside weave.local (dns tests)",
        Probe::Program("dnsmasq"),
    ),
    pkg(
        "kubernetes-client",
        "kubectl, parsing deploy/ offline (the deploy_check test)",
        Probe::AnyProgram("kubectl"),
    ),
];

/// bpf-linker as the notes build it: against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "~0.13";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub(crate) fn run(args: Args) -> Result<()> {
    ensure(!args.check)
}

/// Checks everything; installs what is missing when `install` is set.
pub(crate) fn ensure(install: bool) -> Result<()> {
    header("setup: checking prerequisites");
    let dpkg = util::find("dpkg-query").is_some();
    let apt = util::find("apt-get").is_some();
    if !dpkg {
        println!(
            "    (no dpkg-query: not Debian/Ubuntu; checking by the files the packages would install)"
        );
    }
    let installed = |p: &Package| {
        if matches!(p.probe, Probe::AnyProgram(_)) && probe(&p.probe) {
            true
        } else if dpkg {
            dpkg_installed(p.name)
        } else {
            probe(&p.probe)
        }
    };

    let mut wanted: Vec<&Package> = Vec::new();
    let debian_rust_ok = DEBIAN_RUST.iter().all(&installed);
    match nightly_with_rust_src() {
        Some(sysroot) if !debian_rust_ok => println!(
            "    ok       eBPF toolchain: rustup nightly with rust-src ({}), instead of Debian's rustc-web",
            sysroot.display()
        ),
        _ => wanted.extend(DEBIAN_RUST),
    }
    wanted.extend(PACKAGES);

    let mut missing: Vec<&Package> = Vec::new();
    for p in wanted {
        let ok = installed(p);
        println!(
            "    {:8} {:24} {}",
            if ok { "ok" } else { "MISSING" },
            p.name,
            p.why
        );
        if !ok {
            missing.push(p);
        }
    }
    let linker = bpf_linker();
    match &linker {
        Ok(version) => println!("    ok       {:24} {version}", "bpf-linker"),
        Err(why) => println!(
            "    MISSING  {:24} links the eBPF object ({why})",
            "bpf-linker"
        ),
    }

    if missing.is_empty() && linker.is_ok() {
        header("setup: everything is in place");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let listing = {
        let mut l: Vec<String> = names
            .iter()
            .map(|n| format!("Debian package {n}"))
            .collect();
        if linker.is_err() {
            l.push("bpf-linker (built against LLVM 22)".into());
        }
        l.join(", ")
    };
    if !install {
        bail!("missing: {listing}; `cargo xtask setup` installs them (as root, on Debian/Ubuntu)");
    }

    if !missing.is_empty() {
        if !apt || !dpkg {
            bail!(
                "missing: {listing}.\nThis system has no apt-get/dpkg (not Debian/Ubuntu), so setup cannot \
                 install them: install the equivalents of the Debian packages above by hand, then run \
                 `cargo xtask setup` again."
            );
        }
        if !weave_tests::is_root() {
            bail!(
                "missing: {listing}.\nInstalling packages needs root: run `cargo xtask setup` as root, or \
                 `apt-get install -y {}` yourself.",
                names.join(" ")
            );
        }
        apt_install(&names)?;
    }

    if linker.is_err() {
        install_bpf_linker()?;
    }

    // Check again: report what an install did not deliver.
    let still: Vec<&str> = names.into_iter().filter(|n| !dpkg_installed(n)).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    if let Err(why) = bpf_linker() {
        bail!("bpf-linker still does not work after cargo install: {why}");
    }
    header("setup: everything is in place");
    Ok(())
}

fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", name])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn probe(probe: &Probe) -> bool {
    match probe {
        Probe::Program(name) | Probe::AnyProgram(name) => util::find(name).is_some(),
        Probe::Path(path) => Path::new(path).exists(),
    }
}

/// The sysroot of rustup's nightly toolchain if it has rust-src.
fn nightly_with_rust_src() -> Option<PathBuf> {
    util::find("rustup")?;
    // Ask only about an installed nightly: `rustup run` may otherwise try to install one.
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    if !String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        return None;
    }
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
        .then_some(sysroot)
}

/// bpf-linker's version if it is on PATH (or in `$CARGO_HOME/bin`) and runs.
fn bpf_linker() -> std::result::Result<String, String> {
    let path = util::find("bpf-linker")
        .or_else(|| Some(util::cargo_bin_dir().join("bpf-linker")).filter(|p| p.exists()))
        .ok_or("not on PATH nor in $CARGO_HOME/bin")?;
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} does not run: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `apt-get update` once, then `apt-get install -y` of `names`, with services
/// kept from starting (no system dockerd in the root namespace).
fn apt_install(names: &[&str]) -> Result<()> {
    header(&format!("setup: installing {}", names.join(" ")));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        // Debian's way of telling maintainer scripts not to start services.
        std::fs::write(
            policy,
            "#!/bin/sh\n# written by cargo xtask setup during apt-get install\nexit 101\n",
        )?;
        set_executable(policy)?;
    }
    let result = (|| {
        let apt = |args: &[&str]| {
            let mut c = Command::new("apt-get");
            c.args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("NEEDRESTART_MODE", "l");
            c
        };
        run_loud(&mut apt(&["update"]))?;
        let mut install = apt(&["install", "-y"]);
        install.args(names);
        run_loud(&mut install)
    })();
    if own_policy {
        std::fs::remove_file(policy).ok();
    }
    result
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `cargo install bpf-linker` against LLVM 22 (a few minutes).
fn install_bpf_linker() -> Result<()> {
    if !Path::new(LLVM_PREFIX).join("lib").exists() {
        bail!("bpf-linker needs LLVM 22 under {LLVM_PREFIX} (Debian package llvm-22-dev)");
    }
    header("setup: building bpf-linker against LLVM 22 (takes a few minutes)");
    let mut c = util::cargo();
    c.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    run_loud(&mut c)
}
