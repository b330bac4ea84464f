//! Password mode (issue 6) on three simulated hosts: with a password, the
//! containers talk (ping, TCP carrying a known marker, directly and through
//! a relay) while a capture of the simulated LAN holds neither the marker,
//! nor the containers' addresses inside VXLAN, nor any gossip in clear; a
//! peer with another password, or none, never joins, gets no frame through
//! even when it sends VXLAN at the others directly, and both sides say why
//! in `weave status connections`.
//!
//! Each test builds its own hosts (`wvt<pid>-<test>-h1..h3` on a LAN of
//! their own) and removes them, also when it fails. Every wait polls a
//! condition against a deadline; no timing is asserted. Agents run on the
//! data plane `WEAVE_TEST_DATAPLANE` names unless a test picks one:
//! `cargo xtask test` runs the suite on plain, xdp and fastdp (whose
//! programs stay idle with a password: the xdp engine seals every frame).
//!
//! Also (issue 6, item 2): only root talks to the control socket, even if
//! its mode were opened up.
//!
//! Needs root, dockerd, nftables, tcpdump, setpriv and the `weave` binary (`WEAVE_BIN`).

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use weave_agent::mesh::{ConnectionState, ConnectionStatus, MeshStatus};
use weave_agent::overlay::DataCipher;
use weave_tests::convergence::CONVERGE;
use weave_tests::traffic::assert_tcp_stream_of;
use weave_tests::{Cluster, Host, test_dataplane, wait_until, weave_bin};

const PASSWORD: &str = "correct horse battery staple";
const WRONG_PASSWORD: &str = "incorrect horse";
/// Sent between containers; must never be seen on the LAN.
const MARKER: &str = "WEAVE-RS-MARKER-7c1f9e0b";
/// 1500 less VXLAN's 50, less the 24 bytes of counter and tag.
const ENCRYPTED_MTU: u32 = 1426;
const DATA_PORT: u16 = 6784;

/// Waits until `h` has a connection (or destination) that `wanted` accepts
/// (`what` describes it); returns it.
#[track_caller]
fn wait_connection(
    h: &Host,
    what: &str,
    wanted: impl Fn(&MeshStatus, &ConnectionStatus) -> bool,
) -> ConnectionStatus {
    h.wait_status(what, CONVERGE, |s| {
        s.mesh
            .connections
            .iter()
            .find(|c| wanted(&s.mesh, c))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("connections:\n{}", s.mesh.render_connections()))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `c` is with the host at `ip` (a dialled target may show without a port).
fn at(c: &ConnectionStatus, ip: &str) -> bool {
    c.address == ip || c.address.starts_with(&format!("{ip}:"))
}

/// `c` failed for a reason containing `why`.
fn failed_with(c: &ConnectionStatus, why: &str) -> bool {
    c.last_error.as_deref().is_some_and(|e| e.contains(why))
}

/// Waits until `h` shows a connection with `ip` (`outbound`, or inbound:
/// refused in its handshake) that failed for a reason containing `why`.
#[track_caller]
fn wait_failed(h: &Host, outbound: bool, ip: &str, why: &str) -> ConnectionStatus {
    let direction = if outbound { "to" } else { "from" };
    let what = format!("a connection {direction} {ip} failed: {why}");
    wait_connection(h, &what, |_, c| {
        c.outbound == outbound
            && at(c, ip)
            && (outbound || c.state == ConnectionState::Failed)
            && failed_with(c, why)
    })
}

/// `c` is established with `nickname`, encrypted, on data plane `dataplane`.
fn encrypted_with(
    mesh: &MeshStatus,
    c: &ConnectionStatus,
    nickname: &str,
    dataplane: &str,
) -> bool {
    c.state == ConnectionState::Established
        && c.encrypted
        && c.nickname.as_deref() == Some(nickname)
        && mesh.dataplane == dataplane
        && c.dataplane == dataplane
}

/// What `--cipher auto` agrees on between two agents on this machine:
/// AES-256-GCM where the CPU has the instructions (read independently of
/// the agent, from /proc/cpuinfo), else ChaCha20-Poly1305.
fn auto_cipher() -> DataCipher {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("reading /proc/cpuinfo");
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    if has("aes") && (has("pclmulqdq") || has("pmull")) {
        DataCipher::Aes256Gcm
    } else {
        eprintln!("NOTE: this CPU has no AES instructions: expecting ChaCha20-Poly1305 throughout");
        DataCipher::ChaCha20Poly1305
    }
}

/// Sends `lines` lines carrying [`MARKER`] from `src` to `dst` (at
/// `dst_addr`) over TCP, and checks they all arrived.
#[track_caller]
fn send_marker(src: (&Host, &str), dst: (&Host, &str), dst_addr: &str, port: u16) {
    let ((sh, sc), (dh, dc)) = (src, dst);
    let file = format!("/tmp/marker-{port}");
    weave_tests::traffic::listen(dh, dc, port, &file);
    let send = format!(
        "i=0; while [ $i -lt 500 ]; do echo \"{MARKER} $i\"; i=$((i+1)); done | nc {dst_addr} {port}"
    );
    let sent = sh.exec_within(sc, &["sh", "-c", &send], Duration::from_mins(1));
    assert!(sent.success(), "sending the marker:\n{sent}");
    let got = wait_until(
        &format!("{dc} to receive 500 marker lines"),
        Duration::from_secs(30),
        || {
            let text = dh.exec(dc, &["cat", &file]).stdout;
            (text.matches(MARKER).count() == 500).then_some(text)
        },
    )
    .unwrap_or_else(|e| panic!("the marker must arrive intact: {e:#}"));
    assert!(got.ends_with(&format!("{MARKER} 499\n")));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Nothing of the password in the agent's command line (readable by every
/// user), its log or its status.
#[track_caller]
fn assert_password_hidden(h: &Host, password: &str) {
    let pid = h.agent_pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !contains(&cmdline, password.as_bytes()),
        "{}: the password is on the agent's command line: {:?}",
        h.nickname(),
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        !h.agent_log().contains(password),
        "{}: the password is in the log",
        h.nickname()
    );
    // The JSON holds every field any `weave status` section prints.
    assert!(
        !h.weave_ok(&["status", "--json"]).contains(password),
        "{}: the password is in the status",
        h.nickname()
    );
}

#[test]
fn with_a_password_containers_talk_and_the_lan_sees_nothing_in_clear() {
    let c = Cluster::new("enc", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    // h1 and h3 only talk through h2: relays open and seal again.
    c.block(h1, h3);

    // Everything on h2's LAN port from the start: the hellos (in clear, by
    // design), the handshakes, then direct traffic with h1 and h3 and the
    // frames h2 relays between them.
    let mut capture = c.lan().capture(h2.lan_port(), &[]).unwrap();
    // The three ways to give the password.
    h1.launch_env(&["--password", PASSWORD], &[]);
    h2.launch_env(&[&h1.lan_addr()], &[("WEAVE_PASSWORD", PASSWORD)]);
    let file = h3.dir().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    // h3 never offers AES-256-GCM: h2 seals for it with ChaCha20-Poly1305,
    // so the frames h2 relays between h1 and h3 change cipher on the way.
    h3.launch_env(
        &[
            "--password-file",
            file.to_str().unwrap(),
            "--cipher",
            "chacha20-poly1305",
            &h2.lan_addr(),
        ],
        &[],
    );
    h2.wait_established(&["h1", "h3"], CONVERGE);
    h1.wait_established(&["h2"], CONVERGE);
    h3.wait_established(&["h2"], CONVERGE);

    for h in [h1, h2, h3] {
        let status = h.status();
        assert!(status.encryption, "{}: encryption enabled", h.nickname());
        assert_eq!(status.mtu, ENCRYPTED_MTU, "{}", h.nickname());
        // (h1 and h3 also keep trying each other over the blocked path.)
        let established: Vec<_> = status
            .mesh
            .connections
            .iter()
            .filter(|c| c.state == ConnectionState::Established)
            .collect();
        assert!(!established.is_empty());
        for conn in established {
            assert!(
                conn.encrypted,
                "{}: every connection is encrypted: {conn:?}",
                h.nickname(),
            );
            let with_h3 = h.nickname() == "h3" || conn.nickname.as_deref() == Some("h3");
            let expected = if with_h3 {
                DataCipher::ChaCha20Poly1305
            } else {
                auto_cipher()
            };
            assert_eq!(
                conn.cipher,
                Some(expected),
                "{}: the cipher of {conn:?}",
                h.nickname()
            );
        }
        assert_password_hidden(h, PASSWORD);
    }

    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    let d = h3.run_container("10.0.1.3/24", "dd");
    assert_eq!(h1.ethwe_mtu(&a), ENCRYPTED_MTU);

    h1.assert_ping(&a, "10.0.1.2");
    h1.assert_ping(&a, "10.0.1.3");
    // The largest ping the MTU allows crosses whole: the overhead is accounted for.
    let max = (ENCRYPTED_MTU - 28).to_string();
    let big = h1.exec(&a, &["ping", "-c", "3", "-W", "2", "-s", &max, "10.0.1.2"]);
    assert!(
        big.success() && big.stdout.contains(" 0% packet loss"),
        "{big}"
    );
    send_marker((h1, &a), (h2, &b), "10.0.1.2", 5001);
    send_marker((h1, &a), (h3, &d), "10.0.1.3", 5002);
    send_marker((h3, &d), (h2, &b), "10.0.1.2", 5003);
    // A sealed TCP stream, checked end to end (SHA-1). On the xdp engine
    // (xdp, and fastdp, idle with a password) the container's super-frames
    // reach h1's agent whole and are cut there, then each segment sealed.
    let segmented_before = h1.status().overlay_stats.frames_segmented;
    assert_tcp_stream_of(20, (h1, &a), (h2, &b), "10.0.1.2", 5004);
    let segmented = h1.status().overlay_stats.frames_segmented - segmented_before;
    if test_dataplane() == "plain" {
        assert_eq!(segmented, 0, "the plain data plane cuts nothing");
    } else {
        assert!(segmented > 0, "no TCP super-frame reached h1's agent whole");
    }
    assert!(
        h2.status().overlay_stats.frames_relayed > 0,
        "h2 relayed between h1 and h3"
    );

    let port = DATA_PORT.to_string();
    let decoded = capture
        .wait_decoded(
            &["-t", "-T", "vxlan", "udp", "port", &port],
            Duration::from_secs(20),
            |d| d.lines().count() >= 100,
        )
        .unwrap_or_else(|e| panic!("the containers' traffic crosses the data port: {e:#}"));
    let control = capture
        .wait_decoded(
            &["-t", "tcp", "port", "6783", "and", "greater", "80"],
            Duration::from_secs(20),
            |d| d.lines().count() >= 2,
        )
        .unwrap_or_else(|e| panic!("the control connections carry messages: {e:#}"));
    capture.stop().unwrap();
    assert!(!control.is_empty());
    let raw = std::fs::read(capture.file()).unwrap();
    assert!(
        !contains(&raw, MARKER.as_bytes()),
        "the marker sent between containers is in the LAN capture in clear"
    );
    // Decoded as VXLAN, the inner frames are noise: no container address.
    assert!(
        !decoded.contains("10.0.1."),
        "container frames readable inside VXLAN:\n{}",
        decoded.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // The search works: the hellos, sent in clear, are found.
    assert!(
        contains(&raw, b"\"type\":\"hello\""),
        "the capture holds the connections' hellos"
    );
    for clear in [&b"\"gossip\""[..], b"\"heartbeat\"", b"\"peers\""] {
        assert!(
            !contains(&raw, clear),
            "control messages in clear on the LAN: {}",
            String::from_utf8_lossy(clear)
        );
    }
    for h in [h1, h2, h3] {
        let dropped = h.status().overlay_stats.dropped_unauthenticated;
        assert_eq!(dropped, 0, "{}", h.nickname());
    }
}

/// The two data planes seal in the same wire format: an `AF_XDP` peer and a
/// plain one talk in password mode, and the LAN still sees nothing in clear.
#[test]
fn an_xdp_peer_and_a_plain_peer_talk_encrypted() {
    let c = Cluster::new("encmix", 2);
    let (h1, h2) = (&c[0], &c[1]);
    let mut capture = c.lan().capture(h2.lan_port(), &[]).unwrap();
    let password = [("WEAVE_PASSWORD", PASSWORD)];
    h1.launch_env(&["--dataplane", "xdp"], &password);
    h2.launch_env(&["--dataplane", "plain", &h1.lan_addr()], &password);
    h1.wait_established(&["h2"], CONVERGE);
    h2.wait_established(&["h1"], CONVERGE);
    wait_connection(h1, "an encrypted xdp connection with h2", |m, c| {
        encrypted_with(m, c, "h2", "xdp")
    });
    wait_connection(h2, "an encrypted plain connection with h1", |m, c| {
        encrypted_with(m, c, "h1", "plain")
    });

    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    h1.assert_ping(&a, "10.0.1.2");
    h2.assert_ping(&b, "10.0.1.1");
    let max = (ENCRYPTED_MTU - 28).to_string();
    let big = h2.exec(&b, &["ping", "-c", "3", "-W", "2", "-s", &max, "10.0.1.1"]);
    assert!(
        big.success() && big.stdout.contains(" 0% packet loss"),
        "{big}"
    );
    send_marker((h1, &a), (h2, &b), "10.0.1.2", 5011);
    send_marker((h2, &b), (h1, &a), "10.0.1.1", 5012);

    let port = DATA_PORT.to_string();
    capture
        .wait_decoded(
            &["-t", "-T", "vxlan", "udp", "port", &port],
            Duration::from_secs(20),
            |d| d.lines().count() >= 20,
        )
        .unwrap_or_else(|e| panic!("the containers' traffic crosses the data port: {e:#}"));
    capture.stop().unwrap();
    let raw = std::fs::read(capture.file()).unwrap();
    assert!(
        !contains(&raw, MARKER.as_bytes()),
        "the marker sent between containers is in the LAN capture in clear"
    );
    for h in [h1, h2] {
        let stats = h.status().overlay_stats;
        assert_eq!(stats.dropped_unauthenticated, 0, "{}", h.nickname());
        assert!(stats.frames_received > 0, "{}", h.nickname());
    }
}

#[test]
fn a_peer_with_another_password_or_none_never_joins_nor_gets_a_frame_through() {
    let c = Cluster::new("encbad", 3);
    let (h1, h2, h3) = (&c[0], &c[1], &c[2]);
    let env = [("WEAVE_PASSWORD", PASSWORD)];
    h1.launch_env(&[], &env);
    h2.launch_env(&[&h1.lan_addr()], &env);
    // h3 dials both, with another password.
    h3.launch_env(
        &[&h1.lan_addr(), &h2.lan_addr()],
        &[("WEAVE_PASSWORD", WRONG_PASSWORD)],
    );
    h1.wait_established(&["h2"], CONVERGE);
    h2.wait_established(&["h1"], CONVERGE);

    // Both sides say why: h3 about its attempts, h1 and h2 about h3's.
    let h3_ip = h3.lan_addr();
    let differ = "authentication failed (the passwords differ)";
    for (h, outbound, ip, why) in [
        (h3, true, h1.lan_addr(), differ),
        (h3, true, h2.lan_addr(), differ),
        (h1, false, h3_ip.clone(), "authentication failed"),
        (h2, false, h3_ip.clone(), "authentication failed"),
    ] {
        let conn = wait_failed(h, outbound, &ip, why);
        eprintln!("{}: {conn:?}", h.nickname());
    }
    assert!(h3.connected_to().unwrap().is_empty());
    assert_eq!(h1.status().mesh.peers.len(), 2, "h3 is not a peer of h1");

    let a = h1.run_container("10.0.1.1/24", "aa");
    let b = h2.run_container("10.0.1.2/24", "bb");
    let x = h3.run_container("10.0.1.3/24", "xx");
    h1.assert_ping(&a, "10.0.1.2");
    h3.assert_no_ping(&x, "10.0.1.1");

    // h3 sends VXLAN at h1's data port directly: an ARP request for a, and
    // the same with room for a counter and tag, from a MAC nobody knows.
    let mut seen_by_a = h1
        .capture_in_container(&a, &["-e", "arp", "or", "icmp"])
        .unwrap();
    let unknown_before = h1.status().overlay_stats.dropped_unknown_sender;
    let h1_data = SocketAddrV4::new(h1.lan_ip(), DATA_PORT);
    h3.netns()
        .run_inside(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[0x02, 0xde, 0xad, 0xbe, 0xef, 0x03, 0x08, 0x06]);
            frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
            frame.extend_from_slice(&[0x02, 0xde, 0xad, 0xbe, 0xef, 0x03, 10, 0, 1, 3]);
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&[10, 0, 1, 1]);
            for vni in [0xfffu32, 0x123_fff, 0xabc_def] {
                let mut plain = vec![0x08, 0, 0, 0];
                plain.extend_from_slice(&(vni << 8).to_be_bytes());
                let mut sealed_looking = plain.clone();
                plain.extend_from_slice(&frame);
                sealed_looking.extend_from_slice(&[0; 8]);
                sealed_looking.extend_from_slice(&frame);
                sealed_looking.extend_from_slice(&[0; 16]);
                for _ in 0..20 {
                    s.send_to(&plain, h1_data).unwrap();
                    s.send_to(&sealed_looking, h1_data).unwrap();
                }
            }
        })
        .unwrap();
    wait_until(
        "h1 to count h3's frames as dropped",
        Duration::from_secs(20),
        || {
            let dropped = h1.status().overlay_stats.dropped_unknown_sender;
            (dropped >= unknown_before + 120).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    h2.assert_ping(&b, "10.0.1.1");
    let seen = seen_by_a
        .wait_decoded(&["-t", "-e"], Duration::from_secs(20), |d| {
            d.contains("10.0.1.2 > 10.0.1.1: ICMP echo request")
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    seen_by_a.stop().unwrap();
    assert!(
        !seen.contains("02:de:ad:be:ef:03") && !seen.contains("10.0.1.3"),
        "frames from the peer with the wrong password reached a container:\n{seen}"
    );

    // h3 again without a password: refused both ways, each side saying which lacks one.
    h3.weave_ok(&["stop"]);
    h3.launch_env(&[&h1.lan_addr(), &h2.lan_addr()], &[]);
    assert!(!h3.status().encryption, "h3 runs without a password");
    let peer_has = "encryption mismatch: the peer has a password, we have none";
    let we_have = "encryption mismatch: we have a password, the peer has none";
    let h1_ip = h1.lan_addr();
    wait_failed(h3, true, &h1_ip, peer_has);
    wait_failed(h1, false, &h3_ip, we_have);
    // And when a password peer dials the one without.
    h1.weave_ok(&["connect", &h3.lan_addr()]);
    wait_failed(h1, true, &h3_ip, we_have);
    wait_failed(h3, false, &h1_ip, peer_has);
    assert!(h3.connected_to().unwrap().is_empty());
    h1.wait_established(&["h2"], CONVERGE);
    h3.assert_no_ping(&x, "10.0.1.1");
}

#[test]
fn only_root_talks_to_the_control_socket() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let c = Cluster::new("sock", 1);
    let h = &c[0];
    h.launch_env(&[], &[]);
    let socket = h.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "the control socket is rw for root only"
    );
    assert_eq!(meta.uid(), 0);

    // Opened up by mistake (mode 0666, its directory searchable), the
    // socket still serves nobody but root: the agent checks who connects.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let dir_mode = std::fs::metadata(h.dir()).unwrap().mode();
    std::fs::set_permissions(h.dir(), std::fs::Permissions::from_mode(dir_mode | 0o005)).unwrap();
    let mut as_nobody = std::process::Command::new("setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(weave_bin().unwrap())
        .arg("status")
        .env("WEAVE_SOCKET", &socket)
        .env("WEAVE_STATE_DIR", h.state_dir());
    let out = weave_tests::run(&mut as_nobody, Duration::from_secs(30)).unwrap();
    std::fs::set_permissions(h.dir(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!out.success(), "a non-root user got an answer:\n{out}");
    wait_until(
        "the agent to log the refusal",
        Duration::from_secs(10),
        || {
            h.agent_log()
                .contains("refused a connection from a non-root user")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("the agent itself must refuse the non-root caller: {e:#}\n{out}"));
    h.status();
}
