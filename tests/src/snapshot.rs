//! The agent's state as data: `weave status --json` decoded into
//! weave-agent's own [`Status`], the snapshot every line of `weave status`
//! is rendered from. Tests read this rather than the prose, so a changed
//! wording cannot make them pass or fail; weave-agent's unit tests cover
//! the prose.
//!
//! Behind the `agent-status` feature (on for this crate's tests): xtask uses
//! the harness too and must build before the eBPF toolchain that weave-agent
//! needs is installed.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use weave_agent::mesh::{ConnectionState, ConnectionStatus, MeshStatus};
pub use weave_agent::status::Status;

use crate::host::Host;
use crate::poll::wait_for;

impl Host {
    /// `weave status --json`, decoded; an error shows what was printed.
    pub fn try_status(&self) -> Result<Status> {
        let json = self.try_weave(&["status", "--json"])?;
        serde_json::from_str(&json)
            .with_context(|| format!("decoding `weave status --json`:\n{json}"))
    }

    /// `weave status connections --json`: the connections, each with the
    /// data plane carrying it (`fastdp`, `xdp`, `plain`) and why fastdp is off.
    pub fn try_connections(&self) -> Result<Vec<ConnectionStatus>> {
        let json = self.try_weave(&["status", "connections", "--json"])?;
        let section: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("decoding `weave status connections --json`:\n{json}"))?;
        serde_json::from_value(section["connections"].clone()).with_context(|| {
            format!("the connections of `weave status connections --json`:\n{json}")
        })
    }

    /// [`Host::try_status`], panicking on failure.
    #[track_caller]
    pub fn status(&self) -> Status {
        self.try_status()
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.nickname()))
    }

    /// Polls the status (every 100 ms) until `check` accepts it, up to
    /// `timeout`; on timeout the error shows the last status (as `weave
    /// status` prints it) and why it was refused.
    pub fn wait_status<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Status) -> Result<T>,
    ) -> Result<T> {
        wait_for(&format!("{}: {what}", self.nickname()), timeout, || {
            let status = self.try_status()?;
            check(&status).map_err(|e| e.context(format!("weave status:\n{}", status.render())))
        })
    }

    /// Nicknames of the peers this host has an established connection with.
    pub fn connected_to(&self) -> Result<BTreeSet<String>> {
        Ok(established_with(&self.try_status()?.mesh))
    }
}

/// Nicknames of the peers with an established connection in `mesh`.
pub fn established_with(mesh: &MeshStatus) -> BTreeSet<String> {
    mesh.connections
        .iter()
        .filter(|c| c.state == ConnectionState::Established)
        .filter_map(|c| c.nickname.clone())
        .collect()
}

/// Established connections that all known peers report (each direction
/// counts, as in the `Peers:` line: a full mesh of 3 has 6).
pub fn peer_connections(mesh: &MeshStatus) -> usize {
    mesh.peers
        .iter()
        .flat_map(|p| &p.connections)
        .filter(|c| c.established)
        .count()
}
