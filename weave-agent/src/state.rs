//! What the agent must remember across restarts, written atomically.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::CONTAINER_IFNAME;
use crate::ipam::Ring;
use crate::mac::Mac;
use crate::netlink::NetnsRef;
use crate::peer_name::PeerName;

/// A container attached to the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub container_id: String,
    pub container_name: String,
    /// PID of the container's init when it was attached; names its host port.
    pub pid: u32,
    pub host_ifname: String,
    pub mac: Mac,
    pub cidrs: Vec<Ipv4Net>,
    /// Set for a pod attached by the CNI plugin (`pid` is then 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniRecord>,
    /// Set for an endpoint of a Docker network (the Docker plugin): the
    /// network's ID. Its addresses belong to the IPAM driver, which Docker
    /// calls to release them, and its container end is Docker's to move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<String>,
    /// The container's host name (`-h`), when it lies in the weaveDNS
    /// domain: its name in weaveDNS instead of the container's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Where a CNI attachment lives: the runtime names a pod's namespace by
/// path, and the attachment by (container ID, interface name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRecord {
    pub netns: PathBuf,
    pub ifname: String,
}

impl EndpointRecord {
    /// The container for people: `container NAME`, or its short ID when
    /// it has no name.
    pub fn describe(&self) -> String {
        let name = self.container_name.trim_start_matches('/');
        if name.is_empty() {
            format!(
                "container {}",
                self.container_id.get(..12).unwrap_or(&self.container_id)
            )
        } else {
            format!("container {name}")
        }
    }

    /// The namespace the container's end of the port is in.
    pub fn netns(&self) -> NetnsRef {
        self.cni
            .as_ref()
            .map_or(NetnsRef::Pid(self.pid), |c| NetnsRef::Path(c.netns.clone()))
    }

    /// The name of the container's end of the port.
    pub fn guest_ifname(&self) -> &str {
        self.cni.as_ref().map_or(CONTAINER_IFNAME, |c| &c.ifname)
    }

    /// Is this the CNI attachment (`container_id`, `ifname`)?
    pub fn is_cni(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.cni.as_ref().is_some_and(|c| c.ifname == ifname)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PersistedState {
    pub peer_name: PeerName,
    pub endpoints: Vec<EndpointRecord>,
    /// Peers given to `weave launch`/`connect` and not `forget`-ten.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Who owns which part of the allocation range, as this peer last knew
    /// it (its own allocations are the endpoints' addresses).
    #[serde(default)]
    pub ring: Option<Ring>,
    /// The nicknames of the peers that own part of the ring, as last seen
    /// while they were reachable: `weave rmpeer NICKNAME` names a peer that
    /// is gone, and `weave status ipam` shows who it was.
    #[serde(default)]
    pub nicknames: BTreeMap<PeerName, String>,
    /// The Docker networks of the weave driver on this host and their
    /// subnets: Docker does not create them again after an agent restart.
    #[serde(default)]
    pub docker_networks: BTreeMap<String, Vec<Ipv4Net>>,
    /// The host's addresses on the bridge (`weave expose`), put back after
    /// a restart and held in the ring as this peer's.
    #[serde(default)]
    pub exposed: Vec<Ipv4Net>,
    /// Names given with `weave dns-add` and taken away with `dns-remove`,
    /// on top of the containers' own: (name, address, container ID).
    #[serde(default)]
    pub dns_added: Vec<(String, std::net::Ipv4Addr, String)>,
    #[serde(default)]
    pub dns_removed: Vec<(String, std::net::Ipv4Addr, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({source}); move it away or run 'weave reset'")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn load(path: &Path) -> Result<Option<PersistedState>, StateError> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            op: "reading",
            path: path.to_owned(),
            source,
        }),
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
    }
}

/// Write to a temporary file, flush it to disk, then rename over the old one:
/// a crash leaves either the old state or the new, never half of one.
pub fn save(path: &Path, state: &PersistedState) -> Result<(), StateError> {
    let io = |op, source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("state always serialises");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    file.write_all(&bytes).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_garbage_is_reported() {
        let dir = std::env::temp_dir().join(format!("weave-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_none());
        let st = PersistedState {
            peer_name: PeerName::random(),
            endpoints: vec![
                EndpointRecord {
                    container_id: "abc".into(),
                    container_name: "c1".into(),
                    pid: 42,
                    host_ifname: "vethwepl42".into(),
                    mac: Mac::random_local(),
                    cidrs: vec!["10.32.0.1/12".parse().unwrap()],
                    cni: None,
                    docker_network: None,
                    hostname: None,
                },
                EndpointRecord {
                    container_id: "pod1".into(),
                    container_name: "cni:pod1".into(),
                    pid: 0,
                    host_ifname: "vethweplc012345".into(),
                    mac: Mac::random_local(),
                    cidrs: vec!["10.32.0.2/12".parse().unwrap()],
                    cni: Some(CniRecord {
                        netns: "/var/run/netns/pod1".into(),
                        ifname: "eth0".into(),
                    }),
                    docker_network: None,
                    hostname: None,
                },
                EndpointRecord {
                    container_id: "0123456789ab".into(),
                    container_name: "docker:012345".into(),
                    pid: 0,
                    host_ifname: "vethwepld012345".into(),
                    mac: Mac::random_local(),
                    cidrs: vec!["10.5.0.2/24".parse().unwrap()],
                    cni: None,
                    hostname: None,
                    docker_network: Some("net1".into()),
                },
            ],
            targets: vec!["192.168.1.2".into()],
            ring: Some(
                Ring::init_with_id("10.32.0.0/12".parse().unwrap(), PeerName::random(), 5).unwrap(),
            ),
            nicknames: [(PeerName::random(), "host2".to_string())].into(),
            docker_networks: [("net1".to_string(), vec!["10.5.0.0/24".parse().unwrap()])].into(),
            exposed: vec!["10.32.0.1/12".parse().unwrap()],
            dns_added: vec![(
                "alias.weave.local.".into(),
                "10.32.0.1".parse().unwrap(),
                "abc".into(),
            )],
            dns_removed: Vec::new(),
        };
        save(&path, &st).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.peer_name, st.peer_name);
        assert_eq!(back.endpoints, st.endpoints);
        assert_eq!(back.targets, st.targets);
        assert_eq!(back.ring, st.ring);
        assert_eq!(back.nicknames, st.nicknames);
        assert_eq!(back.exposed, st.exposed);
        assert_eq!(back.dns_added, st.dns_added);
        // A state file from before the ring was persisted still loads.
        let old = serde_json::json!({
            "peer_name": st.peer_name,
            "endpoints": [],
        });
        std::fs::write(&path, old.to_string()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().ring, None);
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
