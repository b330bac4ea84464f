//! The network configuration the runtime gives on stdin.
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "weave", "type": "weave-net",
//!   "socket": "/run/weave/weave.sock", "addresses": ["net:10.32.1.0/24"] }
//! ```
//! `socket` is the agent's control socket (default `/run/weave/weave.sock`);
//! `addresses` are what `weave attach` takes (`net:CIDR`, `net:default`, or
//! an exact `ADDRESS/PREFIX`; default: one address in the default subnet).
//! Unknown keys (`runtimeConfig`, `args`, ...) are ignored, as the spec asks.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{CniError, code};
use super::version::Version;
use crate::api::CniAttachment;
use crate::ipam::{AddrRequest, parse_addr_requests};

pub const DEFAULT_SOCKET: &str = "/run/weave/weave.sock";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    socket: Option<PathBuf>,
    #[serde(default)]
    addresses: Vec<String>,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Deserialize)]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// A configuration checked for what every verb needs.
#[derive(Debug)]
pub struct NetConf {
    /// As given (results and errors repeat it).
    pub cni_version: String,
    pub version: Version,
    pub socket: PathBuf,
    pub addrs: Vec<AddrRequest>,
    pub prev_result: Option<serde_json::Value>,
    /// GC's list; `None` when absent.
    pub valid_attachments: Option<Vec<CniAttachment>>,
}

/// The version a (possibly broken) configuration claims, for the error
/// result: the spec wants errors in the caller's version where it can.
pub fn claimed_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OnlyVersion {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<OnlyVersion>(stdin)
        .ok()?
        .cni_version
}

/// Parses and checks a configuration: undecodable is code 6, a missing or
/// invalid field 7, a version this plugin does not speak 1.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let raw: Raw = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    let invalid = |details: String| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            details,
        )
    };
    let cni_version = raw
        .cni_version
        .ok_or_else(|| invalid("cniVersion is missing".into()))?;
    let version = Version::supported(&cni_version).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {cni_version:?} is not one of {}",
                super::version::SUPPORTED.join(", ")
            ),
        )
    })?;
    let name = raw.name.ok_or_else(|| invalid("name is missing".into()))?;
    if !valid_network_name(&name) {
        return Err(invalid(format!(
            "name {name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit"
        )));
    }
    if raw.kind.is_none_or(|t| t.is_empty()) {
        return Err(invalid("type is missing".into()));
    }
    let (addrs, rest) =
        parse_addr_requests(&raw.addresses).map_err(|e| invalid(format!("addresses: {e}")))?;
    if let Some(arg) = rest.first() {
        return Err(invalid(format!(
            "addresses: {arg:?} is not net:CIDR, net:default or ADDRESS/PREFIX"
        )));
    }
    Ok(NetConf {
        cni_version,
        version,
        socket: raw.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        addrs,
        prev_result: raw.prev_result,
        valid_attachments: raw.valid_attachments.map(|list| {
            list.into_iter()
                .map(|a| CniAttachment {
                    container_id: a.container_id,
                    ifname: a.ifname,
                })
                .collect()
        }),
    })
}

/// The spec's rule for network names.
fn valid_network_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_parses() {
        let conf = parse(
            br#"{"cniVersion":"1.1.0","name":"weave","type":"weave-net",
                "socket":"/tmp/w.sock","addresses":["net:10.32.1.0/24"],
                "runtimeConfig":{"x":1},
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(conf.version, Version::V1_1_0);
        assert_eq!(conf.socket, PathBuf::from("/tmp/w.sock"));
        assert_eq!(
            conf.addrs,
            vec![AddrRequest::Subnet("10.32.1.0/24".parse().unwrap())]
        );
        assert_eq!(
            conf.valid_attachments.unwrap(),
            vec![CniAttachment {
                container_id: "a".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn defaults_apply() {
        let conf = parse(br#"{"cniVersion":"0.3.1","name":"w","type":"weave-net"}"#).unwrap();
        assert_eq!(conf.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(conf.addrs, vec![AddrRequest::Default]);
        assert!(conf.valid_attachments.is_none());
    }

    #[test]
    fn each_fault_has_its_code() {
        let cases: [(&[u8], u32); 9] = [
            (b"not json", code::DECODE),
            (br#"{"cniVersion":1}"#, code::DECODE),
            (br#"{"name":"w","type":"weave-net"}"#, code::INVALID_CONFIG),
            (
                br#"{"cniVersion":"0.2.0","name":"w","type":"weave-net"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                br#"{"cniVersion":"9.9.9","name":"w","type":"weave-net"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                br#"{"cniVersion":"1.0.0","type":"weave-net"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"-w","type":"weave-net"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"w","type":"weave-net","addresses":["10.0.0.1"]}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"w","type":"weave-net","addresses":["eth0"]}"#,
                code::INVALID_CONFIG,
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(
                err.code,
                expected,
                "{}: {err}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            claimed_version(br#"{"cniVersion":"0.2.0"}"#).as_deref(),
            Some("0.2.0")
        );
        assert_eq!(claimed_version(b"garbage"), None);
    }
}
