//! The single snapshot behind `weave status`, printed in Weave's shape.

use std::fmt::{self, Write};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub name: String,
    pub nickname: String,
    pub encryption: bool,
    pub peer_discovery: bool,
    pub targets: usize,
    pub connections: usize,
    pub peers: usize,
    pub ipam_range: Ipv4Net,
    pub default_subnet: Ipv4Net,
    pub addresses_in_use: usize,
    pub containers: usize,
    pub mtu: u32,
    pub dataplane: String,
    /// eBPF counters by name, in a fixed order.
    pub counters: Vec<(String, u64)>,
}

fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    // Weave right-aligns its keys on a 15-column field.
    let _ = writeln!(out, "{key:>15}: {value}");
}

impl Status {
    pub fn render(&self) -> String {
        let mut s = String::new();
        line(&mut s, "Version", &self.version);
        s.push('\n');
        line(&mut s, "Service", "router");
        line(&mut s, "Protocol", "weave 1..2");
        line(&mut s, "Name", format!("{}({})", self.name, self.nickname));
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
            if self.peer_discovery {
                "enabled"
            } else {
                "disabled"
            },
        );
        line(&mut s, "Targets", self.targets);
        line(&mut s, "Connections", self.connections);
        line(&mut s, "Peers", self.peers);
        line(&mut s, "TrustedSubnets", "none");
        s.push('\n');
        line(&mut s, "Service", "ipam");
        line(&mut s, "Status", "ready");
        line(&mut s, "Range", self.ipam_range);
        line(&mut s, "DefaultSubnet", self.default_subnet);
        line(
            &mut s,
            "Addresses",
            format!("{} in use on this peer", self.addresses_in_use),
        );
        s.push('\n');
        line(&mut s, "Service", "dataplane");
        line(&mut s, "Dataplane", &self.dataplane);
        line(&mut s, "MTU", self.mtu);
        line(&mut s, "Containers", self.containers);
        let drops: u64 = self
            .counters
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .map(|(_, n)| n)
            .sum();
        line(
            &mut s,
            "Dropped",
            format!("{drops} frames (weave status dataplane for details)"),
        );
        s
    }

    /// `weave status dataplane`: every counter.
    pub fn render_dataplane(&self) -> String {
        let mut s = String::new();
        line(&mut s, "Dataplane", &self.dataplane);
        for (name, value) in &self.counters {
            line(&mut s, name, value);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_weaves_shape() {
        let st = Status {
            version: "weave-rs 0.1.0".into(),
            name: "02:00:00:00:00:01".into(),
            nickname: "host1".into(),
            encryption: false,
            peer_discovery: true,
            targets: 0,
            connections: 0,
            peers: 1,
            ipam_range: "10.32.0.0/12".parse().unwrap(),
            default_subnet: "10.32.0.0/12".parse().unwrap(),
            addresses_in_use: 2,
            containers: 2,
            mtu: 1376,
            dataplane: "eBPF".into(),
            counters: vec![
                ("drop_spoofed_ip".into(), 3),
                ("to_container_passed".into(), 9),
            ],
        };
        let text = st.render();
        assert!(text.contains("           Name: 02:00:00:00:00:01(host1)\n"));
        assert!(text.contains("     Encryption: disabled\n"));
        assert!(text.contains("          Peers: 1\n"));
        assert!(text.contains("    Connections: 0\n"));
        assert!(text.contains("          Range: 10.32.0.0/12\n"));
        assert!(text.contains("  DefaultSubnet: 10.32.0.0/12\n"));
        assert!(text.contains("        Dropped: 3 frames"));
    }
}
