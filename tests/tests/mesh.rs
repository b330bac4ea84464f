//! The control plane (`weave_agent::mesh`) on its own: three `Mesh` instances
//! on 127.0.0.1 with different ports, inside a fresh network namespace, each
//! with a fake data plane that records the forwarding tables it is given
//! (the seam, not the network, is what is faked).
//!
//! What they prove (issue 3): peers connected in a line converge to a full
//! mesh through discovery and every table routes to every peer; without
//! discovery, the ends reach each other through the middle; a stopped peer,
//! and a peer that goes silent, leave everyone's tables within the dead-peer
//! timeout, and a restarted one rejoins; two peers dialling each other at
//! once keep the same single connection; wrong handshakes are refused with a
//! reason, oversized or garbled frames drop the connection and are counted,
//! and the mesh keeps working; peers that meet exchange digests, older ones
//! get the whole topology (issue 14). Issue 12: fastdp is used on a connection only
//! when both hellos offer it and there is no password; the table says which
//! neighbours it carries, with our address on each link, and status labels
//! every connection with its data plane.
//!
//! Needs root (a network namespace per test); run with `cargo xtask test`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use weave_agent::mesh::protocol::{self, FrameDecoder, Hello, MAX_FRAME, Message};
use weave_agent::mesh::topology::{
    ConnectionSummary, PeerInfo, TopologyDigest, TopologyUpdate, now_ms,
};
use weave_agent::mesh::{Backoff, ConnectionState, Mesh, MeshConfig, MeshStatus, Timing};
use weave_agent::overlay::{ForwardingTable, Overlay, OverlayStats, ShortId};
use weave_agent::peer_name::PeerName;
use weave_tests::{Netns, require_root, sweep_stale};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Runs `body` on a thread inside a new network namespace (deleted after,
/// also on panic), on a runtime of its own: every socket it makes is there.
fn in_netns<F, Fut>(test: &str, body: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    require_root("the mesh tests");
    sweep_stale();
    let ns = Netns::create(&format!("wvt{}-mesh-{test}", std::process::id()))
        .unwrap_or_else(|e| panic!("creating the test namespace: {e:#}"));
    ns.run_inside(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a runtime")
            .block_on(body())
    })
    .unwrap_or_else(|e| panic!("entering {}: {e:#}", ns.name()));
}

/// A data plane that keeps the last table it was given.
struct Recorder {
    latest: Mutex<Arc<ForwardingTable>>,
    updates: AtomicUsize,
}

impl Overlay for Recorder {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn update(&self, table: Arc<ForwardingTable>) {
        *self.latest.lock().unwrap() = table;
        self.updates.fetch_add(1, Ordering::SeqCst);
    }
    fn stats(&self) -> OverlayStats {
        OverlayStats::default()
    }
}

/// Short: tests converge in seconds. The dead-peer timeout is 1.2 s.
const fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(1200),
        control_heartbeat: Duration::from_millis(200),
        control_dead_after: Duration::from_millis(1200),
        handshake_timeout: Duration::from_secs(1),
        dial_timeout: Duration::from_secs(1),
        gossip_interval: Duration::from_secs(1),
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
    }
}

/// How long convergence may take (polled, not slept).
const CONVERGE: Duration = Duration::from_secs(20);
/// How long a dead peer may stay: the timeout, plus gossip and slack.
const FORGET: Duration = Duration::from_secs(6);

/// b listens on the default port, so `127.0.0.1` alone reaches it.
const B_PORT: u16 = 6783;
const A_PORT: u16 = 7001;
const C_PORT: u16 = 7002;

struct Peer {
    name: PeerName,
    mesh: Mesh,
    overlay: Arc<Recorder>,
    data_port: u16,
}

impl Peer {
    async fn start(last: u8, port: u16, discovery: bool, targets: &[&str]) -> Self {
        Self::start_with(last, port, discovery, targets, |_| {}).await
    }

    /// As `start`, with `configure` applied to the config last.
    async fn start_with(
        last: u8,
        port: u16,
        discovery: bool,
        targets: &[&str],
        configure: impl FnOnce(&mut MeshConfig),
    ) -> Self {
        Self::start_named(peer_name(last), port, discovery, targets, configure).await
    }

    /// As `start_with`, for any name (data port from its last byte).
    async fn start_named(
        name: PeerName,
        port: u16,
        discovery: bool,
        targets: &[&str],
        configure: impl FnOnce(&mut MeshConfig),
    ) -> Self {
        let last = name.0.0[5];
        let mut config = MeshConfig::new(name, format!("host-{last:x}"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], port));
        config.data_port = 9000 + u16::from(last);
        config.discovery = discovery;
        config.targets = targets.iter().map(ToString::to_string).collect();
        config.timing = timing();
        configure(&mut config);
        let overlay = Arc::new(Recorder {
            latest: Mutex::new(Arc::new(ForwardingTable::default())),
            updates: AtomicUsize::new(0),
        });
        let data_port = config.data_port;
        let mesh = Mesh::start(config, Arc::<Recorder>::clone(&overlay))
            .await
            .unwrap_or_else(|e| panic!("starting peer {name}: {e}"));
        assert_eq!(mesh.local_addr().port(), port);
        assert!(
            overlay.updates.load(Ordering::SeqCst) >= 1,
            "a table at start"
        );
        Self {
            name,
            mesh,
            overlay,
            data_port,
        }
    }

    async fn stop(self) {
        self.mesh.stop().await;
    }

    /// The short id it publishes (the one its own table says it has).
    fn id(&self) -> ShortId {
        self.table().me
    }

    fn table(&self) -> Arc<ForwardingTable> {
        self.overlay.latest.lock().unwrap().clone()
    }

    async fn status(&self) -> MeshStatus {
        self.mesh.status().await
    }

    /// Names of the peers with an established connection, sorted.
    async fn connected(&self) -> Vec<PeerName> {
        let mut v: Vec<PeerName> = self
            .status()
            .await
            .connections
            .iter()
            .filter(|c| c.state == ConnectionState::Established)
            .filter_map(|c| c.peer)
            .collect();
        v.sort();
        v
    }
}

fn peer_name(last: u8) -> PeerName {
    format!("02:00:00:00:00:{last:02x}").parse().unwrap()
}

/// Polls `check` until it returns Ok or `within` passes; then panics with
/// the last thing it said.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > within => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Checks that `p` is directly connected to every one of `others`, knows
/// exactly them, and that its table routes to each directly.
async fn fully_meshed(p: &Peer, others: &[&Peer]) -> Result<(), String> {
    let st = p.status().await;
    let mut want: Vec<PeerName> = others.iter().map(|o| o.name).collect();
    want.sort();
    let connected = p.connected().await;
    if connected != want {
        return Err(format!(
            "{} connected to {connected:?}\n{}",
            p.name,
            st.render_connections()
        ));
    }
    if st.peers.len() != others.len() + 1 {
        return Err(format!(
            "{} knows {} peers\n{}",
            p.name,
            st.peers.len(),
            st.render_peers()
        ));
    }
    let t = p.table();
    for o in others {
        if t.next_hop.get(&o.id()) != Some(&o.id()) {
            return Err(format!(
                "{}: next hop to {} is {:?}",
                p.name,
                o.name,
                t.next_hop.get(&o.id())
            ));
        }
        let data = SocketAddr::from(([127, 0, 0, 1], o.data_port));
        if t.neighbours.get(&o.id()) != Some(&data) {
            return Err(format!(
                "{}: neighbour {} at {:?}",
                p.name,
                o.name,
                t.neighbours.get(&o.id())
            ));
        }
    }
    if t.next_hop.len() != others.len() || t.broadcast.len() != others.len() + 1 {
        return Err(format!("{}: table {t:?}", p.name));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A raw client speaking the wire by hand
// ---------------------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
        Self {
            stream,
            decoder: FrameDecoder::new(MAX_FRAME),
        }
    }

    async fn send(&mut self, m: &Message) {
        let frame = protocol::encode(m, MAX_FRAME).unwrap();
        self.stream
            .write_all(&frame)
            .await
            .expect("writing a frame");
    }

    /// The next message; `None` once the peer closed the connection.
    async fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(f) = self
                    .decoder
                    .next_frame()
                    .expect("the mesh sends valid frames")
                {
                    return Some(protocol::decode(f).expect("the mesh sends valid messages"));
                }
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.decoder.feed(&buf[..n]),
                }
            }
        })
        .await
        .expect("the mesh answers within 5 s")
    }

    /// The next message that is not a heartbeat.
    async fn next_not_heartbeat(&mut self) -> Option<Message> {
        loop {
            match self.recv().await {
                Some(Message::Heartbeat) => {}
                other => return other,
            }
        }
    }

    /// Reads (and drops) messages until the peer closes; the last refusal.
    async fn until_closed(&mut self) -> Option<String> {
        let mut refusal = None;
        while let Some(m) = self.recv().await {
            if let Message::Refuse { reason } = m {
                refusal = Some(reason);
            }
        }
        refusal
    }

    /// Hello both ways and the confirming heartbeat.
    async fn handshake(&mut self, hello: Hello) {
        self.send(&Message::Hello(hello)).await;
        assert!(
            matches!(self.recv().await, Some(Message::Hello(_))),
            "the mesh says hello"
        );
        self.send(&Message::Heartbeat).await;
        assert_eq!(
            self.recv().await,
            Some(Message::Heartbeat),
            "the mesh confirms"
        );
    }
}

fn raw_hello(last: u8, min: u32, max: u32) -> Hello {
    Hello {
        protocol: protocol::PROTOCOL.into(),
        min_version: min,
        max_version: max,
        name: peer_name(last),
        nickname: "raw".into(),
        uid: 77,
        nonce: 1,
        listen_port: 9,
        data_port: 9,
        encrypted: false,
        aes_gcm: false,
        fastdp: false,
        heartbeats: false,
        heartbeat_key: None,
        path_mtu: false,
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// a dials b (default port), c dials b; discovery makes a and c dial each
/// other: a full mesh, every table routing directly to every peer. Then c
/// stops and leaves the others' tables.
#[test]
fn line_converges_to_full_mesh_and_a_stopped_peer_leaves() {
    in_netns("full", || async {
        let started_ms = now_ms();
        let b = Peer::start(0xb, B_PORT, true, &[]).await;
        let a = Peer::start(0xa, A_PORT, true, &["127.0.0.1"]).await;
        let c = Peer::start(0xc, C_PORT, true, &["127.0.0.1:6783"]).await;

        eventually("a full mesh of three", CONVERGE, || async {
            fully_meshed(&a, &[&b, &c]).await?;
            fully_meshed(&b, &[&a, &c]).await?;
            fully_meshed(&c, &[&a, &b]).await
        })
        .await;

        let st = a.status().await;
        eprintln!(
            "a: connections {}\n{}\npeers {}\n{}\ntargets:\n{}",
            st.connection_counts(),
            st.render_connections(),
            st.peer_counts(),
            st.render_peers(),
            st.render_targets()
        );
        assert_eq!(st.targets, vec!["127.0.0.1"]);
        let links: Vec<_> = st.peers.iter().flat_map(|p| &p.connections).collect();
        assert_eq!(st.peers.len(), 3);
        assert_eq!(
            links.iter().filter(|c| c.established).count(),
            6,
            "{links:#?}"
        );
        assert_eq!((st.dataplane.as_str(), st.mtu), ("fake", 1376));
        assert!(
            st.connections
                .iter()
                .any(|c| c.state == ConnectionState::Established
                    && c.peer == Some(b.name)
                    && c.nickname.as_deref() == Some("host-b")),
            "a is connected to b: {:#?}",
            st.connections
        );
        // Exactly one connection per pair, whatever raced.
        assert_eq!(st.established(), 2);
        // Each says when it was established (what `cargo xtask scale` times).
        let since = |st: &MeshStatus, peer: PeerName| {
            st.connections
                .iter()
                .find(|c| c.state == ConnectionState::Established && c.peer == Some(peer))
                .and_then(|c| c.established_unix_ms)
        };
        for peer in [b.name, c.name] {
            let at = since(&st, peer).expect("an established connection says since when");
            assert!(
                (started_ms..=now_ms()).contains(&at),
                "{at} not since {started_ms}"
            );
        }
        let a_b_since = since(&st, b.name);
        // Each broadcast tree reaches the others directly: nothing relayed.
        let t = a.table();
        assert_eq!(t.broadcast[&a.id()].len(), 2);
        assert!(t.broadcast[&b.id()].is_empty() && t.broadcast[&c.id()].is_empty());

        let (c_name, c_id) = (c.name, c.id());
        c.stop().await;
        eventually("c gone from a and b", FORGET, || async {
            for p in [&a, &b] {
                let st = p.status().await;
                if st.peers.iter().any(|q| q.name == c_name)
                    || p.table().next_hop.contains_key(&c_id)
                {
                    return Err(format!("{} still has c:\n{}", p.name, st.render_peers()));
                }
            }
            Ok(())
        })
        .await;
        fully_meshed(&a, &[&b]).await.unwrap();
        fully_meshed(&b, &[&a]).await.unwrap();

        // c comes back (same name, new run): the mesh is whole again.
        let rejoined_ms = now_ms();
        let c = Peer::start(0xc, C_PORT, true, &["127.0.0.1"]).await;
        eventually("c rejoins", CONVERGE, || async {
            fully_meshed(&a, &[&b, &c]).await?;
            fully_meshed(&b, &[&a, &c]).await?;
            fully_meshed(&c, &[&a, &b]).await
        })
        .await;
        // The new connection has its own time; a's to b kept its own.
        let st = a.status().await;
        assert!(since(&st, c.name).is_some_and(|at| at >= rejoined_ms));
        assert_eq!(since(&st, b.name), a_b_since);

        for p in [a, b, c] {
            p.stop().await;
        }
    });
}

/// a and c dial each other at the same moment: both sides keep the same
/// single connection (the one a, the smaller name, initiated), and both
/// targets count as connected, with no redialling afterwards.
#[test]
fn simultaneous_dials_keep_exactly_one_connection() {
    in_netns("simul", || async {
        let a = Peer::start(0xa, A_PORT, true, &["127.0.0.1:7002"]).await;
        let c = Peer::start(0xc, C_PORT, true, &["127.0.0.1:7001"]).await;
        eventually("a and c connected", CONVERGE, || async {
            fully_meshed(&a, &[&c]).await?;
            fully_meshed(&c, &[&a]).await
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (sa, sc) = (a.status().await, c.status().await);
        eprintln!(
            "a:\n{}c:\n{}duplicates closed: a {}, c {}",
            sa.render_connections(),
            sc.render_connections(),
            sa.counters.duplicate_connections,
            sc.counters.duplicate_connections
        );
        for (st, outbound) in [(&sa, true), (&sc, false)] {
            assert_eq!(
                st.connections.len(),
                1,
                "one line, no retries:\n{}",
                st.render_connections()
            );
            let conn = &st.connections[0];
            assert_eq!(conn.state, ConnectionState::Established);
            assert_eq!(
                conn.outbound,
                outbound,
                "the connection a initiated:\n{}",
                st.render_connections()
            );
        }
        a.stop().await;
        c.stop().await;
    });
}

/// Without discovery, a and c only know b: a reaches c through b, and
/// never dials c.
#[test]
fn without_discovery_the_ends_talk_through_the_middle() {
    in_netns("nodisc", || async {
        let b = Peer::start(0xb, B_PORT, false, &[]).await;
        let a = Peer::start(0xa, A_PORT, false, &["127.0.0.1"]).await;
        let c = Peer::start(0xc, C_PORT, false, &["127.0.0.1"]).await;

        eventually("a and c routed through b", CONVERGE, || async {
            for (p, other) in [(&a, &c), (&c, &a)] {
                let t = p.table();
                if t.next_hop.get(&other.id()) != Some(&b.id()) {
                    return Err(format!("{}: next hops {:?}", p.name, t.next_hop));
                }
            }
            fully_meshed(&b, &[&a, &c]).await
        })
        .await;

        // Gossip goes on (repairs every second) and a still does not dial c.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let st = a.status().await;
        assert_eq!(
            a.connected().await,
            vec![b.name],
            "{}",
            st.render_connections()
        );
        assert_eq!(st.connections.len(), 1, "{}", st.render_connections());
        assert!(!st.discovery);
        assert_eq!(st.peers.len(), 3, "{}", st.render_peers());
        let t = a.table();
        assert_eq!(
            t.neighbours.keys().copied().collect::<Vec<_>>(),
            vec![b.id()]
        );
        // Broadcasts from a go to b only; b passes them on to c.
        assert_eq!(t.broadcast[&a.id()], vec![b.id()]);
        assert_eq!(b.table().broadcast[&a.id()], vec![c.id()]);
        assert!(t.broadcast[&c.id()].is_empty());

        for p in [a, b, c] {
            p.stop().await;
        }
    });
}

/// Issue 14: short ids are 12 bits, so among a few dozen peers two names
/// likely give the same one. The larger name chooses another, and both are
/// routed by the ids they publish; nobody is left out for long.
#[test]
fn peers_sharing_a_short_id_settle_on_distinct_ones() {
    in_netns("shortid", || async {
        let b = Peer::start(0xb, B_PORT, true, &[]).await;
        let twin_name = (0..=u16::MAX)
            .map(|i| format!("02:ee:00:00:{:02x}:{:02x}", i >> 8, i & 0xff))
            .map(|s| s.parse::<PeerName>().unwrap())
            .find(|n| ShortId::of(n) == ShortId::of(&b.name))
            .expect("12-bit ids collide within 65536 names");
        assert!(twin_name > b.name);
        let twin = Peer::start_named(twin_name, A_PORT, true, &["127.0.0.1"], |_| {}).await;

        eventually("both routed by distinct ids", CONVERGE, || async {
            let (sb, st) = (b.status().await, twin.status().await);
            if sb.short_id == st.short_id {
                return Err(format!("both publish {}", sb.short_id));
            }
            for (p, s, other) in [(&b, &sb, &st), (&twin, &st, &sb)] {
                if p.table().me != s.short_id
                    || p.table().next_hop.get(&other.short_id) != Some(&other.short_id)
                    || s.counters.short_id_collisions != 0
                {
                    return Err(format!(
                        "{}: me {}, next hops {:?}, collisions {}",
                        p.name,
                        p.table().me,
                        p.table().next_hop,
                        s.counters.short_id_collisions
                    ));
                }
            }
            Ok(())
        })
        .await;
        let (sb, st) = (b.status().await, twin.status().await);
        assert_eq!(
            sb.short_id,
            ShortId::of(&b.name),
            "the smaller name keeps its id"
        );
        assert_eq!(sb.counters.short_ids_rechosen, 0);
        assert_eq!(st.counters.short_ids_rechosen, 1);

        for p in [b, twin] {
            p.stop().await;
        }
    });
}

/// `--conn-limit`: a peer keeps at most that many connections; the peers
/// over the limit are refused, counted, and still reach it through the
/// peer it is connected to.
#[test]
fn a_peer_holds_no_more_connections_than_its_limit() {
    in_netns("connlimit", || async {
        let b = Peer::start_with(0xb, B_PORT, true, &[], |c| c.conn_limit = 1).await;
        let a = Peer::start(0xa, A_PORT, true, &["127.0.0.1"]).await;
        eventually("a connected to b", CONVERGE, || async {
            let connected = b.connected().await;
            if connected == [a.name] {
                Ok(())
            } else {
                Err(format!("b connected to {connected:?}"))
            }
        })
        .await;
        // c joins through a, learns of b and dials it: b refuses.
        let via_a = format!("127.0.0.1:{A_PORT}");
        let c = Peer::start(0xc, C_PORT, true, &[via_a.as_str()]).await;
        let refused = eventually("c refused by b, and routed through a", CONVERGE, || async {
            let st = b.status().await;
            if st.counters.connections_over_limit == 0 {
                return Err(format!("nothing refused yet\n{}", st.render_connections()));
            }
            if b.table().next_hop.get(&c.id()) != Some(&a.id()) {
                return Err(format!("b's next hops: {:?}", b.table().next_hop));
            }
            Ok(st)
        })
        .await;
        assert_eq!(
            b.connected().await,
            vec![a.name],
            "{}",
            refused.render_connections()
        );
        assert!(
            refused
                .connections
                .iter()
                .filter(|conn| conn.state == ConnectionState::Established)
                .count()
                == 1,
            "{}",
            refused.render_connections()
        );
        for p in [a, b, c] {
            p.stop().await;
        }
    });
}

/// Wrong handshakes are refused with a reason, oversized and garbled frames
/// drop the connection and are counted, a peer that goes silent is declared
/// dead; through all of it a and b stay connected.
#[test]
fn bad_clients_are_refused_dropped_and_counted() {
    in_netns("bad", || async {
        let b = Peer::start(0xb, B_PORT, true, &[]).await;
        let a = Peer::start(0xa, A_PORT, true, &["127.0.0.1"]).await;
        eventually("a and b connected", CONVERGE, || async {
            fully_meshed(&a, &[&b]).await
        })
        .await;

        // A newer protocol version only.
        let (min, max) = (
            protocol::PROTOCOL_MIN_VERSION,
            protocol::PROTOCOL_MAX_VERSION,
        );
        let mut raw = Raw::connect(B_PORT).await;
        raw.send(&Message::Hello(raw_hello(0x51, max + 1, max + 2)))
            .await;
        assert_eq!(
            raw.until_closed().await.as_deref(),
            Some(
                format!(
                    "protocol mismatch: we speak {min}..{max}, they speak {}..{}",
                    max + 1,
                    max + 2
                )
                .as_str()
            )
        );

        // Another protocol's name.
        let mut raw = Raw::connect(B_PORT).await;
        let mut hello = raw_hello(0x52, 1, 1);
        hello.protocol = "weave".into();
        raw.send(&Message::Hello(hello)).await;
        let reason = raw.until_closed().await.unwrap_or_default();
        assert!(reason.starts_with("wrong protocol"), "{reason}");

        // Pretending to be b itself.
        let mut raw = Raw::connect(B_PORT).await;
        let mut hello = raw_hello(0xb, 1, 1);
        hello.uid = 1;
        raw.send(&Message::Hello(hello)).await;
        let reason = raw.until_closed().await.unwrap_or_default();
        assert!(reason.starts_with("another peer uses our name"), "{reason}");

        // Not our protocol at all: "GET " is a 1.2 GB frame.
        let mut raw = Raw::connect(B_PORT).await;
        raw.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        raw.until_closed().await;

        // After a good handshake: a frame over the limit, then garbage JSON.
        let mut raw = Raw::connect(B_PORT).await;
        raw.handshake(raw_hello(0x53, 1, 1)).await;
        raw.stream
            .write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        raw.until_closed().await;
        let mut raw = Raw::connect(B_PORT).await;
        raw.handshake(raw_hello(0x54, 1, 1)).await;
        let body = b"{\"type\":\"gossip\",\"peers\":[{";
        raw.stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        raw.stream.write_all(body).await.unwrap();
        raw.until_closed().await;

        let counters = eventually("the drops counted", FORGET, || async {
            let c = b.status().await.counters;
            if c.oversized_frames == 2 && c.garbled_messages == 1 && c.handshakes_refused == 3 {
                Ok(c)
            } else {
                Err(format!("{c:?}"))
            }
        })
        .await;
        eprintln!("b's counters: {counters:?}");

        // A peer that joins, gossips its entry, then goes silent.
        let mut raw = Raw::connect(B_PORT).await;
        let silent = peer_name(0x55);
        raw.handshake(raw_hello(0x55, 1, 1)).await;
        let mut entry = PeerInfo::new(silent, "silent".into(), 77, 1);
        entry.connections.push(ConnectionSummary {
            peer: b.name,
            address: SocketAddr::from(([127, 0, 0, 1], B_PORT)),
            outbound: true,
            established: true,
        });
        raw.send(&Message::Gossip(TopologyUpdate { peers: vec![entry] }))
            .await;
        let last_heard = Instant::now();
        let silent_id = ShortId::of(&silent);
        eventually("the silent peer known to a and b", CONVERGE, || async {
            for p in [&a, &b] {
                if !p.table().next_hop.contains_key(&silent_id) {
                    return Err(format!("{}: {:?}", p.name, p.table().next_hop));
                }
            }
            Ok(())
        })
        .await;
        assert_eq!(
            a.table().next_hop[&silent_id],
            b.id(),
            "a reaches it through b"
        );
        eventually("the silent peer declared dead", FORGET, || async {
            for p in [&a, &b] {
                let st = p.status().await;
                if p.table().next_hop.contains_key(&silent_id)
                    || st.peers.iter().any(|q| q.name == silent)
                {
                    return Err(format!("{} still has it:\n{}", p.name, st.render_peers()));
                }
            }
            Ok(())
        })
        .await;
        assert!(
            last_heard.elapsed() >= timing().control_dead_after,
            "dead only after the timeout, not {:?}",
            last_heard.elapsed()
        );
        assert_eq!(b.status().await.counters.heartbeat_timeouts, 1);
        drop(raw);

        // The mesh went on working throughout.
        fully_meshed(&a, &[&b]).await.unwrap();
        fully_meshed(&b, &[&a]).await.unwrap();
        assert_eq!(a.status().await.counters.oversized_frames, 0);

        a.stop().await;
        b.stop().await;
    });
}

/// Peers of protocol 4 open a connection with a digest of what they hold and
/// answer the other's with the entries it lacks; a peer of protocol 3 gets
/// the whole topology at once; a second digest on one connection is not
/// answered, so a peer cannot have the topology sent again and again for a
/// few bytes.
#[test]
fn peers_that_meet_exchange_digests_and_older_peers_get_the_whole_topology() {
    in_netns("digest", || async {
        let b = Peer::start(0xb, B_PORT, true, &[]).await;
        let a = Peer::start(0xa, A_PORT, true, &["127.0.0.1"]).await;
        eventually("a and b connected", CONVERGE, || async {
            fully_meshed(&a, &[&b]).await
        })
        .await;
        let names = |update: &TopologyUpdate| -> Vec<PeerName> {
            update.peers.iter().map(|p| p.name).collect()
        };

        // Protocol 3: the whole topology, no digest.
        let mut raw = Raw::connect(B_PORT).await;
        raw.handshake(raw_hello(0x61, 3, 3)).await;
        match raw.next_not_heartbeat().await {
            Some(Message::Gossip(update)) => {
                assert!(names(&update).contains(&a.name) && names(&update).contains(&b.name));
            }
            other => panic!("a protocol 3 peer must get the whole topology first: {other:?}"),
        }
        drop(raw);

        // Protocol 4: b's digest first, naming what b holds.
        let mut raw = Raw::connect(B_PORT).await;
        raw.handshake(raw_hello(0x62, 4, 4)).await;
        let Some(Message::Digest(digest)) = raw.next_not_heartbeat().await else {
            panic!("a protocol 4 peer must get a digest first");
        };
        let held: Vec<PeerName> = digest.peers.iter().map(|e| e.name).collect();
        assert!(
            held.contains(&a.name) && held.contains(&b.name),
            "{digest:?}"
        );
        // We hold nothing: b answers with its entries, a's among them (b
        // sends its own entry by itself when it changes, a's only as an
        // answer).
        let ours = TopologyDigest { peers: Vec::new() };
        raw.send(&Message::Digest(ours.clone())).await;
        loop {
            match raw.next_not_heartbeat().await {
                Some(Message::Gossip(update)) if names(&update).contains(&a.name) => break,
                Some(Message::Gossip(_)) => {}
                other => panic!("b must answer our digest with gossip of a's entry: {other:?}"),
            }
        }
        // Again: counted, not answered.
        raw.send(&Message::Digest(ours)).await;
        eventually("the second digest ignored", FORGET, || async {
            match b.status().await.counters.digests_ignored {
                1 => Ok(()),
                n => Err(format!("digests_ignored {n}")),
            }
        })
        .await;
        drop(raw);

        fully_meshed(&a, &[&b]).await.unwrap();
        a.stop().await;
        b.stop().await;
    });
}

/// The established connection of `p` with `peer`: its data plane label and
/// why fastdp is off, or what `p` shows instead.
async fn label(p: &Peer, peer: PeerName) -> Result<(String, Option<String>), String> {
    let st = p.status().await;
    st.connections
        .iter()
        .find(|c| c.state == ConnectionState::Established && c.peer == Some(peer))
        .map(|c| (c.dataplane.clone(), c.fastdp_off.clone()))
        .ok_or_else(|| {
            format!(
                "{} not connected to {peer}:\n{}",
                p.name,
                st.render_connections()
            )
        })
}

/// a and b run fastdp, c does not: only a - b uses it, in both tables with
/// the address each knows the other by (127.0.0.1 here), and status says
/// why a - c and b - c do not.
#[test]
fn fastdp_is_used_only_where_both_ends_offer_it() {
    in_netns("fastdp", || async {
        let fastdp = |c: &mut MeshConfig| {
            c.fastdp = true;
            c.dataplane_name = "xdp".into();
        };
        let b = Peer::start_with(0xb, B_PORT, true, &[], fastdp).await;
        let a = Peer::start_with(0xa, A_PORT, true, &["127.0.0.1"], fastdp).await;
        let c = Peer::start(0xc, C_PORT, true, &["127.0.0.1:6783"]).await;
        eventually("a full mesh of three", CONVERGE, || async {
            fully_meshed(&a, &[&b, &c]).await?;
            fully_meshed(&b, &[&a, &c]).await?;
            fully_meshed(&c, &[&a, &b]).await
        })
        .await;

        let lo = std::net::Ipv4Addr::LOCALHOST;
        for (p, q) in [(&a, &b), (&b, &a)] {
            let t = p.table();
            assert_eq!(
                t.fastdp.iter().collect::<Vec<_>>(),
                [(&q.id(), &lo)],
                "{}: fastdp only to {}",
                p.name,
                q.name
            );
            assert_eq!(
                label(p, q.name).await.unwrap(),
                ("fastdp".to_string(), None)
            );
            assert_eq!(
                label(p, c.name).await.unwrap(),
                ("xdp".to_string(), Some("peer has no fastdp".to_string()))
            );
            let text = p.status().await.render_connections();
            eprintln!("{}:\n{text}", p.name);
            assert!(
                text.contains(
                    "established xdp (fastdp off: peer has no fastdp) 02:00:00:00:00:0c(host-c)"
                ),
                "{text}"
            );
        }
        // c does not run fastdp: nothing to explain, its own data plane.
        assert!(c.table().fastdp.is_empty());
        for p in [&a, &b] {
            assert_eq!(label(&c, p.name).await.unwrap(), ("fake".to_string(), None));
        }

        // b gone: a's table drops it from fastdp with the neighbour.
        let b_id = b.id();
        b.stop().await;
        eventually("b gone from a's fastdp peers", FORGET, || async {
            let t = a.table();
            if t.fastdp.contains_key(&b_id) || t.neighbours.contains_key(&b_id) {
                return Err(format!("{:?}", t.fastdp));
            }
            Ok(())
        })
        .await;
        a.stop().await;
        c.stop().await;
    });
}

/// With a password, a fastdp agent offers nothing: the table stays empty
/// and each connection says why.
#[test]
fn fastdp_is_off_in_password_mode() {
    in_netns("fastdp-psk", || async {
        let with_password = |c: &mut MeshConfig| {
            c.fastdp = true;
            c.psk = Some(weave_agent::mesh::noise::Psk::from_bytes([7; 32]));
        };
        let b = Peer::start_with(0xb, B_PORT, true, &[], with_password).await;
        let a = Peer::start_with(0xa, A_PORT, true, &["127.0.0.1"], with_password).await;
        eventually("a and b connected", CONVERGE, || async {
            fully_meshed(&a, &[&b]).await
        })
        .await;
        for (p, q) in [(&a, &b), (&b, &a)] {
            assert!(p.table().encrypted);
            assert!(p.table().fastdp.is_empty(), "{:?}", p.table().fastdp);
            assert_eq!(
                label(p, q.name).await.unwrap(),
                ("fake".to_string(), Some("password mode".to_string()))
            );
        }
        a.stop().await;
        b.stop().await;
    });
}
