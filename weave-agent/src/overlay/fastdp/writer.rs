//! Writes fastdp's maps from [`Desired`](super::plan::Desired) contents,
//! keeping its own copy of what it wrote (the agent is the maps' only
//! writer), so an update costs a system call per difference only.
//!
//! Order matters, because the programs read the maps while they change:
//! removals go first, so a peer that went away, relays now or lost fastdp is
//! never encapsulated to after the table that says so is published; the
//! configuration that turns the programs on goes last, and the one that turns
//! them off (password mode) first.

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
    pub failures: u64,
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
        let gone: Vec<u32> = self
            .written
            .peers
            .iter()
            .filter(|(id, peer)| want.peers.get(id) != Some(peer))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            let result = self.peers.remove(&id);
            self.check(result, "remove a peer from");
            self.written.peers.remove(&id);
        }
        let gone: Vec<SenderKey> = self
            .written
            .senders
            .iter()
            .filter(|(key, sender)| want.senders.get(key) != Some(sender))
            .map(|(&key, _)| key)
            .collect();
        for key in gone {
            let result = self.senders.remove(&key);
            self.check(result, "remove a sender from");
            self.written.senders.remove(&key);
        }
        for (&id, &peer) in &want.peers {
            if !self.written.peers.contains_key(&id) {
                let result = self.peers.insert(id, peer, 0);
                if self.check(result, "write a peer to") {
                    self.written.peers.insert(id, peer);
                }
            }
        }
        for (&key, &sender) in &want.senders {
            if !self.written.senders.contains_key(&key) {
                let result = self.senders.insert(key, sender, 0);
                if self.check(result, "write a sender to") {
                    self.written.senders.insert(key, sender);
                }
            }
        }
        self.write_config(config);
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
        if self.check(result, "write the configuration to") {
            self.config = Some(config);
        }
    }

    /// Whether `result` is a success; a failure is logged and counted (an
    /// absent entry on removal is not one).
    fn check(&mut self, result: Result<(), MapError>, what: &str) -> bool {
        match result {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => true,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                true
            }
            Err(error) => {
                self.failures += 1;
                tracing::warn!(%error, "fastdp: cannot {what} the kernel's maps");
                false
            }
        }
    }
}
