//! What the simulated hosts need from this machine: root, programs on PATH,
//! the `weave` binary under test.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, ensure};

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Panics with a loud, explicit message when not root: these tests need
/// network namespaces, dockerd and BPF, and must never pass by doing nothing.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "\n\n*** {what} needs root (network namespaces, dockerd, BPF programs).\n\
         *** Run the tests as root with `cargo xtask test`.\n\n"
    );
}

/// Finds `name` on PATH, then in the sbin directories root's PATH usually has.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| {
        anyhow!("`{name}` not found on PATH: install Debian's {package} (`cargo xtask setup` does)")
    })
}

/// The docker client: `docker` on PATH (present even on a machine without the engine).
pub fn docker_cli() -> Result<PathBuf> {
    require_program("docker", "docker.io")
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `weave` binary under test: `$WEAVE_BIN`, else `debug/weave` in
/// `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn weave_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("WEAVE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace_root().join("target"), PathBuf::from)
            .join("debug/weave"),
    };
    ensure!(
        is_executable(&path),
        "weave binary not found at {}: build it with `cargo xtask build`, or set WEAVE_BIN \
         (`cargo xtask test` does both)",
        path.display()
    );
    Ok(path)
}
