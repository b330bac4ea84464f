//! Writes fastdp's maps from [`Desired`](super::plan::Desired) contents,
//! keeping its own copy of what it wrote (the agent is the maps' only
//! writer), so an update costs a system call per difference only.
//!
//! Order matters, because the programs read the maps while they change:
//! removals go first, so a peer that went away, relays now or lost fastdp is
//! never encapsulated to after the table that says so is published; the
//! configuration that turns the programs on goes last, and the one that turns
//! them off (password mode) first.

use std::hash::Hash;

use aya::Pod;
use aya::maps::{Array, HashMap, MapData, MapError};
use weave_common::fastdp::{FLAG_ENABLED, FastdpConfig, FastdpPeer, Sender, SenderKey};

use super::plan::Desired;

pub(crate) struct Writer {
    config_map: Array<MapData, FastdpConfig>,
    peers: HashMap<MapData, u32, FastdpPeer>,
    senders: HashMap<MapData, SenderKey, Sender>,
    written: Desired,
    config: Option<FastdpConfig>,
    /// Writes the kernel refused (a full map, memory): logged, counted.
    failures: u64,
}

impl Writer {
    pub(crate) fn new(
        config_map: Array<MapData, FastdpConfig>,
        peers: HashMap<MapData, u32, FastdpPeer>,
        senders: HashMap<MapData, SenderKey, Sender>,
    ) -> Self {
        Self {
            config_map,
            peers,
            senders,
            written: Desired::default(),
            config: None,
            failures: 0,
        }
    }

    /// Makes the maps hold `want` under `config`.
    pub(crate) fn apply(&mut self, want: &Desired, config: FastdpConfig) {
        if config.flags & FLAG_ENABLED == 0 {
            self.write_config(config);
        }
        let failures = &mut self.failures;
        remove_stale(
            &mut self.peers,
            &mut self.written.peers,
            &want.peers,
            failures,
        );
        remove_stale(
            &mut self.senders,
            &mut self.written.senders,
            &want.senders,
            failures,
        );
        add_new(
            &mut self.peers,
            &mut self.written.peers,
            &want.peers,
            failures,
        );
        add_new(
            &mut self.senders,
            &mut self.written.senders,
            &want.senders,
            failures,
        );
        self.write_config(config);
    }

    /// Writes the kernel refused so far.
    pub(crate) const fn failures(&self) -> u64 {
        self.failures
    }

    /// What the maps hold now.
    pub(crate) const fn written(&self) -> &Desired {
        &self.written
    }

    fn write_config(&mut self, config: FastdpConfig) {
        if self.config == Some(config) {
            return;
        }
        let result = self.config_map.set(0, config, 0);
        if check(result, &mut self.failures) {
            self.config = Some(config);
        }
    }
}

/// Removes from `map` (and from `written`, its copy) every entry that
/// `want` does not hold as it is.
fn remove_stale<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    map: &mut HashMap<MapData, K, V>,
    written: &mut std::collections::HashMap<K, V>,
    want: &std::collections::HashMap<K, V>,
    failures: &mut u64,
) {
    written.retain(|key, value| {
        if want.get(key) == Some(value) {
            return true;
        }
        // Forgotten even when the removal failed: the next write replaces it.
        check(map.remove(key), failures);
        false
    });
}

/// Writes to `map` every entry of `want` that `written` does not hold yet.
fn add_new<K: Pod + Eq + Hash, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    written: &mut std::collections::HashMap<K, V>,
    want: &std::collections::HashMap<K, V>,
    failures: &mut u64,
) {
    for (key, value) in want {
        if !written.contains_key(key) && check(map.insert(key, value, 0), failures) {
            written.insert(*key, *value);
        }
    }
}

/// Whether `result` is a success; a failure is logged and counted (an
/// absent entry on removal is not one).
fn check(result: Result<(), MapError>, failures: &mut u64) -> bool {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => true,
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => true,
        Err(error) => {
            *failures += 1;
            tracing::warn!(%error, "fastdp: a write to the kernel's maps failed");
            false
        }
    }
}
