//! Helpers shared by the tasks: where things are, and running commands loudly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace root (parent of `xtask/`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&dir))
                    .unwrap_or(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The `weave` binary of a build profile.
pub(crate) fn weave_path(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("weave")
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts bpf-linker.
pub(crate) fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cargo")
            },
            PathBuf::from,
        )
        .join("bin")
}

/// PATH with `$CARGO_HOME/bin` in front (for bpf-linker), unless it is there already.
pub(crate) fn path_with_cargo_bin() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bin = cargo_bin_dir();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return path;
    }
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).unwrap_or(path)
}

/// A cargo command (the cargo that runs xtask) in the workspace root, with
/// `$CARGO_HOME/bin` on PATH.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin());
    c
}

/// A git command in the workspace root.
pub(crate) fn git() -> Command {
    let mut c = Command::new("git");
    c.current_dir(workspace_root());
    c
}

/// Prints `$ command` and runs it with inherited stdio; fails unless it succeeds.
pub(crate) fn run_loud(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// The command line of `cmd`, with the environment it sets in front.
pub(crate) fn describe(cmd: &Command) -> String {
    let env = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())));
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| w.to_string_lossy().into_owned());
    env.chain(words).collect::<Vec<_>>().join(" ")
}

/// Prints a section header.
pub(crate) fn header(text: &str) {
    println!("==> {text}");
}

/// Finds `name` on PATH (and in the sbin directories).
pub(crate) fn find(name: &str) -> Option<PathBuf> {
    weave_tests::find_program(name)
}

/// From now on SIGINT and SIGTERM only mark the run as interrupted
/// ([`weave_tests::interrupt`]): the task stops at its next step and its guards
/// clean up, instead of the process dying with everything left behind.
pub(crate) fn catch_interrupts() {
    extern "C" fn on_signal(_: libc::c_int) {
        weave_tests::interrupt();
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    #[expect(
        clippy::fn_to_numeric_cast_any,
        reason = "signal(2) takes the handler as an integer (sighandler_t)"
    )]
    let handler = handler as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Runs `work` on every item, at most `jobs` at a time (worker threads taking
/// the items in order), and returns the results in the items' order.
pub(crate) fn in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    jobs: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    use std::sync::{Mutex, PoisonError};
    let queue = Mutex::new(items.into_iter().enumerate());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                    let Some((i, item)) = next else { break };
                    let result = work(item);
                    done.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((i, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
