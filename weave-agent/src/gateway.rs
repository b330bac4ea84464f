//! The exposed host as its containers' gateway: the agent's own nftables
//! table (`table ip weave`) and IPv4 forwarding.
//!
//! A pod's default route points at its node's exposed address on the
//! bridge; the isolation classifiers let such frames up to the host
//! (`weave_common::isolation`). For that to take the pod anywhere:
//! - traffic from an exposed subnet leaving through any interface other
//!   than the bridge is masqueraded, as Weave's `weave expose` did with
//!   `-s SUBNET ! -d SUBNET -j MASQUERADE` in its `WEAVE` nat chain, so the
//!   outside world answers the host's address;
//! - replies the host sends or routes out through the bridge (conntrack's
//!   reply direction: from the node itself, from the outside world, or from
//!   a Kubernetes service's pod after kube-proxy's DNAT) carry
//!   [`GATEWAY_REPLY_MARK`], the one way a frame from outside a container's
//!   subnets reaches it;
//! - the host forwards IPv4 (`net.ipv4.ip_forward`, turned on when the
//!   first subnet is exposed, and left on: Docker and others need it too).
//!
//! Weave also masqueraded traffic entering an exposed subnet from outside
//! (`! -s SUBNET -d SUBNET`); here a connection from outside into a
//! container is refused at its port, so this is not done (Kubernetes'
//! node ports go through kube-proxy's own masquerading).
//!
//! The table is written whole in one `nft -f -` transaction each time the
//! exposed subnets change, and deleted when none is left and by `weave
//! reset`: nothing else of the host's rules is touched.

use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use weave_common::isolation::GATEWAY_REPLY_MARK;

/// The nftables table the agent owns (family `ip`).
pub const TABLE: &str = "weave";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "the nft command is not installed (package nftables): pods cannot use the node as gateway"
    )]
    NftMissing,
    #[error("nft refused the weave table: {stderr}")]
    NftFailed { stderr: String },
    #[error("running nft: {0}")]
    Nft(#[source] std::io::Error),
    #[error("enabling IPv4 forwarding ({IP_FORWARD}): {0}")]
    IpForward(#[source] std::io::Error),
}

/// The nft script that makes `table ip weave` exactly what `exposed` needs
/// (the subnets the host has an address in on `bridge`); none: no table.
pub fn ruleset(bridge: &str, exposed: &[Ipv4Net]) -> String {
    // Adding the table first makes the delete succeed when it is absent.
    let mut script = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    let mut subnets: Vec<Ipv4Net> = exposed.iter().map(Ipv4Net::trunc).collect();
    subnets.sort_unstable();
    subnets.dedup();
    if subnets.is_empty() {
        return script;
    }
    let mut lines = vec![
        format!("table ip {TABLE} {{"),
        "\tchain outbound {".into(),
        "\t\ttype nat hook postrouting priority srcnat; policy accept;".into(),
    ];
    lines.extend(subnets.iter().map(|subnet| {
        format!(
            "\t\toifname != \"{bridge}\" ip saddr {subnet} ip daddr != {subnet} counter masquerade"
        )
    }));
    lines.extend([
        "\t}".into(),
        "\tchain replies {".into(),
        "\t\ttype filter hook postrouting priority filter; policy accept;".into(),
        format!(
            "\t\toifname \"{bridge}\" ct direction reply counter meta mark set meta mark | {GATEWAY_REPLY_MARK:#010x}"
        ),
        "\t}".into(),
        "}".into(),
    ]);
    for line in lines {
        script.push_str(&line);
        script.push('\n');
    }
    script
}

/// Makes the table what `exposed` needs, and the host a router when
/// anything is exposed. Blocking (runs `nft`).
pub fn apply(bridge: &str, exposed: &[Ipv4Net]) -> Result<(), GatewayError> {
    if !exposed.is_empty() && enable_ip_forward()? {
        tracing::info!(
            "IPv4 forwarding enabled (net.ipv4.ip_forward = 1): the exposed host is its containers' gateway"
        );
    }
    if exposed.is_empty() {
        return remove();
    }
    nft(&ruleset(bridge, exposed))
}

/// Deletes the table (nothing to do when it is absent, nor without `nft`:
/// then there can be none). Blocking.
pub fn remove() -> Result<(), GatewayError> {
    match nft(&ruleset("", &[])) {
        Err(GatewayError::NftMissing) => Ok(()),
        other => other,
    }
}

/// Turns IPv4 forwarding on; true when it was off.
fn enable_ip_forward() -> Result<bool, GatewayError> {
    let now = std::fs::read_to_string(IP_FORWARD).map_err(GatewayError::IpForward)?;
    if now.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1\n").map_err(GatewayError::IpForward)?;
    Ok(true)
}

fn nft(script: &str) -> Result<(), GatewayError> {
    let mut child = match Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(GatewayError::NftMissing),
        Err(e) => return Err(GatewayError::Nft(e)),
    };
    let written = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().map_err(GatewayError::Nft)?;
    written.map_err(GatewayError::Nft)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GatewayError::NftFailed {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_exposed_only_deletes_the_table() {
        assert_eq!(
            ruleset("weave", &[]),
            "table ip weave\ndelete table ip weave\n"
        );
    }

    #[test]
    fn each_exposed_subnet_is_masqueraded_once_and_replies_are_marked() {
        let exposed: Vec<Ipv4Net> = ["10.32.0.1/12", "10.0.1.100/24", "10.32.0.9/12"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let script = ruleset("weave", &exposed);
        let masq: Vec<&str> = script
            .lines()
            .filter(|l| l.contains("masquerade"))
            .collect();
        assert_eq!(
            masq,
            [
                "\t\toifname != \"weave\" ip saddr 10.0.1.0/24 ip daddr != 10.0.1.0/24 counter masquerade",
                "\t\toifname != \"weave\" ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 counter masquerade",
            ]
        );
        assert!(
            script.contains(
                "oifname \"weave\" ct direction reply counter meta mark set meta mark | 0x00200000"
            ),
            "{script}"
        );
        assert!(
            script.starts_with("table ip weave\ndelete table ip weave\n"),
            "{script}"
        );
    }
}
