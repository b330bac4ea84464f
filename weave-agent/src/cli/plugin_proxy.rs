//! `weave plugin-proxy`: the process of the managed Docker plugin that
//! Swarm needs (`cargo xtask plugin` builds it).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Paths;

/// Serve Docker's network and IPAM plugin protocol with a global scope,
/// for Swarm, passing what needs the agent to it over its control socket
/// (`WEAVE_SOCKET`). This is the entrypoint of the managed plugin that
/// `cargo xtask plugin` builds and `docker plugin create` installs; the
/// plugin mounts the host's /run/weave to reach the agent. Not for use by
/// hand: the agent itself serves the local-scope plugin (`launch
/// --plugin-socket`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The socket Docker calls, inside the plugin.
    #[arg(long, default_value = crate::config::DEFAULT_PLUGIN_SOCKET, value_name = "PATH")]
    listen: PathBuf,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = Arc::new(paths.socket.clone());
    runtime.block_on(async {
        let listener = crate::plugin::bind(&args.listen)
            .with_context(|| format!("opening the plugin socket {}", args.listen.display()))?;
        eprintln!(
            "weave plugin-proxy: serving {} for the agent on {}",
            args.listen.display(),
            socket.display()
        );
        crate::plugin::serve(listener, crate::plugin::Backend::Socket(socket)).await;
        Ok(())
    })
}
