//! The node list (`GET /api/v1/nodes`, a `v1.NodeList`) reduced to the
//! peers to connect to: each node's `InternalIP`, except this node's.

use std::net::IpAddr;

use serde::Deserialize;

/// Why a node list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeListError {
    #[error("the API server's node list is not a v1.NodeList: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the API server answered a {kind} instead of a NodeList")]
    WrongKind { kind: String },
}

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    items: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// The `InternalIP` addresses of the nodes in `json` (a `v1.NodeList`), in
/// the list's order, without the node named `this_node`. A node with no
/// parseable `InternalIP` is skipped (it cannot be reached yet; it will
/// connect to us once it runs the agent).
///
/// # Errors
/// `json` is not a node list.
pub fn internal_ips(json: &[u8], this_node: Option<&str>) -> Result<Vec<IpAddr>, NodeListError> {
    let list: NodeList = serde_json::from_slice(json)?;
    if let Some(kind) = list.kind.filter(|k| k != "NodeList") {
        return Err(NodeListError::WrongKind { kind });
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for node in list.items {
        if this_node.is_some_and(|me| me == node.metadata.name) {
            continue;
        }
        let ip = node
            .status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP")
            .find_map(|a| a.address.parse::<IpAddr>().ok());
        if let Some(ip) = ip.filter(|ip| !ips.contains(ip)) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `kubectl get nodes -o json` (kind 1.29).
    const LIST: &str = r#"{
      "kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1234"},
      "items": [
        {"metadata": {"name": "kind-control-plane", "labels": {}},
         "status": {"addresses": [
            {"type": "InternalIP", "address": "172.18.0.2"},
            {"type": "Hostname", "address": "kind-control-plane"}]}},
        {"metadata": {"name": "kind-worker"},
         "status": {"addresses": [
            {"type": "Hostname", "address": "kind-worker"},
            {"type": "ExternalIP", "address": "203.0.113.9"},
            {"type": "InternalIP", "address": "172.18.0.3"}]}},
        {"metadata": {"name": "kind-worker2"},
         "status": {"addresses": [{"type": "InternalIP", "address": "fd00::4"}]}},
        {"metadata": {"name": "not-ready"}, "status": {}},
        {"metadata": {"name": "garbled"},
         "status": {"addresses": [{"type": "InternalIP", "address": "not-an-ip"}]}}
      ]}"#;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn takes_each_internal_ip_but_this_nodes() {
        assert_eq!(
            internal_ips(LIST.as_bytes(), Some("kind-worker")).unwrap(),
            ips(&["172.18.0.2", "fd00::4"])
        );
        assert_eq!(
            internal_ips(LIST.as_bytes(), None).unwrap(),
            ips(&["172.18.0.2", "172.18.0.3", "fd00::4"])
        );
    }

    #[test]
    fn an_empty_list_is_no_peers() {
        let empty = r#"{"kind":"NodeList","apiVersion":"v1","items":[]}"#;
        assert!(internal_ips(empty.as_bytes(), None).unwrap().is_empty());
        assert!(
            internal_ips(br#"{"kind":"NodeList"}"#, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":403}"#;
        let e = internal_ips(status.as_bytes(), None).unwrap_err();
        assert!(
            e.to_string().contains("a Status instead of a NodeList"),
            "{e}"
        );
        assert!(internal_ips(b"<html>", None).is_err());
        assert!(internal_ips(br#"{"items": 3}"#, None).is_err());
    }
}
