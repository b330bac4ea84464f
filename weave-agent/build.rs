//! Builds the eBPF object (crate `weave-ebpf`, target `bpfel-unknown-none`)
//! and copies it to `$OUT_DIR/weave-ebpf.o` for `include_bytes_aligned!`.
//!
//! The BPF build is a second cargo invocation with its own compiler and its
//! own target dir (`<target dir>/ebpf`), so it never waits on the lock the
//! outer build holds. Two toolchains are recognised, in this order:
//!
//! 1. Debian's rustc (`/usr/bin/rustc`) with a prebuilt `core` for the BPF
//!    target in its sysroot (package `libstd-rust-web-dev-bpf`);
//! 2. rustup's `nightly` with `rust-src`, building `core` with `-Z build-std`.
//!
//! Either way `bpf-linker` must be on `PATH`. `cargo xtask setup` installs
//! what is missing.

use std::{
    env,
    ffi::OsString,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

const BPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_CRATE: &str = "weave-ebpf";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// Settings of the outer build that must not leak into the BPF build: they
/// name the host compiler, its wrappers (clippy-driver), host flags, or a
/// target dir and target that are not ours.
const LEAKING_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_PROFILE_RELEASE_LTO",
    "CARGO_PROFILE_RELEASE_PANIC",
    "RUSTUP_TOOLCHAIN",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: cannot build the eBPF programs ({EBPF_CRATE}):\n{message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("weave-agent has no parent directory")?
        .to_path_buf();

    for path in [
        "weave-ebpf/src",
        "weave-ebpf/Cargo.toml",
        "weave-common/src",
        "weave-common/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo::rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo::rerun-if-env-changed=PATH");

    let toolchain = Toolchain::detect()?;
    let bpf_target_dir = outer_target_dir(&out_dir)
        .unwrap_or_else(|| out_dir.clone())
        .join("ebpf");

    let mut cargo = toolchain.cargo();
    cargo
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &bpf_target_dir)
        // aya-ebpf uses unstable features; Debian's stable rustc needs this.
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["build", "--release", "--target", BPF_TARGET])
        .args(["--package", EBPF_CRATE])
        // Cargo cannot set these per package in [profile.release.package]:
        // they apply to this invocation only, which builds nothing else.
        .args(["--config", "profile.release.lto=true"])
        .args(["--config", "profile.release.panic=\"abort\""]);
    toolchain.configure(&mut cargo);

    let status = cargo
        .status()
        .map_err(|e| format!("could not run {cargo:?}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{cargo:?} failed ({status}); its output is above.\n\
             (toolchain: {})",
            toolchain.describe()
        ));
    }

    let object = bpf_target_dir
        .join(BPF_TARGET)
        .join("release")
        .join(EBPF_CRATE);
    let embedded = out_dir.join("weave-ebpf.o");
    fs::copy(&object, &embedded).map_err(|e| {
        format!(
            "could not copy {} to {}: {e}",
            object.display(),
            embedded.display()
        )
    })?;
    Ok(())
}

/// How the BPF object can be compiled on this machine.
enum Toolchain {
    /// Debian's rustc with its prebuilt `core` for the BPF target.
    Debian,
    /// rustup's nightly, compiling `core` from `rust-src`.
    NightlyBuildStd,
}

impl Toolchain {
    fn detect() -> Result<Self, String> {
        let linker = find_in_path("bpf-linker");
        let debian = sysroot(Command::new(DEBIAN_RUSTC))
            .filter(|root| has_bpf_core(root))
            .map(|_| Self::Debian);
        let nightly = || {
            let mut rustc = Command::new("rustup");
            rustc.args(["run", "nightly", "rustc"]);
            sysroot(rustc)
                .filter(|root| root.join("lib/rustlib/src/rust/library/core").is_dir())
                .map(|_| Self::NightlyBuildStd)
        };
        match (linker, debian.or_else(nightly)) {
            (Some(_), Some(toolchain)) => Ok(toolchain),
            (linker, toolchain) => {
                let mut missing = String::new();
                if linker.is_none() {
                    missing
                        .push_str("  - `bpf-linker` is not on PATH (it links the BPF object);\n");
                }
                if toolchain.is_none() {
                    let _ = writeln!(
                        missing,
                        "  - no compiler with a `core` library for {BPF_TARGET}: neither \
                         {DEBIAN_RUSTC} with lib/rustlib/{BPF_TARGET} in its sysroot \
                         (Debian package libstd-rust-web-dev-bpf) nor rustup's nightly \
                         toolchain with the rust-src component;"
                    );
                }
                Err(format!(
                    "missing:\n{missing}Run `cargo xtask setup` to install them."
                ))
            }
        }
    }

    fn cargo(&self) -> Command {
        match self {
            Self::Debian => {
                let mut cargo =
                    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                clear_leaking_env(&mut cargo);
                cargo.env("RUSTC", DEBIAN_RUSTC);
                cargo
            }
            Self::NightlyBuildStd => {
                let mut cargo = Command::new("rustup");
                clear_leaking_env(&mut cargo);
                cargo.args(["run", "nightly", "cargo"]);
                cargo
            }
        }
    }

    /// Arguments that must follow `build`.
    fn configure(&self, cargo: &mut Command) {
        if matches!(self, Self::NightlyBuildStd) {
            cargo.args(["-Z", "build-std=core"]);
        }
    }

    const fn describe(&self) -> &'static str {
        match self {
            Self::Debian => "Debian rustc /usr/bin/rustc with prebuilt core",
            Self::NightlyBuildStd => "rustup nightly with -Z build-std=core",
        }
    }
}

fn clear_leaking_env(command: &mut Command) {
    for name in LEAKING_ENV {
        command.env_remove(name);
    }
}

fn env_var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("{name} is not set (is this run by cargo?)"))
}

/// The sysroot `rustc --print sysroot` reports, if that compiler runs.
fn sysroot(mut rustc: Command) -> Option<PathBuf> {
    clear_leaking_env(&mut rustc);
    let output = rustc.args(["--print", "sysroot"]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let root = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(root.trim()))
}

/// True when `sysroot` has a prebuilt `core` for the BPF target.
fn has_bpf_core(sysroot: &Path) -> bool {
    let lib = sysroot.join("lib/rustlib").join(BPF_TARGET).join("lib");
    fs::read_dir(lib).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The outer build's target dir, from the layout cargo gives `OUT_DIR`:
/// `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out`. This holds
/// whether the target dir is the default, `CARGO_TARGET_DIR`, `--target-dir`
/// or a config setting.
fn outer_target_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    if build.file_name()? != "build" {
        return None;
    }
    let above_profile = build.parent()?.parent()?;
    let target = env::var_os("TARGET")?;
    if above_profile.file_name()? == target {
        above_profile.parent().map(Path::to_path_buf)
    } else {
        Some(above_profile.to_path_buf())
    }
}
