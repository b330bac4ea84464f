//! `weave stop`: stop the agent, leaving the containers' interfaces in place.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::api::{Request, client};
use crate::config::Paths;

const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Stop the weave agent. Containers keep their interfaces and addresses;
/// the bridge forwards nothing until the next `weave launch`.
#[derive(clap::Args, Debug)]
pub struct Args;

pub(super) fn run(paths: &Paths, _args: Args) -> anyhow::Result<()> {
    match client::call(&paths.socket, &Request::Stop) {
        Ok(_) | Err(client::ClientError::Garbled(_)) => wait_until_gone(paths),
        Err(e) => Err(e.into()),
    }
}

/// The agent is gone once nothing answers and its lock is free.
pub(super) fn wait_until_gone(paths: &Paths) -> anyhow::Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while client::is_running(&paths.socket) || lock_held(&paths.lock_file()) {
        if Instant::now() > deadline {
            bail!("the agent did not stop within {STOP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn lock_held(path: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}
