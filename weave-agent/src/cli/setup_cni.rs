//! `weave setup-cni`: installs the CNI plugin and a network configuration
//! list, so that a container runtime (containerd, CRI-O, kubelet) attaches
//! its pods to weave.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::cni::version::Version;
use crate::config::Paths;

/// The plugin's name: the binary in the CNI bin directory and the `type`.
pub(super) const PLUGIN: &str = "weave-net";
/// The configuration list's file name (runtimes take the first in order).
pub(super) const CONFLIST: &str = "10-weave.conflist";

/// Install the weave CNI plugin: copies `weave-net` (found beside this
/// binary) into the CNI bin directory and writes `10-weave.conflist`, which
/// points the plugin at this agent's control socket, into the CNI
/// configuration directory.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where runtimes look for CNI plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    bin_dir: PathBuf,
    /// Where runtimes look for network configurations.
    #[arg(long, default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// The network's name (`ctr run --cni` and kubelet take the first
    /// configuration in the directory, whatever its name).
    #[arg(long, default_value = "weave")]
    network: String,
    /// The configuration's `cniVersion` (1.0.0 is what containerd 1.6 and
    /// later understand; 1.1.0 adds STATUS and GC).
    #[arg(long, default_value = "1.0.0")]
    cni_version: String,
    /// The plugin binary to install (default: `weave-net` beside `weave`).
    #[arg(long)]
    plugin: Option<PathBuf>,
}

/// The configuration list: one network, the weave plugin alone.
pub(super) fn conflist(network: &str, cni_version: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": network,
        "plugins": [{
            "type": PLUGIN,
            "socket": socket,
        }],
    })
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    if Version::supported(&args.cni_version).is_none() {
        bail!(
            "--cni-version {}: the plugin speaks {}",
            args.cni_version,
            crate::cni::version::SUPPORTED.join(", ")
        );
    }
    let plugin = match args.plugin {
        Some(p) => p,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name(PLUGIN),
    };
    // The socket must be absolute: the runtime runs the plugin from its own
    // working directory.
    let socket = std::path::absolute(&paths.socket)
        .with_context(|| format!("resolving {}", paths.socket.display()))?;
    std::fs::create_dir_all(&args.bin_dir)
        .with_context(|| format!("creating {}", args.bin_dir.display()))?;
    std::fs::create_dir_all(&args.conf_dir)
        .with_context(|| format!("creating {}", args.conf_dir.display()))?;
    // Copied under a temporary name and renamed: a runtime never runs a
    // half-written plugin (and a running one is not overwritten in place).
    let target = args.bin_dir.join(PLUGIN);
    let tmp = args.bin_dir.join(format!(".{PLUGIN}.tmp"));
    std::fs::copy(&plugin, &tmp)
        .with_context(|| format!("copying {} to {}", plugin.display(), tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("installing {}", target.display()))?;
    let list = conflist(&args.network, &args.cni_version, &socket);
    let conf = args.conf_dir.join(CONFLIST);
    let tmp = args.conf_dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, format!("{list:#}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &conf).with_context(|| format!("writing {}", conf.display()))?;
    println!("installed {} and {}", target.display(), conf.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_the_plugin_and_the_socket() {
        let v = conflist("weave", "1.0.0", Path::new("/run/weave/weave.sock"));
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "weave");
        assert_eq!(v["plugins"][0]["type"], PLUGIN);
        assert_eq!(v["plugins"][0]["socket"], "/run/weave/weave.sock");
        // What the plugin receives (the list's version and name, one
        // plugin's keys) is a configuration it accepts.
        let mut one = v["plugins"][0].clone();
        one["cniVersion"] = v["cniVersion"].clone();
        one["name"] = v["name"].clone();
        crate::cni::conf::parse(one.to_string().as_bytes()).unwrap();
    }
}
