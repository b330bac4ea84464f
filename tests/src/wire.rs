//! Reading the overlay off a LAN capture decoded with `tcpdump -T vxlan`:
//! which VXLAN packet, between which hosts, carried which container frame.
//! Every data plane (plain, xdp, fastdp) must show the same on the wire.

use std::net::Ipv4Addr;

/// The UDP port the agents' data planes send VXLAN to (`weave launch`'s default).
pub const DATA_PORT: u16 = 6784;
/// The TCP port of the control plane.
pub const CONTROL_PORT: u16 = 6783;

/// How `tcpdump -T vxlan` shows the first byte of a data-path heartbeat
/// (`weave_agent::overlay::heartbeat::MAGIC`, "WHB" v1) read as VXLAN flags
/// (`VXLAN, flags [invalid] (0x57), vni ...`; the word in brackets varies
/// between tcpdump versions, the byte does not).
pub const HEARTBEAT_FLAGS: &str = "] (0x57), vni";

/// (outer, inner) line pairs of `tcpdump -T vxlan` output: each VXLAN line
/// and the line of the frame it carries. Data-path heartbeats, which share
/// the port, are not VXLAN and are left out.
pub fn vxlan_pairs(decoded: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = decoded.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].contains("VXLAN") && !is_heartbeat(w[0]))
        .map(|w| (w[0].to_string(), w[1].to_string()))
        .collect()
}

/// Whether a `tcpdump -T vxlan` line is a data-path heartbeat.
pub fn is_heartbeat(outer: &str) -> bool {
    outer.contains("VXLAN, flags [") && outer.contains(HEARTBEAT_FLAGS)
}

/// Whether the outer line of a VXLAN packet goes from `from` to `to` (LAN
/// addresses), to the data port.
pub fn vxlan_between(outer: &str, from: Ipv4Addr, to: Ipv4Addr) -> bool {
    outer.contains(&format!("IP {from}.")) && outer.contains(&format!("> {to}.{DATA_PORT}: VXLAN"))
}

/// Whether some VXLAN packet from `from` to `to` (LAN addresses) carries a
/// frame whose line contains `inner`.
pub fn carries(decoded: &str, from: Ipv4Addr, to: Ipv4Addr, inner: &str) -> bool {
    vxlan_pairs(decoded)
        .iter()
        .any(|(o, i)| vxlan_between(o, from, to) && i.contains(inner))
}

/// The VNI of a `tcpdump -T vxlan` outer line (`... VXLAN, flags [I] (0x08), vni 4098`).
pub fn vni(outer: &str) -> Option<u32> {
    outer
        .split("vni ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECODED: &str = "\
IP 192.168.250.1.6784 > 192.168.250.2.6784: VXLAN, flags [I] (0x08), vni 4098
IP 10.0.1.1 > 10.0.1.2: ICMP echo request, id 7, seq 1, length 64
IP 192.168.250.2.6784 > 192.168.250.1.6784: VXLAN, flags [I] (0x08), vni 8193
IP 10.0.1.2 > 10.0.1.1: ICMP echo reply, id 7, seq 1, length 64
IP 192.168.250.1.6784 > 192.168.250.2.6784: VXLAN, flags [invalid] (0x57), vni 15080223
5e:12:e1:9a:9d:bf > 00:00:00:00:00:01, ethertype Unknown (0x8d7c), length 26
";

    #[test]
    fn pairs_outer_and_inner_lines_and_reads_the_vni() {
        let pairs = vxlan_pairs(DECODED);
        assert_eq!(pairs.len(), 2);
        assert_eq!(vni(&pairs[0].0), Some(4098));
        assert_eq!(vni(&pairs[1].0), Some(8193));
        assert_eq!(vni("IP 1.2.3.4 > 5.6.7.8: UDP"), None);
        let (h1, h2) = (
            Ipv4Addr::new(192, 168, 250, 1),
            Ipv4Addr::new(192, 168, 250, 2),
        );
        assert!(carries(DECODED, h1, h2, "ICMP echo request"));
        assert!(carries(DECODED, h2, h1, "ICMP echo reply"));
        assert!(!carries(DECODED, h1, h2, "ICMP echo reply"));
    }
}
