//! The test image, built from the machine's own static busybox (no registry).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};

use crate::IMAGE;
use crate::command::{check, cmd};
use crate::dockerd::Dockerd;
use crate::prereq::is_executable;

/// Imports [`IMAGE`] into `dockerd`: Debian's static busybox with a symlink per
/// applet, packed with `tar` and loaded with `docker import`. `scratch` is a
/// directory for the root file system (removed afterwards).
pub fn import_busybox(dockerd: &Dockerd, scratch: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow!(
                "/bin/busybox not found: install Debian's busybox-static (`cargo xtask setup` does)"
            )
        })?;
    let root = scratch.join("busybox-rootfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(&busybox, root.join("bin/busybox")).context("copying busybox")?;
    let applets = check(&mut cmd(&busybox, ["--list"]))?;
    for applet in applets
        .split_whitespace()
        .filter(|a| *a != "busybox" && !a.contains('/'))
    {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let tarball = scratch.join("busybox-rootfs.tar");
    check(&mut cmd(
        "tar",
        [
            OsStr::new("-C"),
            root.as_os_str(),
            OsStr::new("-cf"),
            tarball.as_os_str(),
            OsStr::new("."),
        ],
    ))?;
    let tar_s = tarball.to_string_lossy().into_owned();
    let imported = dockerd
        .docker(&["import", "--change", "CMD [\"sh\"]", &tar_s, IMAGE])
        .ok();
    fs::remove_file(&tarball).ok();
    fs::remove_dir_all(&root).ok();
    imported.context("docker import of the busybox image")?;
    Ok(())
}
