//! Both data planes between simulated hosts, without dockerd or the agent:
//! each "host" is a network namespace on a veth "LAN" (a bridge in a
//! namespace of its own), with a `weave` bridge, the datapath veth pair
//! (`vethwe-bridge` on the bridge, `vethwe-datapath` for the overlay, the XDP
//! program attached as the agent does for the engine) and one "container"
//! namespace on a veth port. An overlay runs in each host namespace with a
//! forwarding table built by hand, as the control plane would publish it:
//! [`PlainOverlay`] (capture socket) or [`XdpOverlay`] (`AF_XDP`, with the
//! datapath program's maps). Every case runs once per engine
//! (`CASE::plain`, `CASE::xdp`), in the manner of aya's rstest `#[case]`s.
//!
//! What they prove: ARP (broadcast) and ping cross hosts, large pings
//! included; a TCP stream arrives intact; garbage on the data port, from
//! strangers and from a neighbour, is counted and changes nothing; a third
//! host reaches the first through the second (relay); a MAC that moves from
//! one host to another is followed at once; a path that refuses UDP GSO
//! still carries everything, and the refusals are counted; transmit
//! offloads must be off on the way to the data plane, and where; stopping
//! an overlay frees its sockets and threads.
//!
//! Needs root (namespaces, `AF_PACKET`, `AF_XDP`, BPF); `cargo xtask test` runs
//! them one at a time.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use weave_agent::report::causes;

use weave_agent::config::{BRIDGE, CONTAINER_IFNAME, DATAPATH_BRIDGE_END, DATAPATH_END};
// The only use of the agent's eBPF module (see `attach_datapath`).
use weave_agent::ebpf::{Classifier, DatapathMaps};
use weave_agent::netlink::{disable_tx_offloads, tx_offloads};
use weave_agent::overlay::{
    DEFAULT_DATA_PORT, ForwardingTable, Overlay, OverlayError, OverlayStats, PlainConfig,
    PlainOverlay, ShortId, XdpConfig, XdpOverlay, vxlan,
};
use weave_tests::{Netns, TEST_PREFIX, check, require_root, sweep_stale, wait_until};

/// The LAN's MTU less VXLAN's 50 bytes.
const MTU: u32 = 1450;
const LAN_MTU: u32 = 1500;
const TIMEOUT: Duration = Duration::from_secs(20);
const TCP_PORT: u16 = 5201;

// ---------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------

/// Which data plane a world runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Plain,
    Xdp,
}

impl Engine {
    /// What `Overlay::name` says.
    const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Xdp => "xdp",
        }
    }
}

/// Instantiates each case once per engine, as aya's tests do with rstest's
/// `#[case]`: `CASE::plain` and `CASE::xdp` call `CASE(Engine::...)`.
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn plain() {
                super::$case(super::Engine::Plain);
            }

            #[test]
            fn xdp() {
                super::$case(super::Engine::Xdp);
            }
        }
    )*};
}

/// The datapath program as the agent loads it for an engine, and (xdp) the
/// maps the overlay drives it through, until an overlay takes them.
struct Datapath {
    maps: Option<DatapathMaps>,
    _classifier: Classifier,
}

/// Loads the eBPF object and attaches `weave_datapath` to the datapath end
/// of the calling thread's namespace as `weave_agent::agent::dataplane`
/// does: generic XDP for both engines, the single-buffer program for
/// plain, the frags-aware one for xdp (so that TSO super-frames arrive
/// whole), whose overlay then takes the maps. The one place that names the
/// eBPF module.
fn attach_datapath(engine: Engine) -> Datapath {
    let mut classifier = Classifier::load().expect("loading the eBPF programs");
    let maps = match engine {
        Engine::Plain => {
            classifier
                .attach_datapath(DATAPATH_END)
                .expect("attaching XDP to vethwe-datapath");
            None
        }
        Engine::Xdp => {
            let multi_buffer = classifier
                .attach_datapath_multi_buffer(DATAPATH_END)
                .expect("attaching XDP to vethwe-datapath");
            assert!(multi_buffer, "this kernel refused the frags-aware program");
            let maps = classifier
                .take_datapath_maps()
                .expect("taking the datapath maps");
            Some(maps)
        }
    };
    Datapath {
        maps,
        _classifier: classifier,
    }
}

// ---------------------------------------------------------------------------
// Simulated hosts
// ---------------------------------------------------------------------------

/// Where transmit offloads are turned off before traffic flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offloads {
    /// Nowhere: the kernel's defaults.
    Untouched,
    /// On the bridge's datapath port, which transmits towards the capture socket.
    OffOnDatapathPort,
    /// On each container's ethwe.
    OffInContainers,
}

struct SimHost {
    // Dropped first: the overlay's threads stop before anything goes.
    overlay: Option<Arc<dyn Overlay>>,
    datapath: Option<Datapath>,
    engine: Engine,
    id: ShortId,
    n: u8,
    ns: Netns,
    container: Netns,
    /// xdp: whether the socket takes multi-buffer frames (as the agent's
    /// does wherever the kernel allows).
    multi_buffer: bool,
    /// xdp: `--busy-poll`, one worker that never sleeps.
    busy_poll: bool,
}

impl SimHost {
    fn lan_addr(&self) -> SocketAddr {
        SocketAddr::from((lan_ip(self.n), DEFAULT_DATA_PORT))
    }

    fn overlay(&self) -> &dyn Overlay {
        self.overlay.as_deref().expect("overlay started")
    }

    /// Starts an overlay of this host's engine in its namespace, on
    /// `ifname`; for xdp with the datapath maps, loading the program again
    /// when an earlier overlay took them.
    fn start_overlay(&mut self, ifname: &str, mtu: u32) -> Result<Arc<dyn Overlay>, OverlayError> {
        let udp_listen = SocketAddr::from(([0, 0, 0, 0], DEFAULT_DATA_PORT));
        let datapath_ifname = ifname.to_owned();
        match self.engine {
            Engine::Plain => in_netns(&self.ns, || {
                PlainOverlay::start(PlainConfig {
                    datapath_ifname,
                    udp_listen,
                    mtu,
                })
                .map(|o| -> Arc<dyn Overlay> { o })
            }),
            Engine::Xdp => {
                self.reload_datapath();
                let datapath = self.datapath.as_mut().expect("datapath loaded");
                let maps = datapath.maps.take().expect("datapath maps");
                let (multi_buffer, busy_poll) = (self.multi_buffer, self.busy_poll);
                in_netns(&self.ns, || {
                    XdpOverlay::start(
                        XdpConfig {
                            datapath_ifname,
                            udp_listen,
                            mtu,
                            multi_buffer,
                            busy_poll,
                        },
                        maps,
                    )
                    .map(|o| -> Arc<dyn Overlay> { o })
                })
            }
        }
    }

    /// Loads and attaches the datapath program again if an xdp overlay took
    /// its maps (the old one is detached first: one XDP program a device).
    fn reload_datapath(&mut self) {
        if self.engine == Engine::Xdp && self.datapath.as_ref().is_none_or(|d| d.maps.is_none()) {
            self.datapath = None;
            self.datapath = Some(in_netns(&self.ns, || attach_datapath(Engine::Xdp)));
        }
    }

    fn stats(&self) -> OverlayStats {
        self.overlay().stats()
    }

    const fn container_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 40, 0, self.n)
    }
}

/// A LAN namespace with a bridge, and hosts on it. Dropped in order: hosts
/// (overlays, then namespaces), then the LAN.
struct World {
    hosts: Vec<SimHost>,
    engine: Engine,
    lan: Netns,
}

const fn lan_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 250, n)
}

fn ns_name(test: &str, what: &str) -> String {
    format!("{TEST_PREFIX}{}-{test}-{what}", std::process::id())
}

#[track_caller]
fn ip(args: &[&str]) {
    check(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Runs `f` on a thread that entered `ns`'s network namespace: sockets it
/// opens belong there, whichever thread uses them afterwards.
#[track_caller]
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ns.run_inside(f).unwrap_or_else(|e| panic!("{e:#}"))
}

impl World {
    /// Hosts 1..=count on one LAN, each with a bridge, the datapath pair and
    /// one container 10.40.0.n/24; no overlay yet.
    fn new(test: &str, count: u8, offloads: Offloads, engine: Engine) -> Self {
        require_root("the overlay tests (network namespaces, AF_PACKET and AF_XDP sockets, BPF)");
        sweep_stale();
        let test = &format!("{test}-{}", engine.name());
        let lan = Netns::create(&ns_name(test, "lan")).unwrap_or_else(|e| panic!("{e:#}"));
        ip(&["-n", lan.name(), "link", "add", "lan0", "type", "bridge"]);
        ip(&["-n", lan.name(), "link", "set", "lan0", "up"]);
        let mut world = Self {
            hosts: Vec::new(),
            engine,
            lan,
        };
        for n in 1..=count {
            let host = world.add_host(test, n, offloads);
            world.hosts.push(host);
        }
        world
    }

    fn add_host(&self, test: &str, n: u8, offloads: Offloads) -> SimHost {
        let lan = self.lan.name();
        let ns =
            Netns::create(&ns_name(test, &format!("h{n}"))).unwrap_or_else(|e| panic!("{e:#}"));
        let container =
            Netns::create(&ns_name(test, &format!("c{n}"))).unwrap_or_else(|e| panic!("{e:#}"));
        let (h, c) = (ns.name(), container.name());
        let port = format!("p{n}");
        let lan_mtu = LAN_MTU.to_string();
        let mtu = MTU.to_string();
        // The LAN.
        ip(&[
            "-n", h, "link", "add", "eth0", "mtu", &lan_mtu, "type", "veth", "peer", "name", &port,
            "netns", lan,
        ]);
        ip(&["-n", lan, "link", "set", &port, "master", "lan0", "up"]);
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", lan_ip(n)),
            "dev",
            "eth0",
        ]);
        ip(&["-n", h, "link", "set", "eth0", "up"]);
        // The bridge and its datapath port, as the agent makes them.
        ip(&[
            "-n", h, "link", "add", BRIDGE, "mtu", &mtu, "type", "bridge",
        ]);
        ip(&[
            "-n",
            h,
            "link",
            "add",
            DATAPATH_BRIDGE_END,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            DATAPATH_END,
            "mtu",
            &mtu,
        ]);
        ip(&[
            "-n",
            h,
            "link",
            "set",
            DATAPATH_BRIDGE_END,
            "master",
            BRIDGE,
        ]);
        // One container.
        ip(&[
            "-n",
            h,
            "link",
            "add",
            "vethwepl1",
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            CONTAINER_IFNAME,
            "mtu",
            &mtu,
            "netns",
            c,
        ]);
        ip(&["-n", h, "link", "set", "vethwepl1", "master", BRIDGE, "up"]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("10.40.0.{n}/24"),
            "dev",
            CONTAINER_IFNAME,
        ]);
        ip(&["-n", c, "link", "set", CONTAINER_IFNAME, "up"]);
        match offloads {
            Offloads::Untouched => {}
            Offloads::OffOnDatapathPort => in_netns(&ns, || {
                disable_tx_offloads(DATAPATH_BRIDGE_END).expect("offloads off on vethwe-bridge");
                let now = tx_offloads(DATAPATH_BRIDGE_END).expect("reading offloads");
                assert!(!now.checksum && !now.tso, "{now:?}");
            }),
            Offloads::OffInContainers => in_netns(&container, || {
                disable_tx_offloads(CONTAINER_IFNAME).expect("offloads off on ethwe");
                let now = tx_offloads(CONTAINER_IFNAME).expect("reading offloads");
                assert!(!now.checksum && !now.tso, "{now:?}");
            }),
        }
        // The agent's XDP program on the datapath end: frames pass it
        // before the capture socket sees them, or it redirects them into
        // the AF_XDP socket.
        let datapath = in_netns(&ns, || attach_datapath(self.engine));
        for dev in [DATAPATH_END, DATAPATH_BRIDGE_END, BRIDGE] {
            ip(&["-n", h, "link", "set", dev, "up"]);
        }
        SimHost {
            overlay: None,
            datapath: Some(datapath),
            engine: self.engine,
            id: ShortId(0x100 + u16::from(n)),
            n,
            ns,
            container,
            multi_buffer: true,
            busy_poll: false,
        }
    }

    fn host(&self, n: u8) -> &SimHost {
        &self.hosts[usize::from(n) - 1]
    }

    /// Starts an overlay in every host namespace.
    fn start_overlays(&mut self) {
        for host in &mut self.hosts {
            let overlay = host
                .start_overlay(DATAPATH_END, MTU)
                .unwrap_or_else(|e| panic!("starting the overlay: {}", causes(&e)));
            assert_eq!(overlay.name(), self.engine.name());
            host.overlay = Some(overlay);
        }
    }

    /// Every host a neighbour of every other; each is its own broadcast
    /// tree's only branch point (what a full mesh computes).
    fn full_mesh(&self) {
        for me in &self.hosts {
            let mut t = ForwardingTable {
                me: me.id,
                ..ForwardingTable::default()
            };
            let others: Vec<&SimHost> = self.hosts.iter().filter(|h| h.id != me.id).collect();
            for o in &others {
                t.neighbours.insert(o.id, o.lan_addr());
                t.next_hop.insert(o.id, o.id);
                t.broadcast.insert(o.id, Vec::new());
            }
            t.broadcast
                .insert(me.id, others.iter().map(|o| o.id).collect());
            me.overlay().update(Arc::new(t));
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

fn ping(from: &Netns, to: Ipv4Addr, args: &[&str]) -> bool {
    let mut cmd = from.command("ping");
    cmd.args(["-c", "1", "-W", "1"])
        .args(args)
        .arg(to.to_string());
    weave_tests::run(&mut cmd, Duration::from_secs(10)).is_ok_and(|o| o.success())
}

#[track_caller]
fn assert_ping(from: &SimHost, to: &SimHost, args: &[&str]) {
    let target = to.container_ip();
    wait_until(
        &format!("ping {args:?} c{} -> {target}", from.n),
        TIMEOUT,
        || ping(&from.container, target, args).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nstats of h{}: {:?}\nstats of h{}: {:?}",
            from.n,
            from.stats(),
            to.n,
            to.stats()
        )
    });
}

/// FNV-1a over a byte stream.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A block of pseudo-random bytes (xorshift64*), sent over and over.
fn random_block(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Outcome of a TCP transfer.
struct Transfer {
    sent: usize,
    received: usize,
    intact: bool,
    elapsed: Duration,
}

impl Transfer {
    fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Sends `bytes` from `from`'s container to `to`'s over TCP, giving up
/// after `timeout`; compares checksums.
fn tcp_transfer(from: &SimHost, to: &SimHost, bytes: usize, timeout: Duration) -> Transfer {
    tcp_transfer_between(
        &from.container,
        (&to.container, to.container_ip()),
        bytes,
        timeout,
    )
}

/// Sends `bytes` over TCP from a container to one listening on `to`.
fn tcp_transfer_between(
    from: &Netns,
    to: (&Netns, Ipv4Addr),
    bytes: usize,
    timeout: Duration,
) -> Transfer {
    let addr = SocketAddr::from((to.1, TCP_PORT));
    let listener = in_netns(to.0, || TcpListener::bind(addr).expect("listening"));
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    let server = thread::spawn(move || {
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Ok((0, Fnv::new().0)); // nobody connected
                    }
                    thread::sleep(Duration::from_millis(10)); // polling, with a deadline
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut hash = Fnv::new();
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok((received, hash.0));
            }
            stream.set_read_timeout(Some(left)).unwrap();
            match stream.read(&mut buf) {
                Ok(0) => return Ok((received, hash.0)),
                Ok(n) => {
                    hash.update(&buf[..n]);
                    received += n;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok((received, hash.0));
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    });

    let start = Instant::now();
    let block = random_block(1 << 20, bytes as u64);
    let mut expected = Fnv::new();
    let mut sent = 0;
    let client = in_netns(from, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    });
    if let Ok(mut stream) = client {
        while sent < bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_write_timeout(Some(left)).unwrap();
            let chunk = &block[..block.len().min(bytes - sent)];
            if stream.write_all(chunk).is_err() {
                break;
            }
            expected.update(chunk);
            sent += chunk.len();
        }
        let _ = stream.shutdown(Shutdown::Write);
    }
    let (received, hash) = server
        .join()
        .expect("the TCP server thread panicked")
        .unwrap_or_else(|e| panic!("TCP server: {e}"));
    Transfer {
        sent,
        received,
        intact: sent == bytes && received == bytes && hash == expected.0,
        elapsed: start.elapsed(),
    }
}

#[track_caller]
fn assert_tcp(from: &SimHost, to: &SimHost, bytes: usize) {
    let t = tcp_transfer(from, to, bytes, Duration::from_mins(1));
    assert!(
        t.intact,
        "TCP c{} -> c{}: sent {} of {bytes}, received {}, checksum {}\nstats of h{}: {:?}\nstats of h{}: {:?}",
        from.n,
        to.n,
        t.sent,
        t.received,
        if t.received == t.sent {
            "differs"
        } else {
            "not compared"
        },
        from.n,
        from.stats(),
        to.n,
        to.stats()
    );
    eprintln!(
        "TCP c{} -> c{}: {} MB intact in {:.2?} ({:.0} Mbit/s)",
        from.n,
        to.n,
        bytes >> 20,
        t.elapsed,
        t.mbit_per_s()
    );
}

// ---------------------------------------------------------------------------
// Packets by hand
// ---------------------------------------------------------------------------

/// Sends `payload` as one UDP datagram from `src_port` of `ns`'s LAN address
/// to `to`, through a raw socket: the data port itself is the overlay's.
fn send_udp_raw(ns: &Netns, src_port: u16, to: SocketAddrV4, payload: &[u8]) {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&to.port().to_be_bytes());
    datagram.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    datagram.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
    datagram.extend_from_slice(payload);
    in_netns(ns, || {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `datagram` and `addr` are live across the call.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            n,
            datagram.len() as isize,
            "raw sendto: {}",
            std::io::Error::last_os_error()
        );
    });
}

fn vxlan_packet(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut p = vxlan::header(vni).to_vec();
    p.extend_from_slice(frame);
    p
}

fn ethernet(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = check(Command::new("ip").args(["-n", ns.name(), "-o", "link", "show", dev]))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out:?}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

#[track_caller]
fn wait_stats(host: &SimHost, what: &str, ok: impl Fn(&OverlayStats) -> bool) -> OverlayStats {
    wait_until(what, TIMEOUT, || Some(host.stats()).filter(|s| ok(s)))
        .unwrap_or_else(|e| panic!("{e:#}\nstats of h{}: {:?}", host.n, host.stats()))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

on_both_engines!(
    two_hosts_ping_carry_tcp_and_shrug_off_garbage,
    three_hosts_in_a_line_relay_through_the_middle,
    a_mac_that_moves_to_another_host_is_followed_at_once,
    a_path_that_refuses_udp_gso_still_carries_everything,
    transmit_offloads_on_the_way_to_the_data_plane,
    a_stopped_overlay_leaves_nothing_and_can_start_again,
);

fn two_hosts_ping_carry_tcp_and_shrug_off_garbage(engine: Engine) {
    let mut world = World::new("ovl2", 2, Offloads::OffOnDatapathPort, engine);
    world.start_overlays();
    world.full_mesh();
    let (h1, h2) = (world.host(1), world.host(2));

    // ARP is broadcast: the first ping proves flooding, replies unicast.
    assert_ping(h1, h2, &[]);
    assert_ping(h2, h1, &[]);
    // The largest frame that fits, unfragmented, and a fragmented one.
    let fits = (MTU - 28).to_string();
    assert_ping(h1, h2, &["-M", "do", "-s", &fits]);
    assert_ping(h1, h2, &["-s", "1400"]);
    assert_ping(h1, h2, &["-s", "4000"]);
    assert!(
        !ping(
            &h1.container,
            h2.container_ip(),
            &["-M", "do", "-s", &(MTU - 27).to_string()]
        ),
        "a frame larger than the MTU must not cross"
    );
    assert_tcp(h1, h2, 20 << 20);
    assert_tcp(h2, h1, 20 << 20);
    let before = h1.stats();
    assert!(
        before.frames_sent > 0 && before.frames_received > 0,
        "{before:?}"
    );
    assert_eq!(
        (
            before.dropped_malformed,
            before.dropped_unknown_sender,
            before.dropped_oversize,
            before.dropped_spoofed,
            before.dropped_send_failed
        ),
        (0, 0, 0, 0, 0),
        "legitimate traffic dropped: {before:?}"
    );

    // Garbage from a stranger: h2's address, another port.
    let to_h1 = SocketAddrV4::new(lan_ip(1), DEFAULT_DATA_PORT);
    let stranger = in_netns(&h2.ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let c1_mac = mac_of(&h1.container, CONTAINER_IFNAME);
    let valid_to_h1 = vxlan_packet(
        ShortId::vni(h2.id, h1.id),
        &ethernet([0xff; 6], [0x02, 0, 0, 0, 0x0e, 0x01], 60),
    );
    for payload in [&b"garbage"[..], &[0u8; 0][..], (&*valid_to_h1)] {
        stranger.send_to(payload, to_h1).unwrap();
    }
    // Garbage from the neighbour's own data port.
    let mut no_i_flag = valid_to_h1;
    no_i_flag[0] = 0;
    let from_h2 = [
        b"garbage".to_vec(),
        no_i_flag,
        vxlan_packet(ShortId::vni(h2.id, h1.id), &[0xff; 10]),
        // One byte over the MTU (fragmented on the LAN, reassembled by h1).
        vxlan_packet(
            ShortId::vni(h2.id, h1.id),
            &ethernet([0xff; 6], [0x02, 0, 0, 0, 0x0e, 0x02], MTU as usize + 15),
        ),
        // h1's own container's MAC, and h1 itself as the origin.
        vxlan_packet(ShortId::vni(h2.id, h1.id), &ethernet([0xff; 6], c1_mac, 60)),
        vxlan_packet(
            ShortId::vni(h1.id, ShortId::BROADCAST),
            &ethernet([0xff; 6], [0x02, 0, 0, 0, 0x0e, 0x03], 60),
        ),
        // For a peer nobody knows.
        vxlan_packet(
            ShortId::vni(h2.id, ShortId(0x999)),
            &ethernet([0xff; 6], [0x02, 0, 0, 0, 0x0e, 0x04], 60),
        ),
    ];
    for payload in &from_h2 {
        send_udp_raw(&h2.ns, DEFAULT_DATA_PORT, to_h1, payload);
    }
    let after = wait_stats(h1, "h1 to count the garbage", |s| {
        s.dropped_unknown_sender >= before.dropped_unknown_sender + 3
            && s.dropped_malformed >= before.dropped_malformed + 3
            && s.dropped_oversize > before.dropped_oversize
            && s.dropped_spoofed >= before.dropped_spoofed + 2
            && s.dropped_no_route > before.dropped_no_route
    });
    assert_eq!(
        after.dropped_unknown_sender,
        before.dropped_unknown_sender + 3,
        "{after:?}"
    );
    assert_eq!(
        after.dropped_malformed,
        before.dropped_malformed + 3,
        "{after:?}"
    );
    assert_eq!(
        after.dropped_oversize,
        before.dropped_oversize + 1,
        "{after:?}"
    );
    assert_eq!(
        after.dropped_spoofed,
        before.dropped_spoofed + 2,
        "{after:?}"
    );
    assert_eq!(
        after.dropped_no_route,
        before.dropped_no_route + 1,
        "{after:?}"
    );
    eprintln!("h1 after garbage: {after:?}");

    // Nothing changed: c1 is still where it was, both ways work.
    assert_ping(h2, h1, &[]);
    assert_tcp(h2, h1, 4 << 20);
}

fn three_hosts_in_a_line_relay_through_the_middle(engine: Engine) {
    let mut world = World::new("ovl3", 3, Offloads::OffOnDatapathPort, engine);
    world.start_overlays();
    let (a, b, c) = (world.host(1).id, world.host(2).id, world.host(3).id);
    let addr = |n: u8| world.host(n).lan_addr();
    // h1 - h2 - h3: h1 and h3 are not neighbours; h2 is the next hop between
    // them and their broadcast trees branch at h2.
    let mut t1 = ForwardingTable {
        me: a,
        ..ForwardingTable::default()
    };
    t1.neighbours.insert(b, addr(2));
    t1.next_hop.extend([(b, b), (c, b)]);
    t1.broadcast
        .extend([(a, vec![b]), (b, vec![]), (c, vec![])]);
    let mut t2 = ForwardingTable {
        me: b,
        ..ForwardingTable::default()
    };
    t2.neighbours.extend([(a, addr(1)), (c, addr(3))]);
    t2.next_hop.extend([(a, a), (c, c)]);
    t2.broadcast
        .extend([(b, vec![a, c]), (a, vec![c]), (c, vec![a])]);
    let mut t3 = ForwardingTable {
        me: c,
        ..ForwardingTable::default()
    };
    t3.neighbours.insert(b, addr(2));
    t3.next_hop.extend([(b, b), (a, b)]);
    t3.broadcast
        .extend([(c, vec![b]), (a, vec![]), (b, vec![])]);
    for (n, t) in [(1, t1), (2, t2), (3, t3)] {
        world.host(n).overlay().update(Arc::new(t));
    }
    let (h1, h2, h3) = (world.host(1), world.host(2), world.host(3));

    assert_ping(h1, h3, &[]);
    assert_ping(h3, h1, &["-s", "1400"]);
    assert_ping(h1, h2, &[]);
    assert_tcp(h1, h3, 10 << 20);
    let relay = h2.stats();
    assert!(
        relay.frames_relayed > 1000,
        "h2 relays the stream between h1 and h3: {relay:?}"
    );
    for h in [h1, h3] {
        let s = h.stats();
        assert_eq!(
            (
                s.dropped_unknown_sender,
                s.dropped_no_route,
                s.dropped_malformed
            ),
            (0, 0, 0),
            "h{}: {s:?}",
            h.n
        );
    }
    eprintln!("relay h2: {relay:?}");
}

/// A container moves from h2 to h3 with its MAC and address (deleted on
/// h2, recreated on h3): once it has sent one frame from h3 (here, the ARP
/// request of its first ping), h1 must send to h3 what it sent to h2, at
/// once, not after the MAC ages out of its table (or, xdp, of the
/// datapath program's copy of it).
fn a_mac_that_moves_to_another_host_is_followed_at_once(engine: Engine) {
    let mut world = World::new("ovlmove", 3, Offloads::OffOnDatapathPort, engine);
    world.start_overlays();
    world.full_mesh();
    let (h1, h2, h3) = (world.host(1), world.host(2), world.host(3));
    // h1 learns c2's MAC behind h2 (and c1's ARP cache learns c2's MAC).
    assert_ping(h1, h2, &[]);
    let moving = mac_of(&h2.container, CONTAINER_IFNAME);

    // The move: gone from h2, the same MAC and address behind h3.
    ip(&["-n", h2.ns.name(), "link", "del", "vethwepl1"]);
    let moved = Netns::create(&ns_name(&format!("ovlmove-{}", engine.name()), "c3m"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mac = moving.map(|b| format!("{b:02x}")).join(":");
    let mtu = MTU.to_string();
    ip(&[
        "-n",
        h3.ns.name(),
        "link",
        "add",
        "vethwepl2",
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        CONTAINER_IFNAME,
        "address",
        &mac,
        "mtu",
        &mtu,
        "netns",
        moved.name(),
    ]);
    ip(&[
        "-n",
        h3.ns.name(),
        "link",
        "set",
        "vethwepl2",
        "master",
        BRIDGE,
        "up",
    ]);
    ip(&[
        "-n",
        moved.name(),
        "addr",
        "add",
        &format!("{}/24", h2.container_ip()),
        "dev",
        CONTAINER_IFNAME,
    ]);
    ip(&["-n", moved.name(), "link", "set", CONTAINER_IFNAME, "up"]);
    assert_eq!(mac_of(&moved, CONTAINER_IFNAME), moving);

    // Its first frame from h3 (an ARP request, broadcast); h1's answer
    // (unicast to the moved MAC) must reach h3, and so must c1's ping, sent
    // to the MAC c1's ARP cache still holds: "at once" is a few seconds,
    // where aging would take minutes.
    let promptly = Duration::from_secs(5);
    let stats = || {
        format!(
            "h1 {:?}\nh2 {:?}\nh3 {:?}",
            h1.stats(),
            h2.stats(),
            h3.stats()
        )
    };
    wait_until("the moved container pings c1", promptly, || {
        ping(&moved, h1.container_ip(), &[]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stats()));
    wait_until("c1 pings the moved container", promptly, || {
        ping(&h1.container, h2.container_ip(), &[]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stats()));
    // And a stream, every byte of it, past h2.
    let h2_before = h2.stats().frames_received;
    let bytes = 4 << 20;
    let t = tcp_transfer_between(
        &h1.container,
        (&moved, h2.container_ip()),
        bytes,
        Duration::from_mins(1),
    );
    assert!(
        t.intact,
        "TCP c1 -> moved container: sent {}, received {} of {bytes}\n{}",
        t.sent,
        t.received,
        stats()
    );
    // A few broadcasts at most; h2 could pass the stream on to h3 by
    // flooding it back, and it would still arrive.
    let h2_got = h2.stats().frames_received - h2_before;
    assert!(
        h2_got < 100,
        "h2 received {h2_got} frames of a stream it has no business with\n{}",
        stats()
    );
}

/// A path the kernel will not send UDP GSO datagrams on: a route from h1
/// to h2 with a locked MTU below a VXLAN packet's size. Such a datagram is
/// refused (EMSGSIZE) while a single one is fragmented on the way. (The
/// textbook trigger, `ethtool -K eth0 tx off`, no longer is one: since
/// Linux 6.11 the kernel checksums GSO datagrams in software; `IPsec` is
/// another, but this kernel has no ESP.) Everything must still arrive, and
/// h3, whose path takes GSO, must keep it.
///
/// Engine-specific: the xdp data plane sends with GSO, so it counts the
/// refusals (per peer: a few, then none); the plain one sends one datagram
/// per frame anyway, so it has nothing to refuse.
fn a_path_that_refuses_udp_gso_still_carries_everything(engine: Engine) {
    let mut world = World::new("ovlgso", 3, Offloads::OffOnDatapathPort, engine);
    world.start_overlays();
    world.full_mesh();
    let (h1, h2, h3) = (world.host(1), world.host(2), world.host(3));
    ip(&[
        "-n",
        h1.ns.name(),
        "route",
        "add",
        &format!("{}/32", lan_ip(2)),
        "dev",
        "eth0",
        "mtu",
        "lock",
        "1200",
    ]);
    assert_ping(h1, h2, &[]);
    assert_ping(h1, h3, &[]);
    assert_tcp(h1, h2, 10 << 20);
    let after_h2 = h1.stats();
    match engine {
        Engine::Xdp => assert!(
            after_h2.gso_refused > 0,
            "no GSO datagram was refused: the case proves nothing\n{after_h2:?}"
        ),
        Engine::Plain => assert_eq!(after_h2.gso_refused, 0, "{after_h2:?}"),
    }
    let (datagrams, frames) = (udp_in_datagrams(&h3.ns), h3.stats().frames_received);
    assert_tcp(h1, h3, 10 << 20);
    let (datagrams, frames) = (
        udp_in_datagrams(&h3.ns) - datagrams,
        h3.stats().frames_received - frames,
    );
    eprintln!("h3 received {frames} frames in {datagrams} UDP datagrams");
    if engine == Engine::Xdp {
        // A GSO datagram reaches h3's socket whole (UDP_GRO): one of many.
        assert!(
            datagrams * 4 < frames,
            "h3 got {frames} frames in {datagrams} datagrams: GSO was turned off for h3 too"
        );
    }
    let after_h3 = h1.stats();
    assert_eq!(
        after_h3.gso_refused, after_h2.gso_refused,
        "h3's path takes GSO: nothing more refused\n{after_h3:?}"
    );
    // Once h1 knows, h2's frames go one datagram each from the start.
    assert_tcp(h1, h2, 4 << 20);
    let last = h1.stats();
    assert_eq!(last.gso_refused, after_h2.gso_refused, "{last:?}");
    assert_eq!(last.dropped_send_failed, 0, "{last:?}");
    eprintln!("h1: {last:?}");
}

/// Datagrams the UDP stack of `ns` received (its `InDatagrams`: a GSO
/// datagram kept whole by `UDP_GRO` counts once).
fn udp_in_datagrams(ns: &Netns) -> u64 {
    let mut cat = ns.command("cat");
    cat.arg("/proc/net/snmp");
    let snmp = check(&mut cat).unwrap_or_else(|e| panic!("{e:#}"));
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no Udp lines in /proc/net/snmp: {snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InDatagrams")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no InDatagrams in {names:?} / {values:?}"))
}

/// Frames from a veth peer's stack carry unfinished checksums
/// (`CHECKSUM_PARTIAL`) and TCP super-frames (TSO). A capture socket passes
/// them on as they are, and the receiving stack drops them for their bad
/// checksum: on plain TCP cannot even connect (ICMP, checksummed by the
/// stack itself, works) unless transmit offloads are off on the bridge's
/// datapath port (where the agent turns them off for plain) or in every
/// container. The xdp engine takes them as they are: it cuts super-frames
/// (generic, frags-aware XDP hands them over whole) and finishes partial
/// checksums itself, so TCP crosses intact with the offloads untouched,
/// and still does with them off.
fn transmit_offloads_on_the_way_to_the_data_plane(engine: Engine) {
    let bytes = 8 << 20;
    {
        let mut world = World::new("ovloff", 2, Offloads::Untouched, engine);
        world.start_overlays();
        world.full_mesh();
        let (h1, h2) = (world.host(1), world.host(2));
        assert_ping(h1, h2, &[]);
        let t = tcp_transfer(h1, h2, bytes, Duration::from_secs(5));
        let stats = h1.stats();
        eprintln!(
            "offloads untouched: TCP sent {} and received {} of {bytes} bytes; h1 {stats:?}",
            t.sent, t.received,
        );
        match engine {
            Engine::Plain => assert!(
                !t.intact,
                "TCP crossed the plain engine with offloads on: the other cases prove nothing"
            ),
            Engine::Xdp => {
                assert!(
                    t.intact,
                    "TCP with offloads on did not cross the xdp engine intact"
                );
                assert!(
                    stats.frames_segmented > 0,
                    "no TCP super-frame reached the xdp engine whole"
                );
            }
        }
    }
    for offloads in [Offloads::OffOnDatapathPort, Offloads::OffInContainers] {
        let mut world = World::new("ovloff", 2, offloads, engine);
        world.start_overlays();
        world.full_mesh();
        let (h1, h2) = (world.host(1), world.host(2));
        eprintln!("{offloads:?}:");
        assert_tcp(h1, h2, bytes);
        assert_eq!(h1.stats().dropped_oversize, 0, "{offloads:?}");
    }
    if engine == Engine::Xdp {
        // Where the kernel has no multi-buffer AF_XDP the agent binds
        // single-buffer and turns TSO off on the port: frames then arrive
        // cut by the kernel, and nothing is left for the agent to cut.
        let mut world = World::new("ovloff", 2, Offloads::OffOnDatapathPort, engine);
        for host in &mut world.hosts {
            host.multi_buffer = false;
        }
        world.start_overlays();
        world.full_mesh();
        let (h1, h2) = (world.host(1), world.host(2));
        eprintln!("single-buffer AF_XDP, offloads off on the datapath port:");
        assert_tcp(h1, h2, bytes);
        assert_eq!(h1.stats().frames_segmented, 0, "single-buffer");
    }
}

/// `weave launch --busy-poll` (xdp only: plain has no workers to keep
/// awake): one worker, `weave-xsk-poll`, carries both directions without
/// sleeping; ping and a TCP stream cross as they do with two, and stopping
/// the overlay stops it.
#[test]
fn busy_polling_carries_both_directions_on_one_worker() {
    let thread_names = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .map(|name| name.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut world = World::new("ovlbusy", 2, Offloads::Untouched, Engine::Xdp);
    for host in &mut world.hosts {
        host.busy_poll = true;
    }
    world.start_overlays();
    world.full_mesh();
    // A thread names itself once it runs: until then it shows its parent's.
    let polling = |names: &[String]| names.iter().filter(|n| *n == "weave-xsk-poll").count();
    wait_until(
        "one busy-polling worker per host",
        Duration::from_secs(5),
        || (polling(&thread_names()) == 2).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", thread_names()));
    let names = thread_names();
    assert!(
        !names
            .iter()
            .any(|n| n == "weave-xsk-in" || n == "weave-xsk-out"),
        "no sleeping workers beside it: {names:?}"
    );
    let (h1, h2) = (world.host(1), world.host(2));
    assert_ping(h1, h2, &[]);
    assert_tcp(h1, h2, 8 << 20);
    assert!(h1.stats().frames_segmented > 0, "TCP super-frames crossed");
    drop(world);
    wait_until(
        "the busy-polling workers stop",
        Duration::from_secs(5),
        || (!thread_names().iter().any(|n| n == "weave-xsk-poll")).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", thread_names()));
}

/// Threads and descriptors of this process (the integration tests run one
/// at a time, so nothing else changes them meanwhile).
fn threads_and_fds() -> (usize, usize) {
    let count = |dir| std::fs::read_dir(dir).map_or(0, Iterator::count);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

/// A joined thread may still be listed for a moment: poll, with a deadline.
#[track_caller]
fn assert_threads_and_fds(what: &str, ok: impl Fn((usize, usize)) -> bool) {
    wait_until(what, Duration::from_secs(5), || {
        ok(threads_and_fds()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: now {:?}", threads_and_fds()));
}

fn a_stopped_overlay_leaves_nothing_and_can_start_again(engine: Engine) {
    let mut world = World::new("ovlstop", 1, Offloads::OffOnDatapathPort, engine);
    let host = &mut world.hosts[0];
    // What an overlay holds open: plain, a packet and a UDP socket; xdp, two
    // AF_XDP sockets, a UDP and an injection socket (its maps were open
    // already: they come with the datapath program); both, the packet
    // socket that sends ICMP answers into the bridge (path MTU).
    // Threads: plain, one per direction; xdp, one per direction and one
    // that keeps the kernel's copy of the remote MACs in step.
    let (workers, fds) = match engine {
        Engine::Plain => (2, 3),
        Engine::Xdp => (3, 5),
    };
    let baseline = threads_and_fds();
    for _ in 0..3 {
        let overlay = host
            .start_overlay(DATAPATH_END, MTU)
            .unwrap_or_else(|e| panic!("starting: {}", causes(&e)));
        assert_threads_and_fds("the workers and their sockets", |(threads, now)| {
            threads == baseline.0 + workers && now == baseline.1 + fds
        });
        let stopping = Instant::now();
        overlay.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            stopping.elapsed()
        );
        overlay.stop(); // idempotent
        assert_threads_and_fds("workers joined", |(threads, _)| threads == baseline.0);
        drop(overlay);
        // xdp: the maps went with the overlay; as the agent would, load the
        // program again (it gets the same descriptors back, if none leaked).
        host.reload_datapath();
        assert_threads_and_fds("nothing left", |now| now == baseline);
    }
    // Dropping without stop() stops too.
    drop(
        host.start_overlay(DATAPATH_END, MTU)
            .unwrap_or_else(|e| panic!("starting: {}", causes(&e))),
    );
    host.reload_datapath();
    assert_threads_and_fds("nothing left after a drop", |now| now == baseline);

    assert!(host.start_overlay("wvt-missing", MTU).is_err());
    assert!(host.start_overlay(DATAPATH_END, 10).is_err());
    host.reload_datapath();
    assert_threads_and_fds("nothing left by failed starts", |now| now == baseline);
}
