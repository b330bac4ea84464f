//! The single snapshot behind `weave status`, printed in Weave's shape or as
//! JSON (`--json`). Every line the renderings print is made of its fields,
//! so a script (or a test) reading the JSON sees everything a user reads.

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mesh::{ConnectionStatus, MeshCounters, MeshStatus};
use crate::overlay::{OverlayStats, ShortId};
use crate::peer_name::PeerName;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub encryption: bool,
    pub mesh: MeshStatus,
    pub ipam: IpamStatus,
    pub containers: usize,
    pub mtu: u32,
    /// The eBPF programs on the bridge ports.
    pub classifier: String,
    /// eBPF counters by name, in a fixed order.
    pub counters: Vec<(String, u64)>,
    /// The data plane between hosts ("plain"), with its counters.
    pub overlay: String,
    /// How that data plane runs and why it was chosen.
    #[serde(default)]
    pub dataplane: String,
    /// The engine in userspace that carries what no kernel path takes
    /// ("xdp" under fastdp; otherwise the overlay itself): the data plane
    /// of `overlay_stats`' own counters.
    #[serde(default)]
    pub userspace: String,
    pub overlay_stats: OverlayStats,
    /// weaveDNS; `None` with `--no-dns`.
    #[serde(default)]
    pub dns: Option<crate::agent::DnsStatus>,
}

/// Where the agent sends one snapshot of its status (asked for by the
/// status endpoint and by `weave status`, outside the request queue).
pub type StatusAsk = tokio::sync::oneshot::Sender<Box<Status>>;

/// IP allocation as this peer sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpamStatus {
    /// False with `--ipalloc-range ""` (explicit addresses only): then
    /// `range` and `default_subnet` mean nothing and no peer is listed.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// `ready`, `waiting for consensus`, `all space owned by unreachable
    /// peers - use rmpeer...`, or why a peer's ring was refused.
    pub status: String,
    pub range: Ipv4Net,
    pub default_subnet: Ipv4Net,
    /// `None` while nobody owns anything.
    pub ring_id: Option<u64>,
    /// Addresses given to containers on this peer (outside the range too).
    pub in_use_here: usize,
    /// Every peer that owns part of the range, in name order.
    pub peers: Vec<IpamPeerStatus>,
    /// `run`/`attach` requests waiting for consensus or for space from a
    /// peer (the agent serves one request at a time: 0 or 1).
    #[serde(default)]
    pub pending_allocates: usize,
    /// Addresses this peer is claiming from the peers that own them (for a
    /// waiting `run`/`attach`, or held by its containers before it lost its
    /// ring), and claims refused for addresses its containers hold.
    #[serde(default)]
    pub claims: Vec<ClaimStatus>,
    /// After a relaunch with another `--ipalloc-range` (the saved ring is
    /// discarded, as in Weave): the containers of this peer that still hold
    /// addresses of the old range outside the new one.
    #[serde(default)]
    pub outside_range: Vec<OutsideRange>,
}

/// One address claimed from its owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimStatus {
    pub addr: Ipv4Addr,
    /// The owner per the ring (`None` while the ring is not known yet).
    pub owner: Option<PeerName>,
    pub owner_nickname: Option<String>,
    pub owner_reachable: bool,
    /// For whom: `run/attach`, or the container that holds it.
    pub for_whom: String,
    /// Set when the owner refused: why (the claim is then over).
    pub refused: Option<String>,
}

const fn enabled_by_default() -> bool {
    true
}

/// A container holding addresses of a former allocation range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideRange {
    pub container: String,
    /// The former range.
    pub old_range: Ipv4Net,
    pub addrs: Vec<Ipv4Net>,
}

impl fmt::Display for OutsideRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        write!(
            f,
            "container {} holds {} of the former range {}, outside the allocation range",
            self.container,
            addrs.join(" "),
            self.old_range
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpamPeerStatus {
    pub name: PeerName,
    /// Known for ourselves and reachable peers.
    pub nickname: Option<String>,
    /// Addresses of the range it owns.
    pub owned: u32,
    pub percent: f64,
    /// In use: exact for us, from the free count it last reported for others.
    pub in_use: u32,
    pub reachable: bool,
}

/// `weave status connections --json`: the connections, and the data plane
/// and MTU their lines show.
#[derive(Debug, Serialize)]
pub struct ConnectionsSection<'a> {
    pub dataplane: &'a str,
    pub mtu: u32,
    pub connections: &'a [ConnectionStatus],
}

/// `weave status dataplane --json`: every counter, with the data planes
/// they belong to.
#[derive(Debug, Serialize)]
pub struct DataplaneSection<'a> {
    pub classifier: &'a str,
    pub counters: &'a [(String, u64)],
    pub overlay: &'a str,
    pub dataplane: &'a str,
    pub overlay_stats: &'a OverlayStats,
    pub mesh_counters: &'a MeshCounters,
}

impl IpamStatus {
    /// `weave status ipam`, in Weave's shape: one line per peer.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for p in &self.peers {
            let who = format!("{}({})", p.name, p.nickname.as_deref().unwrap_or(""));
            let _ = write!(
                s,
                "{who:<32} {:>8} IPs ({:.1}% of total) ({} active)",
                p.owned, p.percent, p.in_use
            );
            if !p.reachable {
                s.push_str(" - unreachable!");
            }
            s.push('\n');
        }
        if !self.enabled {
            let _ = writeln!(s, "IP allocation is {}", self.status);
        } else if self.peers.is_empty() {
            let _ = writeln!(s, "nobody owns any of {} yet: {}", self.range, self.status);
        }
        for c in &self.claims {
            let owner = c.owner.map_or_else(
                || "its owner (the ring is not known yet)".to_owned(),
                |o| format!("{o}({})", c.owner_nickname.as_deref().unwrap_or("")),
            );
            let _ = write!(s, "claiming {} for {} from {owner}", c.addr, c.for_whom);
            if let Some(why) = &c.refused {
                let _ = write!(s, " - refused: {why}");
            } else if c.owner.is_some() && !c.owner_reachable {
                s.push_str(" - unreachable!");
            }
            s.push('\n');
        }
        for holder in &self.outside_range {
            let _ = writeln!(s, "{holder} {}", self.range);
        }
        s
    }
}

fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    // Weave right-aligns its keys on a 15-column field.
    let _ = writeln!(out, "{key:>15}: {value}");
}

/// `n` bytes for people: B, KiB, MiB, GiB with one decimal.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Status {
    /// A neighbour by its short id: its nickname, or the id when this peer
    /// does not know it (any more).
    pub fn peer_label(&self, id: ShortId) -> String {
        self.peer(id)
            .map_or_else(|| format!("peer {id}"), |p| p.nickname.clone())
    }

    /// The peer of short id `id`, if this peer knows it.
    pub fn peer(&self, id: ShortId) -> Option<&crate::mesh::PeerStatus> {
        self.mesh.peers.iter().find(|p| p.short_id == id)
    }

    /// The eBPF counter `name`, if the classifier reported it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find_map(|(n, v)| (n == name).then_some(*v))
    }

    pub fn connections_section(&self) -> ConnectionsSection<'_> {
        ConnectionsSection {
            dataplane: &self.mesh.dataplane,
            mtu: self.mesh.mtu,
            connections: &self.mesh.connections,
        }
    }

    pub fn dataplane_section(&self) -> DataplaneSection<'_> {
        DataplaneSection {
            classifier: &self.classifier,
            counters: &self.counters,
            overlay: &self.overlay,
            dataplane: &self.dataplane,
            overlay_stats: &self.overlay_stats,
            mesh_counters: &self.mesh.counters,
        }
    }

    pub fn render(&self) -> String {
        let mesh = &self.mesh;
        let mut s = String::new();
        line(&mut s, "Version", &self.version);
        s.push('\n');
        line(&mut s, "Service", "router");
        line(
            &mut s,
            "Protocol",
            format!(
                "{} {}..{}",
                mesh.protocol, mesh.protocol_min_version, mesh.protocol_max_version
            ),
        );
        line(&mut s, "Name", format!("{}({})", mesh.name, mesh.nickname));
        line(
            &mut s,
            "Encryption",
            if self.encryption {
                "enabled"
            } else {
                "disabled"
            },
        );
        line(
            &mut s,
            "PeerDiscovery",
            if mesh.discovery {
                "enabled"
            } else {
                "disabled"
            },
        );
        line(&mut s, "Targets", mesh.targets.len());
        line(&mut s, "Connections", mesh.connection_counts());
        line(&mut s, "Peers", mesh.peer_counts());
        line(&mut s, "TrustedSubnets", "none");
        s.push('\n');
        // Weave leaves the section out when IP allocation is off.
        if self.ipam.enabled {
            line(&mut s, "Service", "ipam");
            line(&mut s, "Status", &self.ipam.status);
            line(&mut s, "Range", self.ipam.range);
            line(&mut s, "DefaultSubnet", self.ipam.default_subnet);
            line(
                &mut s,
                "Addresses",
                format!("{} in use on this peer", self.ipam.in_use_here),
            );
            s.push('\n');
        }
        line(&mut s, "Service", "dataplane");
        line(
            &mut s,
            "Overlay",
            format!("{} (VXLAN over UDP port {})", self.overlay, mesh.data_port),
        );
        line(&mut s, "Dataplane", &self.dataplane);
        line(&mut s, "Bridge", &self.classifier);
        line(&mut s, "MTU", self.mtu);
        line(&mut s, "Containers", self.containers);
        let drops: u64 = self
            .counters
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .map(|(_, n)| n)
            .sum();
        let o = &self.overlay_stats;
        let overlay_drops = o.dropped_malformed
            + o.dropped_unknown_sender
            + o.dropped_no_route
            + o.dropped_oversize
            + o.dropped_unauthenticated
            + o.dropped_replayed
            + o.dropped_path_mtu;
        line(
            &mut s,
            "Dropped",
            format!(
                "{drops} on the bridge, {overlay_drops} between peers (weave status dataplane)"
            ),
        );
        s
    }

    /// `weave status dns`: weaveDNS's table and counters, or that it is off.
    pub fn render_dns(&self) -> String {
        self.dns.as_ref().map_or_else(
            || "weaveDNS is off (--no-dns)\n".to_string(),
            crate::agent::DnsStatus::render,
        )
    }

    /// `weave status dataplane`: every counter.
    pub fn render_dataplane(&self) -> String {
        let mut s = String::new();
        line(&mut s, "Bridge", &self.classifier);
        for (name, value) in &self.counters {
            line(&mut s, name, value);
        }
        s.push('\n');
        line(&mut s, "Overlay", &self.overlay);
        line(&mut s, "Dataplane", &self.dataplane);
        let o = &self.overlay_stats;
        for (name, value) in [
            ("frames_sent", o.frames_sent),
            ("frames_received", o.frames_received),
            ("frames_relayed", o.frames_relayed),
            ("frames_coalesced", o.frames_coalesced),
            ("frames_segmented", o.frames_segmented),
            ("drop_malformed", o.dropped_malformed),
            ("drop_unknown_sender", o.dropped_unknown_sender),
            ("drop_no_route", o.dropped_no_route),
            ("drop_oversize", o.dropped_oversize),
            ("drop_unauthenticated", o.dropped_unauthenticated),
            ("drop_replayed", o.dropped_replayed),
            ("drop_spoofed", o.dropped_spoofed),
            ("drop_send_failed", o.dropped_send_failed),
            ("drop_overflow", o.dropped_overflow),
            ("drop_path_mtu", o.dropped_path_mtu),
            ("macs_not_learnt", o.macs_not_learnt),
            ("gso_refused", o.gso_refused),
            ("path_mtu_fragments", o.path_mtu_fragments),
            ("path_mtu_icmp", o.path_mtu_icmp),
            ("fastdp_map_failures", o.fastdp_map_failures),
        ] {
            line(&mut s, name, value);
        }
        if !o.neighbours.is_empty() {
            s.push('\n');
            line(
                &mut s,
                "Traffic by peer",
                "inner frames (bytes), per data plane",
            );
            for t in &o.neighbours {
                line(
                    &mut s,
                    &self.peer_label(t.peer),
                    format!(
                        "{:<6} sent {} ({}), received {} ({}), dropped {}",
                        t.dataplane,
                        t.sent_frames,
                        human_bytes(t.sent_bytes),
                        t.received_frames,
                        human_bytes(t.received_bytes),
                        t.dropped
                    ),
                );
            }
        }
        s.push('\n');
        line(&mut s, "Control plane", "");
        for (name, value) in self.mesh.counters.named() {
            line(&mut s, name, value);
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot with a bit of everything (the HTTP endpoint's tests use it too).
    pub(crate) fn sample() -> Status {
        let mesh = crate::mesh::status::tests::sample();
        Status {
            version: "weave-rs 0.1.0".into(),
            encryption: false,
            ipam: IpamStatus {
                enabled: true,
                status: "ready".into(),
                range: "10.32.0.0/12".parse().unwrap(),
                default_subnet: "10.32.0.0/12".parse().unwrap(),
                ring_id: Some(7),
                in_use_here: 2,
                peers: vec![
                    IpamPeerStatus {
                        name: mesh.name,
                        nickname: Some(mesh.nickname.clone()),
                        owned: 524288,
                        percent: 50.0,
                        in_use: 2,
                        reachable: true,
                    },
                    IpamPeerStatus {
                        name: "02:00:00:00:00:09".parse().unwrap(),
                        nickname: None,
                        owned: 524288,
                        percent: 50.0,
                        in_use: 0,
                        reachable: false,
                    },
                ],
                pending_allocates: 0,
                claims: Vec::new(),
                outside_range: Vec::new(),
            },
            containers: 2,
            mtu: 1450,
            classifier: "eBPF".into(),
            counters: vec![
                ("drop_spoofed_ip".into(), 3),
                ("to_container_passed".into(), 9),
            ],
            overlay: "plain".into(),
            dataplane: "capture socket on vethwe-datapath".into(),
            userspace: "plain".into(),
            overlay_stats: OverlayStats {
                dropped_malformed: 4,
                neighbours: vec![crate::overlay::NeighbourTraffic {
                    peer: mesh.peers[1].short_id,
                    dataplane: "plain".into(),
                    sent_frames: 10,
                    sent_bytes: 15_000,
                    received_frames: 5,
                    received_bytes: 3 << 20,
                    dropped: 1,
                }],
                ..Default::default()
            },
            mesh,
            dns: None,
        }
    }

    #[test]
    fn renders_in_weaves_shape() {
        let st = sample();
        let mesh = &st.mesh;
        let text = st.render();
        let name = format!("           Name: {}({})\n", mesh.name, mesh.nickname);
        assert!(text.contains(&name), "{text}");
        assert!(text.contains("     Encryption: disabled\n"));
        assert!(text.contains(&format!("    Connections: {}\n", mesh.connection_counts())));
        assert!(text.contains(&format!("          Peers: {}\n", mesh.peer_counts())));
        assert!(text.contains("          Range: 10.32.0.0/12\n"));
        assert!(text.contains("  DefaultSubnet: 10.32.0.0/12\n"));
        assert!(text.contains("         Status: ready\n"), "{text}");
        let ipam = st.ipam.render();
        assert!(
            ipam.contains("524288 IPs (50.0% of total) (2 active)\n"),
            "{ipam}"
        );
        assert!(
            ipam.contains("02:00:00:00:00:09()") && ipam.contains("(0 active) - unreachable!\n"),
            "{ipam}"
        );
        assert!(text.contains("        Dropped: 3 on the bridge, 4 between peers"));
        let dataplane = st.render_dataplane();
        assert!(dataplane.contains("drop_spoofed_ip: 3"));
        assert!(dataplane.contains(" drop_malformed: 4"));
        let neighbour = &st.mesh.peers[1].nickname;
        assert!(
            dataplane.contains(&format!(
                "{neighbour:>15}: plain  sent 10 (14.6 KiB), received 5 (3.0 MiB), dropped 1\n"
            )),
            "{dataplane}"
        );

        // `--json` carries all of it: the text rendered from the decoded
        // snapshot is the same, byte for byte.
        let json = serde_json::to_string(&st).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.render(), text);
        assert_eq!(back.render_dataplane(), dataplane);
        assert_eq!(back.ipam.render(), ipam);
        assert_eq!(back.mesh, st.mesh);
        assert_eq!(back.counter("drop_spoofed_ip"), Some(3));
        assert_eq!(back.counter("nonexistent"), None);
        let section = serde_json::to_value(st.connections_section()).unwrap();
        assert_eq!(section["mtu"], 1376);
        assert_eq!(section["connections"].as_array().unwrap().len(), 4);
        let section = serde_json::to_value(st.dataplane_section()).unwrap();
        assert_eq!(section["overlay_stats"]["dropped_malformed"], 4);
        assert_eq!(section["counters"][0][0], "drop_spoofed_ip");
    }
}
