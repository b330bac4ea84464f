//! The agent's container image (`cargo xtask image`, and the `image` suite
//! that loads it into a simulated host's dockerd): the `weave` and
//! `weave-net` binaries, the build machine's `nft` (the agent runs it for
//! the exposed node's masquerading, see weave-agent's `gateway`), the
//! shared libraries `ldd` says they need, and nothing else (no shell, no
//! base image, no registry), written in the
//! format `docker save` writes and `docker load` / `ctr images import` read.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

/// The image's name, as `deploy/weave-daemonset.yaml` refers to it (xtask's
/// `deploy_check` test checks they agree).
pub const WEAVE_IMAGE: &str = concat!("weave-rs/weave:", env!("CARGO_PKG_VERSION"));

/// Where the binaries go in the image (`weave setup-cni` finds `weave-net`
/// beside `weave`).
const BIN_DIR: &str = "usr/bin";

/// The managed Docker plugin's name (`docker network create -d` it, and
/// `--ipam-driver` it): Swarm's networks need a managed plugin.
pub const PLUGIN_NAME: &str = concat!("weave-rs/net-plugin:", env!("CARGO_PKG_VERSION"));

/// Where the plugin mounts the host's directory of the agent's control
/// socket (`docker plugin set PLUGIN run-weave.source=DIR` changes it).
pub const PLUGIN_MOUNT: &str = "run-weave";

/// Writes the managed plugin `docker plugin create` takes to `dir`
/// (created; emptied first): `config.json` and `rootfs/` with `weave` and
/// its libraries. Its process is `weave plugin-proxy`, host networking;
/// it reaches the agent through the host's /run/weave.
pub fn build_plugin(weave: &Path, dir: &Path) -> Result<()> {
    ensure!(
        weave.exists(),
        "{} does not exist (build it first)",
        weave.display()
    );
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let root = dir.join("rootfs");
    fill_rootfs(&root, &[weave], &["run/docker/plugins"])?;
    // By hand: this module keeps to std (xtask uses it without serde).
    let config = format!(
        r#"{{
  "description": "weave-rs: Docker network and IPAM driver for Swarm (forwards to the weave agent)",
  "documentation": "https://github.com/weaveworks/weave",
  "entrypoint": ["/{BIN_DIR}/weave", "plugin-proxy"],
  "env": [{{"name": "WEAVE_SOCKET", "description": "the agent's control socket, inside the plugin",
           "settable": ["value"], "value": "/run/weave/weave.sock"}}],
  "interface": {{"socket": "weave.sock", "types": ["docker.networkdriver/1.0", "docker.ipamdriver/1.0"]}},
  "network": {{"type": "host"}},
  "mounts": [{{"name": "{PLUGIN_MOUNT}", "description": "the host's directory of the agent's control socket",
              "source": "/run/weave", "destination": "/run/weave", "type": "bind",
              "options": ["bind"], "settable": ["source"]}}],
  "linux": {{"capabilities": []}}
}}
"#
    );
    fs::write(dir.join("config.json"), config)?;
    Ok(())
}

/// `root` with `binaries` in `BIN_DIR`, the libraries they need, and the
/// directories the agent (and `extra_dirs`) expect.
fn fill_rootfs(root: &Path, binaries: &[&Path], extra_dirs: &[&str]) -> Result<()> {
    for d in [BIN_DIR, "run/weave", "var/lib/weave", "tmp", "etc"]
        .iter()
        .chain(extra_dirs)
    {
        fs::create_dir_all(root.join(d))?;
    }
    // Pods and runtimes expect these to exist; the agent reads neither.
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/nonexistent\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let mut libs = Vec::new();
    for b in binaries {
        let dest = root
            .join(BIN_DIR)
            .join(b.file_name().context("a binary's name")?);
        fs::copy(b, &dest).with_context(|| format!("copying {}", b.display()))?;
        for lib in shared_libraries(b)? {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
    }
    for lib in &libs {
        // At the same absolute path, so the loader and its search path find them.
        let dest = root.join(lib.strip_prefix("/").unwrap_or(lib));
        fs::create_dir_all(dest.parent().context("a library's directory")?)?;
        // fs::copy follows symlinks: the image gets the file under the
        // name the binary asks for.
        fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// Where the build machine's `nft` may be (Debian's nftables package).
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// Writes the image of `weave` (and the `weave-net` beside it, and `nft`)
/// to `output`.
pub fn build_image(weave: &Path, output: &Path) -> Result<()> {
    let net = weave.with_file_name("weave-net");
    let nft = NFT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context(
            "nft is not installed (package nftables): the image carries it for the agent's masquerading",
        )?;
    for b in [weave, net.as_path()] {
        ensure!(
            b.exists(),
            "{} does not exist (build with `cargo xtask build --release`)",
            b.display()
        );
    }
    let work = output.with_extension("d");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let root = work.join("rootfs");
    fill_rootfs(&root, &[weave, net.as_path(), nft], &[])?;

    // One layer, reproducible: sorted, owned by root, no timestamps.
    let layer = work.join("layer.tar");
    tar(&root, &layer, &["."])?;
    let diff_id = sha256(&layer)?;
    // The image configuration (OCI image-spec's config, which docker reads).
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{{"Entrypoint":["/{BIN_DIR}/weave"],"Cmd":["--help"],"Env":["PATH=/{BIN_DIR}"],"WorkingDir":"/","Labels":{{"org.opencontainers.image.title":"weave-rs","org.opencontainers.image.version":"{version}"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}},"history":[{{"created":"1970-01-01T00:00:00Z","created_by":"cargo xtask image"}}]}}"#,
        version = env!("CARGO_PKG_VERSION"),
    );
    let archive = work.join("archive");
    fs::create_dir_all(archive.join(&diff_id))?;
    fs::rename(&layer, archive.join(&diff_id).join("layer.tar"))?;
    let config_path = archive.join("config.json");
    fs::write(&config_path, config)?;
    let config_id = sha256(&config_path)?;
    fs::rename(&config_path, archive.join(format!("{config_id}.json")))?;
    // docker save's format: manifest.json names the config and the layers.
    let manifest = format!(
        r#"[{{"Config":"{config_id}.json","RepoTags":["{WEAVE_IMAGE}"],"Layers":["{diff_id}/layer.tar"]}}]"#
    );
    fs::write(archive.join("manifest.json"), manifest)?;
    fs::create_dir_all(output.parent().context("the output's directory")?)?;
    tar(
        &archive,
        output,
        &["manifest.json", &format!("{config_id}.json"), &diff_id],
    )?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

/// The shared libraries `ldd` lists for `binary`, loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: ldd says so and exits 1.
        if text.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_ldd(&text)
}

/// The absolute paths in `ldd`'s output (`name => /path (addr)` or
/// `/path (addr)`); the vDSO has none.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("ldd: a library is missing: {}", line.trim());
        }
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn tar(dir: &Path, output: &Path, members: &[&str]) -> Result<()> {
    let mut c = Command::new("tar");
    c.args([
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ])
    .arg("-C")
    .arg(dir)
    .arg("-cf")
    .arg(output)
    .args(members);
    let out = c.output().context("running tar")?;
    ensure!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The hex SHA-256 of `file` (coreutils' `sha256sum`: xtask keeps its
/// dependencies few).
fn sha256(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("running sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed", file.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    ensure!(
        hex.len() == 64,
        "sha256sum {}: unexpected output {text:?}",
        file.display()
    );
    Ok(hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_paths_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f7c)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7c)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f7c)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }
}
