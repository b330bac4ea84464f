//! `/metrics`: one snapshot in the Prometheus (`OpenMetrics`) text format,
//! with Weave's metric names where Weave had the metric, and the data
//! plane's counters under `weave_` names of our own.
//!
//! Every scrape builds a fresh registry from the snapshot: the agent keeps
//! its counters (in the overlay, the mesh and eBPF maps) and the snapshot
//! carries their current values, so there is nothing to keep here.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::mesh::ConnectionState;
use crate::overlay::NeighbourTraffic;
use crate::status::Status;

/// The `Content-Type` of [`render`]'s text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of [`to_prometheus_text`]'s.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Does a client's `Accept` header take `OpenMetrics` (Prometheus does)?
/// Others (curl, `promtool check metrics`, older scrapers) get the
/// Prometheus text format, as Weave served.
pub fn accepts_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// `OpenMetrics` text to the Prometheus text format 0.0.4. They differ,
/// for what [`render`] writes, in three things: a counter family is named
/// with its `_total` in `# HELP` and `# TYPE` (its samples already are),
/// there is no `# UNIT`, and no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// A counter family; `name` gets `_total` appended by the encoder.
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter<u64>>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

const fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The metrics of `status`.
pub fn render(status: &Status) -> String {
    let mut r = Registry::default();
    let mesh = &status.mesh;

    // weave_connections{state,type,encryption}: Weave's labels. `type` is
    // the data plane carrying the connection's frames (Weave: fastdp or
    // sleeve; here fastdp, xdp or plain); connections not established yet
    // have none and show the agent's own. Every state appears, with 0 when
    // there is none, so that `weave_connections{state="failed"}` is a
    // series an alert can watch.
    let mut by_labels: BTreeMap<(&'static str, String, bool), i64> = BTreeMap::new();
    for state in ConnectionState::ALL {
        by_labels.insert(
            (state.as_str(), mesh.dataplane.clone(), status.encryption),
            0,
        );
    }
    for c in &mesh.connections {
        let kind = if c.dataplane.is_empty() {
            mesh.dataplane.clone()
        } else {
            c.dataplane.clone()
        };
        let encrypted = if c.state == ConnectionState::Established {
            c.encrypted
        } else {
            status.encryption
        };
        *by_labels
            .entry((c.state.as_str(), kind, encrypted))
            .or_default() += 1;
    }
    let connections = Family::<Labels, Gauge>::default();
    for ((state, kind, encrypted), n) in by_labels {
        connections
            .get_or_create(&vec![
                ("state", state.to_string()),
                ("type", kind),
                ("encryption", yes_no(encrypted).to_string()),
            ])
            .set(n);
    }
    r.register(
        "weave_connections",
        "Number of peer-to-peer connections",
        connections,
    );
    counter(
        &mut r,
        "weave_connection_terminations",
        "Number of peer-to-peer connections terminated",
        mesh.counters.connections_terminated,
    );
    gauge(
        &mut r,
        "weave_peers",
        "Number of peers this peer knows, itself included",
        mesh.peers.len() as i64,
    );

    // IPAM, with Weave's names.
    let ipam = &status.ipam;
    let ours = ipam.peers.iter().find(|p| p.name == mesh.name);
    let ips = Family::<Labels, Gauge>::default();
    ips.get_or_create(&vec![("state", "local-used".to_string())])
        .set(ipam.in_use_here as i64);
    ips.get_or_create(&vec![("state", "local-owned".to_string())])
        .set(ours.map_or(0, |p| i64::from(p.owned)));
    r.register("weave_ips", "Number of IP addresses", ips);
    gauge(
        &mut r,
        "weave_max_ips",
        "Size of IP address space used by allocator",
        1i64 << (32 - u32::from(ipam.range.prefix_len())),
    );
    let unreachable: Vec<_> = ipam.peers.iter().filter(|p| !p.reachable).collect();
    gauge(
        &mut r,
        "weave_ipam_unreachable_count",
        "Number of unreachable peers that own part of the address space",
        unreachable.len() as i64,
    );
    let percent = Gauge::<f64, AtomicU64>::default();
    // (An empty f64 sum is -0.0.)
    percent.set(unreachable.iter().fold(0.0, |sum, p| sum + p.percent));
    r.register(
        "weave_ipam_unreachable_percentage",
        "Percentage of the address space owned by unreachable peers",
        percent,
    );
    gauge(
        &mut r,
        "weave_ipam_pending_allocates",
        "Number of pending allocates",
        ipam.pending_allocates as i64,
    );
    gauge(
        &mut r,
        "weave_ipam_pending_claims",
        "Number of pending claims",
        ipam.claims.iter().filter(|c| c.refused.is_none()).count() as i64,
    );
    // weaveDNS, when on: Weave's gauge, and the server's counters.
    if let Some(dns) = &status.dns {
        gauge(
            &mut r,
            "weave_dns_entries",
            "Number of DNS entries (live names, from every peer)",
            dns.entries.len() as i64,
        );
        let c = &dns.counters;
        counters(
            &mut r,
            "weave_dns_queries",
            "DNS queries to weaveDNS, by outcome",
            [
                ("answered", c.answered),
                ("nxdomain", c.nxdomain),
                ("forwarded", c.forwarded),
                ("upstream_failed", c.upstream_failed),
                ("malformed", c.malformed),
                ("dropped", c.dropped),
            ]
            .map(|(outcome, v)| (vec![("outcome", outcome.to_string())], v)),
        );
    }
    gauge(
        &mut r,
        "weave_containers",
        "Containers attached on this peer",
        status.containers as i64,
    );

    // The data plane between hosts.
    let o = &status.overlay_stats;
    let userspace = if status.userspace.is_empty() {
        &status.overlay
    } else {
        &status.userspace
    };
    let dp = || ("dataplane", userspace.clone());
    // The kernel's share (fastdp) is counted per neighbour only: its totals
    // are their sums.
    let fastdp_total = |frames: fn(&NeighbourTraffic) -> u64| {
        o.neighbours
            .iter()
            .filter(|t| t.dataplane == "fastdp")
            .map(frames)
            .sum::<u64>()
    };
    let fastdp = ("dataplane", "fastdp".to_string());
    let in_kernel = status.overlay == "fastdp";
    counters(
        &mut r,
        "weave_frames",
        "Frames carried between hosts, by direction and data plane",
        [
            ("sent", o.frames_sent),
            ("received", o.frames_received),
            ("relayed", o.frames_relayed),
            ("coalesced", o.frames_coalesced),
            ("segmented", o.frames_segmented),
        ]
        .map(|(d, v)| (vec![("direction", d.to_string()), dp()], v))
        .into_iter()
        .chain(
            in_kernel
                .then(|| {
                    [
                        ("sent", fastdp_total(|t| t.sent_frames)),
                        ("received", fastdp_total(|t| t.received_frames)),
                    ]
                    .map(|(d, v)| (vec![("direction", d.to_string()), fastdp.clone()], v))
                })
                .into_iter()
                .flatten(),
        ),
    );
    // Bytes of inner frames, by the data plane that carried them.
    let mut bytes: BTreeMap<(&'static str, &str), u64> = BTreeMap::new();
    for t in &o.neighbours {
        *bytes.entry(("sent", &t.dataplane)).or_default() += t.sent_bytes;
        *bytes.entry(("received", &t.dataplane)).or_default() += t.received_bytes;
    }
    // Every plane in use has its series from the start, zero or not.
    for plane in [status.overlay.as_str(), userspace.as_str()] {
        for d in ["sent", "received"] {
            bytes.entry((d, plane)).or_default();
        }
    }
    counters(
        &mut r,
        "weave_bytes",
        "Bytes of the frames carried between hosts (inner Ethernet frames), by direction and data plane",
        bytes.into_iter().map(|((d, plane), v)| {
            (
                vec![
                    ("direction", d.to_string()),
                    ("dataplane", plane.to_string()),
                ],
                v,
            )
        }),
    );
    // The same by neighbour, for per-peer rates.
    let peer_labels = |t: &NeighbourTraffic| {
        let (name, nickname) = status.peer(t.peer).map_or_else(
            || (format!("short id {}", t.peer), String::new()),
            |p| (p.name.to_string(), p.nickname.clone()),
        );
        vec![
            ("peer", name),
            ("nickname", nickname),
            ("dataplane", t.dataplane.clone()),
        ]
    };
    let by_direction = |field: fn(&NeighbourTraffic) -> (u64, u64)| {
        o.neighbours.iter().flat_map(move |t| {
            let (sent, received) = field(t);
            [("sent", sent), ("received", received)].map(|(d, v)| {
                let mut labels = peer_labels(t);
                labels.push(("direction", d.to_string()));
                (labels, v)
            })
        })
    };
    counters(
        &mut r,
        "weave_peer_frames",
        "Frames carried to and from each neighbour, by data plane",
        by_direction(|t| (t.sent_frames, t.received_frames)),
    );
    counters(
        &mut r,
        "weave_peer_bytes",
        "Bytes (inner Ethernet frames) carried to and from each neighbour, by data plane",
        by_direction(|t| (t.sent_bytes, t.received_bytes)),
    );
    counters(
        &mut r,
        "weave_peer_dropped_frames",
        "Frames from each neighbour that were dropped, by data plane",
        o.neighbours.iter().map(|t| (peer_labels(t), t.dropped)),
    );
    let overlay_drops = [
        ("malformed", o.dropped_malformed),
        ("unknown_sender", o.dropped_unknown_sender),
        ("no_route", o.dropped_no_route),
        ("oversize", o.dropped_oversize),
        ("unauthenticated", o.dropped_unauthenticated),
        ("replayed", o.dropped_replayed),
        ("spoofed", o.dropped_spoofed),
        ("send_failed", o.dropped_send_failed),
        ("overflow", o.dropped_overflow),
        ("path_mtu", o.dropped_path_mtu),
    ]
    .map(|(reason, v)| {
        (
            vec![
                ("plane", "overlay".to_string()),
                ("reason", reason.to_string()),
            ],
            v,
        )
    });
    // The bridge's eBPF drops, by the counter's name without `drop_`.
    let bridge_drops = status.counters.iter().filter_map(|(name, v)| {
        let reason = name
            .strip_prefix("drop_")
            .or_else(|| name.strip_prefix("fastdp_drop_"))?;
        let plane = if name.starts_with("fastdp_") {
            "fastdp"
        } else {
            "bridge"
        };
        Some((
            vec![("plane", plane.to_string()), ("reason", reason.to_string())],
            *v,
        ))
    });
    counters(
        &mut r,
        "weave_dropped_frames",
        "Frames dropped, by where (overlay, bridge, fastdp) and why",
        overlay_drops.into_iter().chain(bridge_drops),
    );
    counters(
        &mut r,
        "weave_overlay_events",
        "Other data plane events between hosts (MACs not learnt, GSO refused, fragments and ICMP answers for paths with a smaller MTU)",
        [
            ("macs_not_learnt", o.macs_not_learnt),
            ("gso_refused", o.gso_refused),
            ("path_mtu_fragments", o.path_mtu_fragments),
            ("path_mtu_icmp", o.path_mtu_icmp),
        ]
        .map(|(e, v)| (vec![("event", e.to_string()), dp()], v)),
    );
    counters(
        &mut r,
        "weave_ebpf_packets",
        "The eBPF programs' verdict counters, by name (as in `weave status dataplane`)",
        status
            .counters
            .iter()
            .map(|(name, v)| (vec![("counter", name.clone())], *v)),
    );
    counters(
        &mut r,
        "weave_mesh_events",
        "Control plane events (refused handshakes, timeouts, dropped connections...), by name",
        mesh.counters
            .named()
            .into_iter()
            .map(|(name, v)| (vec![("event", name.to_string())], v)),
    );

    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    #[test]
    fn weaves_names_and_the_data_plane_counters() {
        let mut st = sample();
        st.mesh.counters.connections_terminated = 3;
        st.ipam.pending_allocates = 1;
        let text = render(&st);
        let established = st
            .mesh
            .connections
            .iter()
            .filter(|c| c.state == ConnectionState::Established)
            .count();
        assert!(established > 0);
        let line = text
            .lines()
            .filter(|l| l.starts_with("weave_connections{state=\"established\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
            .sum::<usize>();
        assert_eq!(line, established, "{text}");
        assert!(
            text.contains("weave_connections{state=\"failed\""),
            "{text}"
        );
        assert!(
            text.contains("weave_connection_terminations_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("weave_ips{state=\"local-used\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("weave_max_ips 1048576\n"), "{text}");
        assert!(text.contains("weave_ipam_unreachable_count 1\n"), "{text}");
        assert!(text.contains("weave_ipam_pending_allocates 1\n"), "{text}");
        assert!(
            text.contains("weave_ipam_unreachable_percentage 50.0\n"),
            "{text}"
        );
        assert!(
            text.contains("weave_dropped_frames_total{plane=\"overlay\",reason=\"malformed\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("weave_dropped_frames_total{plane=\"bridge\",reason=\"spoofed_ip\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("weave_ebpf_packets_total{counter=\"to_container_passed\"} 9\n"),
            "{text}"
        );
        let neighbour = &st.mesh.peers[1];
        let labels = format!(
            "peer=\"{}\",nickname=\"{}\",dataplane=\"plain\"",
            neighbour.name, neighbour.nickname
        );
        for sample in [
            format!("weave_peer_bytes_total{{{labels},direction=\"sent\"}} 15000\n"),
            format!("weave_peer_frames_total{{{labels},direction=\"received\"}} 5\n"),
            format!("weave_peer_dropped_frames_total{{{labels}}} 1\n"),
            "weave_bytes_total{direction=\"received\",dataplane=\"plain\"} 3145728\n".into(),
        ] {
            assert!(text.contains(&sample), "{sample} in {text}");
        }
        assert!(text.ends_with("# EOF\n"));

        let old = to_prometheus_text(&text);
        assert!(!old.contains("# EOF"));
        assert!(
            old.contains("# TYPE weave_connection_terminations_total counter\nweave_connection_terminations_total 3\n"),
            "{old}"
        );
        assert!(
            old.contains("# HELP weave_dropped_frames_total Frames dropped"),
            "{old}"
        );
        assert!(old.contains("# TYPE weave_max_ips gauge\n"), "{old}");
        assert_eq!(
            old.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            "the samples are the same"
        );
        assert!(accepts_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!accepts_openmetrics(Some("*/*")));
        assert!(!accepts_openmetrics(None));
    }
}
