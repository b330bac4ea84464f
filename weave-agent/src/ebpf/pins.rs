//! Classifier links pinned in bpffs, so isolation outlives the agent.
//!
//! A BPF link lives as long as something holds it. Held only by the agent's
//! file descriptors, the container ports' classifiers would vanish when the
//! agent is `SIGKILLed`, and the bridge would forward between subnets until
//! the next launch. Pinned, they stay attached, with their map, until a new
//! agent has attached its own and removes the old pins.
//!
//! Pins live in `/sys/fs/bpf/weave/net<inode>/`, one directory per network
//! namespace (the bridge's), so simulated hosts on one kernel never touch
//! each other's. Each agent run pins under its own generation
//! (`<port>_<hook>_<generation>`): the new run attaches next to the old links,
//! then [`PinDir::release_other_generations`] drops the old ones. TCX runs
//! both meanwhile, and both enforce the same rules, so no frame passes
//! unclassified at any moment.
//!
//! A graceful stop unpins (dropping a [`PortLink`] removes its pin): `weave
//! stop` still fails closed. `weave reset` removes the whole directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::programs::links::FdLink;
use aya::programs::tc::SchedClassifierLink;

/// Where bpffs is mounted, and mounted by the agent when it is not.
const BPFFS: &str = "/sys/fs/bpf";

/// This network namespace's pin directory, for this agent run.
#[derive(Debug)]
pub(super) struct PinDir {
    dir: PathBuf,
    generation: String,
}

/// A classifier link the agent holds; pinned when a [`PinDir`] is available.
/// Dropping it detaches the program (and removes its pin).
#[derive(Debug)]
pub(super) enum PortLink {
    /// Holding the fd is what keeps the link ours to drop; never read.
    Pinned {
        path: PathBuf,
        _link: FdLink,
    },
    Held {
        _link: SchedClassifierLink,
    },
}

impl Drop for PortLink {
    fn drop(&mut self) {
        if let Self::Pinned { path, .. } = self {
            // The pin holds the link; without it the fd we drop next is the last.
            let _ = fs::remove_file(path);
        }
    }
}

/// The pin directory of the calling thread's network namespace.
pub fn namespace_pin_dir() -> io::Result<PathBuf> {
    let inode = fs::metadata("/proc/thread-self/ns/net")?.ino();
    Ok(Path::new(BPFFS).join("weave").join(format!("net{inode}")))
}

/// Removes every pin of this network namespace (`weave reset`): the links
/// still attached to a live device are detached with them.
pub fn remove_namespace_pins() -> io::Result<()> {
    match fs::remove_dir_all(namespace_pin_dir()?) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl PinDir {
    /// Mounts bpffs if needed and creates this namespace's directory.
    pub(super) fn open() -> io::Result<Self> {
        ensure_bpffs()?;
        let dir = namespace_pin_dir()?;
        fs::create_dir_all(&dir)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            dir,
            generation: format!("{nanos:x}"),
        })
    }

    /// Pins `link` (a TCX link of port `ifname` at `hook`) for this run.
    pub(super) fn pin(
        &self,
        ifname: &str,
        hook: &str,
        link: SchedClassifierLink,
    ) -> io::Result<PortLink> {
        let link: FdLink = link
            .try_into()
            .map_err(|e| io::Error::other(format!("not a pinnable (TCX) link: {e}")))?;
        let path = self
            .dir
            // bpffs refuses names with dots (reserved for its own files).
            .join(format!(
                "{}_{hook}_{}",
                ifname.replace('.', "-"),
                self.generation
            ));
        let pinned = link.pin(&path).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            io::Error::other(format!("pinning {}: {e}{cause}", path.display()))
        })?;
        Ok(PortLink::Pinned {
            path,
            _link: pinned.into(),
        })
    }

    /// Unpins every link of earlier runs (and of ports since deleted): once
    /// the new classifiers are attached, the old ones only cost time.
    pub(super) fn release_other_generations(&self) -> io::Result<usize> {
        let suffix = format!("_{}", self.generation);
        let mut released = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().ends_with(&suffix) {
                fs::remove_file(entry.path())?;
                released += 1;
            }
        }
        Ok(released)
    }
}

fn ensure_bpffs() -> io::Result<()> {
    if is_bpffs(Path::new(BPFFS))? {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("mounting bpffs on {BPFFS}: {e}")))
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(stat.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
