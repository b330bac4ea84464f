//! `weave prime`: wait until IP allocation is ready.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::api::{Request, client};
use crate::config::Paths;

/// Wait until IP allocation is initialised: the peers agreed on the ring
/// (see `launch --ipalloc-init`), proposing it now if nobody has yet. As
/// Weave's, for scripts that start containers on many hosts at once. Says
/// on stderr what it waits for while it waits.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Give up after about this many seconds, checked after each of the
    /// agent's own waits of 30 s (default: wait as long as it takes).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
}

pub(super) fn run(paths: &Paths, args: &Args) -> anyhow::Result<()> {
    let give_up = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        // The agent waits a while itself and then says why it is not ready.
        match client::call(&paths.socket, &Request::Prime) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let text = format!("{e:#}");
                // Only "not ready yet" is worth waiting for.
                if !text.contains("not ready") || give_up.is_some_and(|t| Instant::now() >= t) {
                    bail!("{text}");
                }
                eprintln!("{text}; still waiting");
            }
        }
    }
}
