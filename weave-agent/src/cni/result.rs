//! The success results the plugin prints: ADD's (interfaces and addresses,
//! in the caller's version, always with `cniVersion`: containerd 1.6 rejects
//! a result without it, weave issue 3942) and VERSION's.

use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{Value, json};

use super::version::{SUPPORTED, Version};
use crate::api::{CniDns, CniRoute};
use crate::mac::Mac;

/// What the agent made for one ADD.
#[derive(Debug)]
pub struct Attached<'a> {
    /// `CNI_IFNAME`, inside the pod.
    pub ifname: &'a str,
    pub netns: &'a Path,
    /// The host end on the weave bridge.
    pub host_ifname: &'a str,
    /// The pod end's MAC.
    pub mac: Mac,
    pub mtu: u32,
    pub cidrs: &'a [Ipv4Net],
    /// The routes the agent set in the pod.
    pub routes: &'a [CniRoute],
    /// weaveDNS, when it is on.
    pub dns: Option<&'a CniDns>,
}

#[derive(Serialize)]
struct Interface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
}

#[derive(Serialize)]
struct Ip {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    interface: usize,
}

/// ADD's result. A `prevResult` (another plugin ran before this one in the
/// chain) is passed through with this attachment's interfaces and addresses
/// appended, its own indices kept.
pub fn add_result(
    cni_version: &str,
    version: Version,
    attached: &Attached<'_>,
    prev: Option<&Value>,
) -> Value {
    let mut interfaces: Vec<Value> = list(prev, "interfaces");
    let mut ips: Vec<Value> = list(prev, "ips");
    let host_index = interfaces.len();
    interfaces.push(
        serde_json::to_value(Interface {
            name: attached.host_ifname,
            mac: None,
            mtu: Some(attached.mtu),
            sandbox: None,
        })
        .expect("interfaces serialise"),
    );
    interfaces.push(
        serde_json::to_value(Interface {
            name: attached.ifname,
            mac: Some(attached.mac.to_string()),
            mtu: Some(attached.mtu),
            sandbox: Some(attached.netns.display().to_string()),
        })
        .expect("interfaces serialise"),
    );
    for cidr in attached.cidrs {
        ips.push(
            serde_json::to_value(Ip {
                version: version.tags_ip_version().then_some("4"),
                address: cidr.to_string(),
                interface: host_index + 1,
            })
            .expect("ips serialise"),
        );
    }
    let mut routes = list(prev, "routes");
    for route in attached.routes {
        routes.push(match route.gw {
            Some(gw) => json!({"dst": route.dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": route.dst.to_string()}),
        });
    }
    // weaveDNS first (the runtime writes the pod's resolv.conf from it),
    // otherwise what a previous plugin said.
    let dns = attached.dns.map_or_else(
        || {
            prev.and_then(|p| p.get("dns"))
                .cloned()
                .unwrap_or_else(|| json!({}))
        },
        |d| json!({"nameservers": [d.nameserver.to_string()], "search": [d.search]}),
    );
    let mut result = json!({
        "cniVersion": cni_version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    });
    // Anything else a previous plugin reported goes on unchanged.
    if let (Some(Value::Object(prev)), Value::Object(out)) = (prev, &mut result) {
        for (k, v) in prev {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    result
}

fn list(prev: Option<&Value>, key: &str) -> Vec<Value> {
    prev.and_then(|p| p.get(key))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// VERSION's result: the caller's version echoed, and ours.
pub fn version_result(cni_version: &str) -> Value {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(cidrs: &[Ipv4Net]) -> Attached<'_> {
        Attached {
            ifname: "eth0",
            netns: Path::new("/var/run/netns/pod"),
            host_ifname: "vethweplc0a1b2c",
            mac: "02:00:00:00:00:01".parse().unwrap(),
            mtu: 1376,
            cidrs,
            routes: &[],
            dns: None,
        }
    }

    #[test]
    fn the_result_names_both_ends_and_the_address_points_at_the_pod_end() {
        let cidrs = ["10.32.0.5/12".parse().unwrap()];
        let r = add_result(
            "1.0.0",
            Version::supported("1.0.0").unwrap(),
            &attached(&cidrs),
            None,
        );
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["interfaces"][0]["name"], "vethweplc0a1b2c");
        assert!(r["interfaces"][0].get("sandbox").is_none());
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["interfaces"][1]["sandbox"], "/var/run/netns/pod");
        assert_eq!(r["interfaces"][1]["mac"], "02:00:00:00:00:01");
        assert_eq!(r["ips"][0]["address"], "10.32.0.5/12");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"], json!([]));
    }

    #[test]
    fn routes_and_weavedns_are_reported() {
        let cidrs = ["10.32.0.5/12".parse().unwrap()];
        let routes = [
            CniRoute {
                dst: "169.254.53.53/32".parse().unwrap(),
                gw: None,
            },
            CniRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.32.0.1".parse().unwrap()),
            },
        ];
        let dns = CniDns {
            nameserver: "169.254.53.53".parse().unwrap(),
            search: "weave.local".into(),
        };
        let prev =
            json!({"dns": {"nameservers": ["10.0.0.1"]}, "routes": [{"dst": "10.9.0.0/16"}]});
        let r = add_result(
            "1.1.0",
            Version::supported("1.1.0").unwrap(),
            &Attached {
                routes: &routes,
                dns: Some(&dns),
                ..attached(&cidrs)
            },
            Some(&prev),
        );
        assert_eq!(
            r["routes"],
            json!([
                {"dst": "10.9.0.0/16"},
                {"dst": "169.254.53.53/32"},
                {"dst": "0.0.0.0/0", "gw": "10.32.0.1"}
            ])
        );
        assert_eq!(
            r["dns"],
            json!({"nameservers": ["169.254.53.53"], "search": ["weave.local"]})
        );
    }

    #[test]
    fn old_versions_tag_each_ip() {
        let cidrs = ["10.32.0.5/12".parse().unwrap()];
        let r = add_result(
            "0.3.1",
            Version::supported("0.3.1").unwrap(),
            &attached(&cidrs),
            None,
        );
        assert_eq!(r["cniVersion"], "0.3.1");
        assert_eq!(r["ips"][0]["version"], "4");
    }

    #[test]
    fn a_previous_result_is_kept_and_indices_shift() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo0"}],
            "ips": [{"address": "192.168.0.2/24", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.0.0.1"]},
        });
        let cidrs = ["10.32.0.5/12".parse().unwrap()];
        let r = add_result(
            "1.0.0",
            Version::supported("1.0.0").unwrap(),
            &attached(&cidrs),
            Some(&prev),
        );
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"]["nameservers"][0], "10.0.0.1");
    }

    #[test]
    fn version_echoes_and_lists_all() {
        let r = version_result("0.4.0");
        assert_eq!(r["cniVersion"], "0.4.0");
        assert_eq!(
            r["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
