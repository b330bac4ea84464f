//! libnetwork's remote driver and IPAM driver protocol (Docker's legacy,
//! socket-discovered plugins): the JSON of each call, and the pure
//! translation of a call into what the agent must do ([`Action`]) and of
//! the agent's answer back into JSON. No I/O here, so every shape is
//! unit-tested.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::{PluginAnswer, PluginCall};
use crate::config::CONTAINER_IFNAME;
use crate::mac::Mac;

/// The content type of plugin replies.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// The local and global address spaces our IPAM driver names (Weave's).
const LOCAL_SPACE: &str = "weavelocal";
const GLOBAL_SPACE: &str = "weaveglobal";

/// Docker asks IPAM for a gateway address with this option.
const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
const GATEWAY_TYPE: &str = "com.docker.network.gateway";

/// libnetwork's route type for a destination reached on the interface
/// itself (`types.CONNECTED`), with no next hop.
const ROUTE_CONNECTED: u8 = 1;

/// The scope the network driver declares. Local for the legacy plugin the
/// agent serves itself (`docker network create` on each host, no cluster
/// store); global for the managed plugin Swarm uses (`weave plugin-proxy`),
/// whose networks the swarm managers create once for every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Local,
    Global,
}

/// What a call needs: an answer the plugin gives at once, or the agent's
/// state (then [`reply`] turns the agent's answer into JSON).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Answer(Value),
    Agent(PluginCall),
}

/// A call refused: Docker shows `message` to the user. `status` is the HTTP
/// status (Docker reads `Err` whatever it is).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    /// The body Docker expects with an error.
    pub fn body(&self) -> Value {
        json!({ "Err": self.message })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
}

#[derive(Debug, Deserialize)]
struct NetworkOnly {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<EndpointInterface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInterface {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPool {
    #[serde(default)]
    address_space: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
}

/// libnetwork's `DiscoveryNotification`: a `DiscoveryType` (1, node
/// discovery; 2 and 3, encryption keys) and data of that type's shape.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Discovery {
    discovery_type: u32,
    #[serde(default)]
    discovery_data: Value,
}

/// libnetwork's `discoverapi.NodeDiscovery`.
const NODE_DISCOVERY: u32 = 1;

/// The node a discovery names, unless it is this node (`Self`) or not a
/// node discovery at all.
fn discovered_node(method: &str, req: &Discovery) -> Result<Option<Ipv4Addr>, Refusal> {
    if req.discovery_type != NODE_DISCOVERY {
        return Ok(None);
    }
    // NodeDiscoveryData: {"Address", "BindAddress", "Self"}.
    let data = &req.discovery_data;
    if data.get("Self").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(None);
    }
    let address = data.get("Address").and_then(Value::as_str).unwrap_or("");
    address.parse().map(Some).map_err(|_| {
        Refusal::bad(format!(
            "{method}: Address {address:?} is not an IPv4 address"
        ))
    })
}

fn parse<'a, T: Deserialize<'a>>(method: &str, body: &'a [u8]) -> Result<T, Refusal> {
    // Docker sends no body at all for the calls without arguments.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| Refusal::bad(format!("{method}: malformed request: {e}")))
}

fn non_empty(method: &str, what: &str, value: String) -> Result<String, Refusal> {
    if value.is_empty() {
        return Err(Refusal::bad(format!("{method}: {what} is missing")));
    }
    Ok(value)
}

fn cidr(method: &str, what: &str, s: &str) -> Result<Ipv4Net, Refusal> {
    s.parse::<Ipv4Net>()
        .map_err(|_| Refusal::bad(format!("{method}: {what} {s:?} is not an IPv4 CIDR")))
}

/// The pool ID our `RequestPool` hands out: `weave-<subnet>` in the local
/// address space, `weaveglobal-<subnet>` in the global one (Weave's was
/// `weave-<subnet>-<range>`; sub-pools are refused here).
fn pool_id(subnet: Ipv4Net, global: bool) -> String {
    if global {
        format!("{GLOBAL_SPACE}-{subnet}")
    } else {
        format!("weave-{subnet}")
    }
}

/// A pool ID's subnet.
fn parse_pool_id(method: &str, id: &str) -> Result<Ipv4Net, Refusal> {
    id.strip_prefix(GLOBAL_SPACE)
        .and_then(|r| r.strip_prefix('-'))
        .or_else(|| id.strip_prefix("weave-"))
        .and_then(|s| s.parse::<Ipv4Net>().ok())
        .ok_or_else(|| Refusal::bad(format!("{method}: unknown pool {id:?}")))
}

/// The options of `docker network create -o`: Docker passes them in
/// `com.docker.network.generic`. None are understood yet, so any is refused
/// rather than silently ignored.
fn check_driver_options(options: &BTreeMap<String, Value>) -> Result<(), Refusal> {
    let Some(generic) = options.get("com.docker.network.generic") else {
        return Ok(());
    };
    if let Some(map) = generic.as_object()
        && let Some(key) = map.keys().next()
    {
        return Err(Refusal::bad(format!(
            "CreateNetwork: unknown driver option {key:?} (the weave driver takes none)"
        )));
    }
    Ok(())
}

/// Translates one call (`/NetworkDriver.Join`, ...) with its body.
pub fn decode(path: &str, body: &[u8], scope: Scope) -> Result<Action, Refusal> {
    let method = path.trim_start_matches('/');
    let answer = |v: Value| Ok(Action::Answer(v));
    let agent = |c: PluginCall| Ok(Action::Agent(c));
    match method {
        "Plugin.Activate" => answer(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => answer(match scope {
            Scope::Local => json!({ "Scope": "local" }),
            // One network for every node, connected across them.
            Scope::Global => json!({ "Scope": "global", "ConnectivityScope": "global" }),
        }),
        "NetworkDriver.CreateNetwork" => {
            let req: CreateNetwork = parse(method, body)?;
            let network_id = non_empty(method, "NetworkID", req.network_id)?;
            check_driver_options(&req.options)?;
            if req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(Refusal::bad(
                    "CreateNetwork: IPv6 is not supported by weave",
                ));
            }
            let subnets = req
                .ipv4_data
                .unwrap_or_default()
                .iter()
                .map(|d| cidr(method, "pool", &d.pool).map(|n| n.trunc()))
                .collect::<Result<Vec<_>, _>>()?;
            if subnets.is_empty() {
                return Err(Refusal::bad(
                    "CreateNetwork: the network has no IPv4 subnet",
                ));
            }
            agent(PluginCall::CreateNetwork {
                network_id,
                subnets,
            })
        }
        "NetworkDriver.DeleteNetwork" => {
            let req: NetworkOnly = parse(method, body)?;
            agent(PluginCall::DeleteNetwork {
                network_id: non_empty(method, "NetworkID", req.network_id)?,
            })
        }
        "NetworkDriver.CreateEndpoint" => {
            let req: CreateEndpoint = parse(method, body)?;
            let iface = req.interface.unwrap_or_default();
            if !iface.address_ipv6.is_empty() {
                return Err(Refusal::bad(
                    "CreateEndpoint: IPv6 is not supported by weave",
                ));
            }
            let address = non_empty(method, "Interface.Address", iface.address)?;
            let mac = if iface.mac_address.is_empty() {
                None
            } else {
                Some(iface.mac_address.parse::<Mac>().map_err(|e| {
                    Refusal::bad(format!("CreateEndpoint: Interface.MacAddress: {e}"))
                })?)
            };
            agent(PluginCall::CreateEndpoint {
                network_id: non_empty(method, "NetworkID", req.network_id)?,
                endpoint_id: endpoint_id(method, req.endpoint_id)?,
                cidr: cidr(method, "Interface.Address", &address)?,
                mac,
            })
        }
        "NetworkDriver.DeleteEndpoint" | "NetworkDriver.Join" => {
            let req: Endpoint = parse(method, body)?;
            let network_id = non_empty(method, "NetworkID", req.network_id)?;
            let endpoint_id = endpoint_id(method, req.endpoint_id)?;
            agent(if method.ends_with("Join") {
                PluginCall::Join {
                    network_id,
                    endpoint_id,
                }
            } else {
                PluginCall::DeleteEndpoint {
                    network_id,
                    endpoint_id,
                }
            })
        }
        // Docker moves the interface out of the container itself; the port
        // stays until DeleteEndpoint.
        "NetworkDriver.Leave" => {
            let req: Endpoint = parse(method, body)?;
            endpoint_id(method, req.endpoint_id)?;
            answer(json!({}))
        }
        "NetworkDriver.EndpointOperInfo" => {
            let req: Endpoint = parse(method, body)?;
            endpoint_id(method, req.endpoint_id)?;
            answer(json!({ "Value": {} }))
        }
        // Another node's address seeds the mesh (a connect target); our
        // own, and encryption keys, are nothing to the mesh. The IPAM
        // driver hears the same news: the network driver acts on it.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
            let req: Discovery = parse(method, body)?;
            match discovered_node(method, &req)? {
                Some(address) => agent(PluginCall::Discovered {
                    address,
                    new: method.ends_with("New"),
                }),
                None => answer(json!({})),
            }
        }
        "IpamDriver.DiscoverNew" | "IpamDriver.DiscoverDelete" | "IpamDriver.ReleasePool" => {
            parse::<Value>(method, body)?;
            answer(json!({}))
        }
        // A swarm manager's network allocation (global scope): the driver
        // keeps no state of its own across nodes; each node's agent learns
        // the network from its own CreateNetwork.
        "NetworkDriver.AllocateNetwork" => {
            parse::<Value>(method, body)?;
            answer(json!({ "Options": {} }))
        }
        "NetworkDriver.FreeNetwork" => {
            parse::<Value>(method, body)?;
            answer(json!({}))
        }
        "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => {
            parse::<Value>(method, body)?;
            answer(json!({}))
        }
        "IpamDriver.GetCapabilities" => answer(json!({
            "RequiresMACAddress": false,
            "RequiresRequestReplay": false,
        })),
        "IpamDriver.GetDefaultAddressSpaces" => answer(json!({
            "LocalDefaultAddressSpace": LOCAL_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_SPACE,
        })),
        "IpamDriver.RequestPool" => {
            let req: RequestPool = parse(method, body)?;
            if req.v6 {
                return Err(Refusal::bad("RequestPool: IPv6 is not supported by weave"));
            }
            if !req.sub_pool.is_empty() {
                return Err(Refusal::bad(
                    "RequestPool: --ip-range is not supported by weave (give the whole --subnet)",
                ));
            }
            let pool = if req.pool.is_empty() {
                None
            } else {
                Some(cidr(method, "pool", &req.pool)?.trunc())
            };
            agent(PluginCall::RequestPool {
                pool,
                global: req.address_space == GLOBAL_SPACE,
            })
        }
        "IpamDriver.RequestAddress" => {
            let req: RequestAddress = parse(method, body)?;
            let subnet = parse_pool_id(method, &req.pool_id)?;
            // Swarm's nodes ask in whichever address space; what tells a
            // swarm network is the managed plugin's global scope.
            let global = scope == Scope::Global;
            let gateway = req
                .options
                .as_ref()
                .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
                .is_some_and(|t| t == GATEWAY_TYPE);
            if gateway {
                // Not used (Join gives no gateway): the network address,
                // as RequestPool's data said, so no address is spent on it.
                return answer(json!({ "Address": subnet.to_string(), "Data": {} }));
            }
            let address = address(method, &req.address)?;
            agent(PluginCall::RequestAddress {
                subnet,
                address,
                global,
            })
        }
        "IpamDriver.ReleaseAddress" => {
            let req: ReleaseAddress = parse(method, body)?;
            let subnet = parse_pool_id(method, &req.pool_id)?;
            // Swarm's nodes ask in whichever address space; what tells a
            // swarm network is the managed plugin's global scope.
            let global = scope == Scope::Global;
            let Some(address) = address(method, &req.address)? else {
                return Err(Refusal::bad("ReleaseAddress: Address is missing"));
            };
            if address == subnet.network() {
                return answer(json!({}));
            }
            agent(PluginCall::ReleaseAddress {
                subnet,
                address,
                global,
            })
        }
        _ => Err(Refusal {
            status: 404,
            message: format!("{method}: not implemented by the weave plugin"),
        }),
    }
}

fn endpoint_id(method: &str, id: String) -> Result<String, Refusal> {
    let id = non_empty(method, "EndpointID", id)?;
    // It names the endpoint's port: hex, as Docker makes them.
    if id.len() < 6 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::bad(format!(
            "{method}: EndpointID {id:?} is not a Docker endpoint ID"
        )));
    }
    Ok(id)
}

/// An address as Docker sends it to IPAM: bare or with a prefix, or empty.
fn address(method: &str, s: &str) -> Result<Option<Ipv4Addr>, Refusal> {
    if s.is_empty() {
        return Ok(None);
    }
    let bare = s.split('/').next().unwrap_or(s);
    bare.parse()
        .map(Some)
        .map_err(|_| Refusal::bad(format!("{method}: {s:?} is not an IPv4 address")))
}

/// The JSON for the agent's answer to `call`.
pub fn reply(call: &PluginCall, answer: PluginAnswer) -> Value {
    match (call, answer) {
        (PluginCall::RequestPool { global, .. }, PluginAnswer::Pool(subnet)) => json!({
            "PoolID": pool_id(subnet, *global),
            "Pool": subnet.to_string(),
            // The gateway Docker would otherwise ask for: the network address.
            "Data": { GATEWAY_TYPE: subnet.to_string() },
        }),
        (PluginCall::RequestAddress { .. }, PluginAnswer::Address(cidr)) => {
            json!({ "Address": cidr.to_string(), "Data": {} })
        }
        // Only when Docker gave none: a MAC it did give must not come back.
        (PluginCall::CreateEndpoint { mac: None, .. }, PluginAnswer::Mac(mac)) => {
            json!({ "Interface": { "MacAddress": mac.to_string() } })
        }
        (PluginCall::Join { .. }, PluginAnswer::Joined { src_name, dns }) => {
            // weaveDNS's address through ethwe, whatever the subnet (as
            // `weave attach` routes it): a container given `--dns` with it
            // asks weaveDNS, through Docker's embedded resolver.
            let routes: Vec<Value> = dns
                .iter()
                .map(|a| json!({ "Destination": format!("{a}/32"), "RouteType": ROUTE_CONNECTED }))
                .collect();
            // No gateway, and the gateway service left on: libnetwork then
            // gives the container a second interface on docker_gwbridge
            // with the default route (the world through the host's NAT),
            // as Weave's plugin did. The weave network itself is reached
            // through ethwe's own subnet route.
            json!({
                "InterfaceName": { "SrcName": src_name, "DstPrefix": CONTAINER_IFNAME },
                "StaticRoutes": routes,
            })
        }
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(path: &str, body: &str) -> PluginCall {
        match decode(path, body.as_bytes(), Scope::Local) {
            Ok(Action::Agent(c)) => c,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn answered(path: &str, body: &str) -> Value {
        match decode(path, body.as_bytes(), Scope::Local) {
            Ok(Action::Answer(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn refused(path: &str, body: &str) -> Refusal {
        match decode(path, body.as_bytes(), Scope::Local) {
            Err(r) => r,
            other => panic!("{path} should be refused: {other:?}"),
        }
    }

    const EP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn activate_and_capabilities() {
        assert_eq!(
            answered("/Plugin.Activate", ""),
            json!({"Implements": ["NetworkDriver", "IpamDriver"]})
        );
        assert_eq!(
            answered("/NetworkDriver.GetCapabilities", "{}")["Scope"],
            "local"
        );
        let spaces = answered("/IpamDriver.GetDefaultAddressSpaces", "");
        assert_eq!(spaces["LocalDefaultAddressSpace"], "weavelocal");
        assert_eq!(
            answered("/IpamDriver.GetCapabilities", "")["RequiresMACAddress"],
            false
        );
    }

    #[test]
    fn create_network_takes_the_ipv4_pools() {
        let body = r#"{"NetworkID":"n1","Options":{"com.docker.network.enable_ipv6":false,
            "com.docker.network.generic":{}},
            "IPv4Data":[{"AddressSpace":"weavelocal","Pool":"10.5.0.0/24","Gateway":"10.5.0.0/24","AuxAddresses":null}],
            "IPv6Data":[]}"#;
        assert_eq!(
            agent("/NetworkDriver.CreateNetwork", body),
            PluginCall::CreateNetwork {
                network_id: "n1".into(),
                subnets: vec!["10.5.0.0/24".parse().unwrap()],
            }
        );
    }

    #[test]
    fn create_network_refuses_unknown_options_and_ipv6() {
        let r = refused(
            "/NetworkDriver.CreateNetwork",
            r#"{"NetworkID":"n1","Options":{"com.docker.network.generic":{"color":"red"}},
                "IPv4Data":[{"Pool":"10.5.0.0/24"}]}"#,
        );
        assert!(r.message.contains("\"color\""), "{}", r.message);
        let r = refused(
            "/NetworkDriver.CreateNetwork",
            r#"{"NetworkID":"n1","IPv4Data":[{"Pool":"10.5.0.0/24"}],"IPv6Data":[{"Pool":"fd00::/64"}]}"#,
        );
        assert!(r.message.contains("IPv6"));
    }

    #[test]
    fn malformed_json_is_a_refusal_with_a_json_body() {
        let r = refused("/NetworkDriver.CreateEndpoint", "{not json");
        assert_eq!(r.status, 400);
        assert!(r.message.contains("malformed request"), "{}", r.message);
        assert_eq!(r.body()["Err"], r.message.as_str());
        // Wrong types are malformed too.
        refused(
            "/NetworkDriver.Join",
            r#"{"NetworkID":1,"EndpointID":"ab"}"#,
        );
        // And missing fields.
        refused("/NetworkDriver.Join", r#"{"NetworkID":"n"}"#);
    }

    #[test]
    fn unknown_methods_are_not_found() {
        assert_eq!(refused("/NetworkDriver.Frobnicate", "{}").status, 404);
    }

    #[test]
    fn create_endpoint_needs_an_ipv4_address_and_a_hex_id() {
        let body = format!(
            r#"{{"NetworkID":"n1","EndpointID":"{EP}","Interface":{{"Address":"10.5.0.3/24","AddressIPv6":"","MacAddress":""}},"Options":{{}}}}"#
        );
        assert_eq!(
            agent("/NetworkDriver.CreateEndpoint", &body),
            PluginCall::CreateEndpoint {
                network_id: "n1".into(),
                endpoint_id: EP.into(),
                cidr: "10.5.0.3/24".parse().unwrap(),
                mac: None,
            }
        );
        let no_addr = format!(r#"{{"NetworkID":"n1","EndpointID":"{EP}","Interface":{{}}}}"#);
        assert!(
            refused("/NetworkDriver.CreateEndpoint", &no_addr)
                .message
                .contains("Interface.Address")
        );
        let bad_id =
            r#"{"NetworkID":"n1","EndpointID":"../../x","Interface":{"Address":"10.5.0.3/24"}}"#;
        refused("/NetworkDriver.CreateEndpoint", bad_id);
    }

    #[test]
    fn a_mac_docker_gave_is_kept_and_not_sent_back() {
        let body = format!(
            r#"{{"NetworkID":"n1","EndpointID":"{EP}","Interface":{{"Address":"10.5.0.3/24","MacAddress":"02:42:0a:05:00:03"}}}}"#
        );
        let call = agent("/NetworkDriver.CreateEndpoint", &body);
        let mac: Mac = "02:42:0a:05:00:03".parse().unwrap();
        assert!(matches!(&call, PluginCall::CreateEndpoint { mac: Some(m), .. } if *m == mac));
        assert_eq!(reply(&call, PluginAnswer::Mac(mac)), json!({}));
        let none = PluginCall::CreateEndpoint {
            network_id: "n1".into(),
            endpoint_id: EP.into(),
            cidr: "10.5.0.3/24".parse().unwrap(),
            mac: None,
        };
        assert_eq!(
            reply(&none, PluginAnswer::Mac(mac)),
            json!({"Interface": {"MacAddress": "02:42:0a:05:00:03"}})
        );
    }

    #[test]
    fn join_hands_docker_the_container_end() {
        let call = agent(
            "/NetworkDriver.Join",
            &format!(
                r#"{{"NetworkID":"n1","EndpointID":"{EP}","SandboxKey":"/var/run/docker/netns/x","Options":{{}}}}"#
            ),
        );
        let v = reply(
            &call,
            PluginAnswer::Joined {
                src_name: "vethwepgd012345".into(),
                dns: Some("172.17.0.1".parse().unwrap()),
            },
        );
        assert_eq!(v["InterfaceName"]["SrcName"], "vethwepgd012345");
        assert_eq!(v["InterfaceName"]["DstPrefix"], "ethwe");
        assert_eq!(
            v["StaticRoutes"],
            json!([{"Destination": "172.17.0.1/32", "RouteType": 1}])
        );
        // docker_gwbridge gives the default route, as in Weave.
        assert!(v.get("DisableGatewayService").is_none(), "{v}");
        assert!(v.get("Gateway").is_none(), "{v}");
        let v = reply(
            &call,
            PluginAnswer::Joined {
                src_name: "vethwepgd012345".into(),
                dns: None,
            },
        );
        assert_eq!(v["StaticRoutes"], json!([]));
    }

    #[test]
    fn pools_round_trip_through_their_ids() {
        assert_eq!(
            agent(
                "/IpamDriver.RequestPool",
                r#"{"AddressSpace":"weavelocal","Pool":"10.5.0.7/24","SubPool":"","Options":{},"V6":false}"#
            ),
            PluginCall::RequestPool {
                pool: Some("10.5.0.0/24".parse().unwrap()),
                global: false,
            }
        );
        assert_eq!(
            agent(
                "/IpamDriver.RequestPool",
                r#"{"AddressSpace":"weavelocal"}"#
            ),
            PluginCall::RequestPool {
                pool: None,
                global: false
            }
        );
        let subnet: Ipv4Net = "10.5.0.0/24".parse().unwrap();
        let v = reply(
            &PluginCall::RequestPool {
                pool: None,
                global: false,
            },
            PluginAnswer::Pool(subnet),
        );
        assert_eq!(v["PoolID"], "weave-10.5.0.0/24");
        assert_eq!(v["Data"][GATEWAY_TYPE], "10.5.0.0/24");
        assert_eq!(
            agent(
                "/IpamDriver.RequestAddress",
                r#"{"PoolID":"weave-10.5.0.0/24","Address":"","Options":{}}"#
            ),
            PluginCall::RequestAddress {
                subnet,
                address: None,
                global: false,
            }
        );
        assert_eq!(
            agent(
                "/IpamDriver.RequestAddress",
                r#"{"PoolID":"weave-10.5.0.0/24","Address":"10.5.0.9"}"#
            ),
            PluginCall::RequestAddress {
                subnet,
                address: Some("10.5.0.9".parse().unwrap()),
                global: false,
            }
        );
        refused(
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"default-10.5.0.0/24"}"#,
        );
        refused(
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.5.0.0/24","V6":true}"#,
        );
        refused(
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.5.0.0/24","SubPool":"10.5.0.0/25"}"#,
        );
    }

    #[test]
    fn swarm_pools_are_global() {
        let global = |path: &str, body: &str| match decode(path, body.as_bytes(), Scope::Global) {
            Ok(Action::Agent(c)) => c,
            other => panic!("{path}: {other:?}"),
        };
        match decode("/NetworkDriver.GetCapabilities", b"", Scope::Global) {
            Ok(Action::Answer(v)) => assert_eq!(v["Scope"], "global"),
            other => panic!("{other:?}"),
        }
        let call = global(
            "/IpamDriver.RequestPool",
            r#"{"AddressSpace":"weaveglobal","Pool":"10.5.2.0/24"}"#,
        );
        // A node's Docker asks in the local space: the scope decides.
        assert!(matches!(
            global(
                "/IpamDriver.RequestAddress",
                r#"{"PoolID":"weave-10.5.2.0/24","Address":"10.5.2.7"}"#
            ),
            PluginCall::RequestAddress { global: true, .. }
        ));
        let subnet: Ipv4Net = "10.5.2.0/24".parse().unwrap();
        assert_eq!(
            call,
            PluginCall::RequestPool {
                pool: Some(subnet),
                global: true
            }
        );
        assert_eq!(
            reply(&call, PluginAnswer::Pool(subnet))["PoolID"],
            "weaveglobal-10.5.2.0/24"
        );
        assert_eq!(
            global(
                "/IpamDriver.RequestAddress",
                r#"{"PoolID":"weaveglobal-10.5.2.0/24","Address":"10.5.2.7"}"#
            ),
            PluginCall::RequestAddress {
                subnet,
                address: Some("10.5.2.7".parse().unwrap()),
                global: true,
            }
        );
        assert_eq!(
            global(
                "/IpamDriver.ReleaseAddress",
                r#"{"PoolID":"weaveglobal-10.5.2.0/24","Address":"10.5.2.7"}"#
            ),
            PluginCall::ReleaseAddress {
                subnet,
                address: "10.5.2.7".parse().unwrap(),
                global: true,
            }
        );
    }

    #[test]
    fn the_gateway_costs_no_address() {
        let v = answered(
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"weave-10.5.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        );
        assert_eq!(v["Address"], "10.5.0.0/24");
        assert_eq!(
            answered(
                "/IpamDriver.ReleaseAddress",
                r#"{"PoolID":"weave-10.5.0.0/24","Address":"10.5.0.0"}"#
            ),
            json!({})
        );
        assert_eq!(
            agent(
                "/IpamDriver.ReleaseAddress",
                r#"{"PoolID":"weave-10.5.0.0/24","Address":"10.5.0.3"}"#
            ),
            PluginCall::ReleaseAddress {
                subnet: "10.5.0.0/24".parse().unwrap(),
                address: "10.5.0.3".parse().unwrap(),
                global: false,
            }
        );
    }

    #[test]
    fn another_node_discovered_is_a_connect_target_and_this_node_is_not() {
        let call = |path: &str, body: &str| decode(path, body.as_bytes(), Scope::Global);
        let node = |addr: &str, me: bool| {
            format!(
                r#"{{"DiscoveryType":1,"DiscoveryData":{{"Address":"{addr}","BindAddress":"0.0.0.0","Self":{me}}}}}"#
            )
        };
        assert_eq!(
            call("/NetworkDriver.DiscoverNew", &node("192.168.250.2", false)),
            Ok(Action::Agent(PluginCall::Discovered {
                address: Ipv4Addr::new(192, 168, 250, 2),
                new: true
            }))
        );
        assert_eq!(
            call(
                "/NetworkDriver.DiscoverDelete",
                &node("192.168.250.2", false)
            ),
            Ok(Action::Agent(PluginCall::Discovered {
                address: Ipv4Addr::new(192, 168, 250, 2),
                new: false
            }))
        );
        // What Docker in swarm mode sends: this node's own address.
        assert_eq!(
            call("/NetworkDriver.DiscoverNew", &node("192.168.250.1", true)),
            Ok(Action::Answer(json!({})))
        );
        // Encryption keys (DiscoveryType 2), and the IPAM driver's copy.
        assert_eq!(
            call(
                "/NetworkDriver.DiscoverNew",
                r#"{"DiscoveryType":2,"DiscoveryData":{"Keys":[],"Tags":[]}}"#
            ),
            Ok(Action::Answer(json!({})))
        );
        assert_eq!(
            call("/IpamDriver.DiscoverNew", &node("192.168.250.2", false)),
            Ok(Action::Answer(json!({})))
        );
        // Bad input: a clear refusal.
        let refused = call("/NetworkDriver.DiscoverNew", &node("node-2", false));
        assert!(
            matches!(&refused, Err(r) if r.message.contains("\"node-2\" is not an IPv4 address")),
            "{refused:?}"
        );
        assert!(call("/NetworkDriver.DiscoverNew", "{").is_err());
    }
}
