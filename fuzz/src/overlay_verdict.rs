//! The `overlay_verdict` fuzz target: what every data plane does with each
//! frame: the verdict, then the plan of actions the engines carry out; and
//! the same packets from peers decided in batches (`FromPeerBatch`, as the
//! engines do) give the same verdicts and tables.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weave_agent::mac::Mac;
use weave_agent::overlay::mac_table::MacTable;
use weave_agent::overlay::macs::Macs;
use weave_agent::overlay::plan::{self, Action, Verdict};
use weave_agent::overlay::routes::Routes;
use weave_agent::overlay::seal;
use weave_agent::overlay::verdict::{self, FromBridge, FromPeer};
use weave_agent::overlay::vxlan::{self, ETHERNET_HEADER_LEN};
use weave_agent::overlay::{ForwardingTable, NeighbourKeys, ShortId};

use super::Bytes;
use super::sealed_open::fuzz_data_key;
use super::vxlan_parse::{ethernet, vxlan_packet};

/// Peer ids the input picks from: a few peers, the edges of the id space,
/// and the broadcast id, so that tables and packets name the same peers.
const IDS: [ShortId; 8] = [
    ShortId(0x101),
    ShortId(0x102),
    ShortId(0x103),
    ShortId(0x104),
    ShortId(0x105),
    ShortId(0x000),
    ShortId(0xffe),
    ShortId::BROADCAST,
];

/// MACs the input picks from: unicast ones, broadcast, multicast.
const MACS: [[u8; 6]; 8] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [2, 0, 0, 0, 0, 3],
    [2, 0, 0, 0, 0, 4],
    [2, 0, 0, 0, 0, 5],
    [0x0a, 0, 0, 0, 0, 6],
    [0xff; 6],
    [0x01, 0, 0x5e, 0, 0, 1],
];

/// Underlay addresses the input picks from; the IPv4-mapped one is a
/// neighbour's address the table may hold, never a (canonical) sender.
fn address(byte: u8) -> SocketAddr {
    const ADDRS: [&str; 8] = [
        "10.0.0.1:6784",
        "10.0.0.2:6784",
        "10.0.0.3:6784",
        "10.0.0.4:6784",
        "10.0.0.1:9999",
        "[fd00::5]:6784",
        "[::ffff:10.0.0.2]:6784",
        "192.0.2.9:6784",
    ];
    ADDRS[usize::from(byte) % ADDRS.len()].parse().unwrap()
}

fn id(byte: u8) -> ShortId {
    IDS[usize::from(byte) % IDS.len()]
}

/// The senders the receive path can see: canonical addresses or none.
fn sender(byte: u8) -> Option<SocketAddr> {
    match byte % 8 {
        6 => None,
        _ => Some(address(byte)),
    }
}

/// A frame built from the input: destination and source from [`MACS`], and
/// a length (at least an Ethernet header).
fn built_frame(input: &mut Bytes<'_>) -> Vec<u8> {
    let dst = MACS[usize::from(input.byte()) % MACS.len()];
    let src = MACS[usize::from(input.byte()) % MACS.len()];
    ethernet(dst, src, usize::from(input.byte()) * 8)
}

/// The operations of the verdict target, one byte each, then operands.
#[derive(Clone, Copy)]
enum Op {
    /// len, then len bytes: a frame from the bridge as it came.
    RawFromBridge,
    /// A frame from the bridge built from [`MACS`] (see [`built_frame`]).
    FromBridge,
    /// sender, len, then len bytes: a UDP payload as it came.
    RawFromPeer,
    /// sender, origin, destination, then a built frame, in VXLAN.
    FromPeer,
    /// n: n * 4 seconds pass (MAC entries live 300 s).
    Wait,
    /// The tables forget what expired.
    Expire,
}

impl Op {
    const ALL: [Self; 6] = [
        Self::RawFromBridge,
        Self::FromBridge,
        Self::RawFromPeer,
        Self::FromPeer,
        Self::Wait,
        Self::Expire,
    ];
}

/// Input: a forwarding table, table sizes, an MTU and whether the mesh
/// uses a password, then frames from the bridge and packets from peers (see
/// [`Op`] and [`VerdictScript`]). Every verdict is checked against the table
/// and the MAC tables: only well-formed frames within the MTU go anywhere,
/// unicast follows the table's next hop, relays never go back to the
/// sender, nothing is learnt from a dropped or relayed packet, a MAC is
/// never both local and behind a peer, and the MAC tables stay within their
/// capacity. Then every verdict's plan is checked (see [`check_plan`]).
pub fn overlay_verdict(data: &[u8]) {
    let mut input = Bytes::new(data);
    let mut table = ForwardingTable {
        me: id(input.byte()),
        ..ForwardingTable::default()
    };
    let max_frame = ETHERNET_HEADER_LEN + usize::from(input.byte()) * 8;
    let sizes = input.byte();
    let capacity = 1 + usize::from(sizes % 8);
    // Password mode, and whether the first neighbour has no keys yet.
    table.encrypted = sizes & VerdictScript::PASSWORD != 0;
    let first_unkeyed = sizes & VerdictScript::FIRST_UNKEYED != 0;
    for n in 0..input.byte() % 6 {
        let neighbour = id(input.byte());
        table.neighbours.insert(neighbour, address(input.byte()));
        if table.encrypted && !(n == 0 && first_unkeyed) {
            table.keys.insert(neighbour, fuzz_neighbour_keys());
        }
        // A third of the neighbours have a path that takes smaller frames
        // (from the id, so that the input's layout stays as it was).
        if neighbour.0.is_multiple_of(3) {
            let limit = ETHERNET_HEADER_LEN + usize::from(neighbour.0 % 64) * 8;
            table.frame_limit.insert(neighbour, limit);
        }
    }
    for _ in 0..input.byte() % 8 {
        table.next_hop.insert(id(input.byte()), id(input.byte()));
    }
    for _ in 0..input.byte() % 4 {
        let origin = id(input.byte());
        let children = (0..input.byte() % 4).map(|_| id(input.byte())).collect();
        table.broadcast.insert(origin, children);
    }
    let routes = Routes::compile(Arc::new(table));
    // As the xdp data plane keeps them: with the journal of remote changes,
    // never drained here, so its bound is exercised too.
    let tables = || {
        let mut macs = Macs::mirrored();
        macs.local = MacTable::new(capacity, Duration::from_mins(5));
        macs.remote = MacTable::new(capacity, Duration::from_mins(5));
        macs
    };
    let mut macs = tables();
    // The same input decided as the engines decide a batch, on tables of
    // its own: runs of packets from peers through one `FromPeerBatch`, a new
    // one after anything else (the other direction, time, expiry). Same
    // verdicts, same tables.
    let mut batched = tables();
    let mut batch = verdict::FromPeerBatch::default();
    let mut now = Instant::now();
    while !input.is_empty() {
        let mut from_peer = |from, payload: &[u8], macs: &mut Macs, batched: &mut Macs, now| {
            let want = check_from_peer(from, payload, max_frame, &routes, macs, now);
            let got = batch.from_peer(from, payload, max_frame, &routes, batched, now);
            assert_eq!(got, want, "a batch decided otherwise");
        };
        match Op::ALL[usize::from(input.byte()) % Op::ALL.len()] {
            Op::RawFromBridge => {
                let len = usize::from(input.byte());
                let frame = input.take(len).to_vec();
                check_from_bridge(&frame, max_frame, &routes, &mut macs, now);
                verdict::from_bridge(&frame, max_frame, &routes, &mut batched, now);
                batch = verdict::FromPeerBatch::default();
            }
            Op::FromBridge => {
                let frame = built_frame(&mut input);
                check_from_bridge(&frame, max_frame, &routes, &mut macs, now);
                verdict::from_bridge(&frame, max_frame, &routes, &mut batched, now);
                batch = verdict::FromPeerBatch::default();
            }
            Op::RawFromPeer => {
                let from = sender(input.byte());
                let len = usize::from(input.byte());
                let payload = input.take(len).to_vec();
                from_peer(from, &payload, &mut macs, &mut batched, now);
            }
            Op::FromPeer => {
                let from = sender(input.byte());
                let vni = ShortId::vni(id(input.byte()), id(input.byte()));
                let payload = vxlan_packet(vni, &built_frame(&mut input));
                from_peer(from, &payload, &mut macs, &mut batched, now);
            }
            Op::Wait => {
                now += Duration::from_secs(u64::from(input.byte()) * 4);
                batch = verdict::FromPeerBatch::default();
            }
            Op::Expire => {
                macs.expire(now);
                batched.expire(now);
                batch = verdict::FromPeerBatch::default();
            }
        }
        assert!(macs.local.len() <= capacity && macs.remote.len() <= capacity);
        assert_eq!(
            (macs.local.len(), macs.remote.len()),
            (batched.local.len(), batched.remote.len()),
            "a batch learnt otherwise"
        );
    }
}

fn mac_at(frame: &[u8], offset: usize) -> Mac {
    Mac(frame[offset..offset + 6].try_into().unwrap())
}

const fn is_group(mac: Mac) -> bool {
    mac.0[0] & 1 != 0
}

fn check_from_bridge(
    frame: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) {
    let sizes = (macs.local.len(), macs.remote.len());
    let verdict = verdict::from_bridge(frame, max_frame, routes, macs, now);
    check_plan(verdict.into(), frame.len(), None, routes);
    let well_formed = frame.len() >= ETHERNET_HEADER_LEN && !is_group(mac_at(frame, 6));
    if !well_formed || frame.len() > max_frame {
        assert!(
            matches!(verdict, FromBridge::Drop(_)),
            "{verdict:?} for a bad frame"
        );
        assert_eq!(
            (macs.local.len(), macs.remote.len()),
            sizes,
            "learnt from a bad frame"
        );
        return;
    }
    let (dst, src) = (mac_at(frame, 0), mac_at(frame, 6));
    assert_eq!(
        macs.local.lookup(&src, now),
        Some(()),
        "source not learnt as local"
    );
    assert_eq!(
        macs.remote.lookup(&src, now),
        None,
        "a local MAC is also behind a peer"
    );
    match verdict {
        FromBridge::Flood => assert!(
            is_group(dst)
                || (macs.local.lookup(&dst, now).is_none()
                    && macs.remote.lookup(&dst, now).is_none()),
            "flooded a frame for a known {dst}"
        ),
        FromBridge::Unicast { peer, hop, via } => {
            assert!(!is_group(dst));
            assert_eq!(macs.remote.lookup(&dst, now), Some(peer));
            assert_eq!(routes.next_hop(peer), Some((hop, via)));
        }
        FromBridge::Local => assert_eq!(macs.local.lookup(&dst, now), Some(())),
        FromBridge::Drop(reason) => {
            let peer = macs.remote.lookup(&dst, now);
            assert!(
                peer.is_some_and(|p| routes.next_hop(p).is_none()),
                "a good frame to {dst} dropped ({reason:?})"
            );
        }
    }
}

fn check_from_peer(
    from: Option<SocketAddr>,
    payload: &[u8],
    max_frame: usize,
    routes: &Routes,
    macs: &mut Macs,
    now: Instant,
) -> FromPeer {
    let sizes = (macs.local.len(), macs.remote.len());
    let not_learnt = macs.not_learnt;
    let verdict = verdict::from_peer(from, payload, max_frame, routes, macs, now);
    let neighbour = from.and_then(|a| routes.neighbour_at(&a));
    let inner_len = payload.len().saturating_sub(vxlan::HEADER_LEN);
    check_plan(verdict.into(), inner_len, neighbour, routes);
    let packet = vxlan::parse(payload);
    match verdict {
        FromPeer::Deliver {
            origin,
            sender,
            broadcast,
        } => {
            assert_eq!(Some(sender), neighbour, "delivered from a stranger");
            let packet = packet.expect("delivered a malformed packet");
            assert!(packet.frame.len() <= max_frame);
            let (o, dest) = ShortId::from_vni(packet.vni);
            assert_eq!(origin, o);
            assert_ne!(
                origin,
                routes.me(),
                "delivered a packet claiming to be ours"
            );
            assert!(
                routes.reaches(origin),
                "delivered from an unreachable origin"
            );
            assert_eq!(broadcast, dest == ShortId::BROADCAST);
            assert!(
                broadcast || dest == routes.me(),
                "delivered a packet for {dest}"
            );
            let src = mac_at(packet.frame, 6);
            assert!(!is_group(src));
            assert_eq!(
                macs.local.lookup(&src, now),
                None,
                "a peer claimed a local MAC"
            );
            // Learnt, unless the origin was over its learning allowance.
            assert!(
                macs.remote.lookup(&src, now) == Some(origin) || macs.not_learnt > not_learnt,
                "source of a delivered frame neither learnt nor counted"
            );
        }
        FromPeer::Relay {
            vni,
            sender: said,
            hop,
            via,
        } => {
            let sender = neighbour.expect("relayed for a stranger");
            assert_eq!(said, sender, "a relay names another sender");
            let packet = packet.expect("relayed a malformed packet");
            assert!(packet.frame.len() <= max_frame);
            assert_eq!(vni, packet.vni, "relayed under another VNI");
            let (origin, dest) = ShortId::from_vni(packet.vni);
            assert_ne!(origin, routes.me());
            assert!(dest != routes.me() && dest != ShortId::BROADCAST);
            assert_eq!(routes.next_hop(dest), Some((hop, via)));
            assert_ne!(hop, sender, "relayed back to the sender");
            assert_ne!(hop, origin, "relayed back to the origin");
            assert_eq!(
                (macs.local.len(), macs.remote.len()),
                sizes,
                "a relay learnt"
            );
        }
        FromPeer::Drop(_) => {
            assert_eq!(
                (macs.local.len(), macs.remote.len()),
                sizes,
                "learnt from a drop"
            );
        }
    }
    verdict
}

/// The keys every keyed neighbour of an `overlay_verdict` table has.
fn fuzz_neighbour_keys() -> NeighbourKeys {
    static KEYS: OnceLock<NeighbourKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        NeighbourKeys(Arc::new(seal::PeerKeys::new(
            &fuzz_data_key(),
            &fuzz_data_key(),
            weave_agent::overlay::DataCipher::ChaCha20Poly1305,
        )))
    })
    .clone()
}

/// The plan's invariants, for a frame of verdict `verdict` that came from
/// neighbour `sender` (`None`: from the bridge):
/// - in password mode nothing leaves in clear, and every seal is for a
///   neighbour with keys;
/// - every send goes to a neighbour at its address, never back to the
///   sender nor to the frame's origin;
/// - a broadcast is delivered once and reaches each child of the origin's
///   tree (other than sender and origin) exactly once;
/// - a unicast or relay is one send to the table's next hop, sealed again
///   for that hop in password mode (a relay keeps its VNI);
/// - a drop is one drop, a local frame nothing;
/// - a frame goes to a hop whose path takes less as too big, exactly when
///   it is longer than that path's limit.
fn check_plan(verdict: Verdict, len: usize, sender: Option<ShortId>, routes: &Routes) {
    let actions: Vec<Action> = plan::plan(verdict, len, routes).collect();
    let me = routes.me();
    let mut sends = Vec::new();
    for action in &actions {
        let (vni, hop, to) = match *action {
            Action::SendClear { vni, hop, to } => {
                assert!(
                    !routes.encrypted(),
                    "{verdict:?}: sent in clear in password mode"
                );
                (vni, hop, to)
            }
            Action::Seal { vni, hop, to } => {
                assert!(routes.encrypted(), "{verdict:?}: sealed without a password");
                assert!(
                    routes.keys(hop).is_some(),
                    "{verdict:?}: sealed for {hop} without keys"
                );
                (vni, hop, to)
            }
            Action::TooBig {
                vni,
                hop,
                to,
                limit,
            } => {
                assert_eq!(routes.frame_limit(hop), Some(limit));
                assert!(len > limit, "{verdict:?}: {len} bytes fit {limit}");
                assert!(
                    !routes.encrypted() || routes.keys(hop).is_some(),
                    "{verdict:?}: too big for {hop}, which has no keys"
                );
                (vni, hop, to)
            }
            Action::Deliver | Action::Drop(_) => continue,
        };
        if !matches!(action, Action::TooBig { .. }) {
            assert!(
                routes.frame_limit(hop).is_none_or(|limit| len <= limit),
                "{verdict:?}: {len} bytes sent whole to {hop}, whose path takes less"
            );
        }
        // To a neighbour, at a neighbour's address (a table may give two
        // neighbours one address; which of them the address names is moot).
        assert!(
            routes.table().neighbours.contains_key(&hop),
            "{verdict:?}: {hop} is not a neighbour"
        );
        assert!(
            routes.neighbour_at(&to).is_some(),
            "{verdict:?}: {to} is no neighbour's address"
        );
        assert_ne!(Some(hop), sender, "{verdict:?}: back to the sender");
        let (origin, _) = ShortId::from_vni(vni);
        assert_ne!(hop, origin, "{verdict:?}: back to the origin");
        assert_ne!(hop, me, "{verdict:?}: to ourselves");
        sends.push((vni, hop));
    }
    let delivers = actions.iter().filter(|a| **a == Action::Deliver).count();
    // A hop the plan cannot send to (ourselves, named by an inconsistent
    // table; no keys in password mode) is a counted drop.
    let unreachable =
        |hop: ShortId| hop == me || (routes.encrypted() && routes.keys(hop).is_none());
    let tree = |origin: ShortId, except: &[ShortId]| -> Vec<(u32, ShortId)> {
        let vni = ShortId::vni(origin, ShortId::BROADCAST);
        routes
            .children(origin)
            .iter()
            .map(|(child, _)| *child)
            .filter(|c| !except.contains(c) && !unreachable(*c))
            .map(|c| (vni, c))
            .collect()
    };
    let sorted = |mut v: Vec<(u32, ShortId)>| {
        v.sort();
        v
    };
    match verdict {
        Verdict::FromBridge(FromBridge::Flood) => {
            assert_eq!(delivers, 0);
            assert_eq!(
                sorted(sends),
                sorted(tree(me, &[me])),
                "flood must reach each child once"
            );
        }
        Verdict::FromPeer(FromPeer::Deliver {
            origin, broadcast, ..
        }) => {
            assert_eq!(
                actions.first(),
                Some(&Action::Deliver),
                "{verdict:?}: deliver first"
            );
            assert_eq!(delivers, 1);
            let expected = if broadcast {
                tree(origin, &[origin, sender.unwrap_or(origin)])
            } else {
                Vec::new()
            };
            assert_eq!(
                sorted(sends),
                sorted(expected),
                "{verdict:?}: broadcast passed on wrongly"
            );
        }
        Verdict::FromBridge(FromBridge::Unicast { peer, hop, .. }) => {
            assert_eq!(delivers, 0);
            let expected = if unreachable(hop) {
                vec![]
            } else {
                vec![(ShortId::vni(me, peer), hop)]
            };
            assert_eq!(sends, expected, "{verdict:?}: unicast");
            assert_eq!(actions.len(), 1);
        }
        Verdict::FromPeer(FromPeer::Relay { vni, hop, .. }) => {
            assert_eq!(delivers, 0);
            let expected = if unreachable(hop) {
                vec![]
            } else {
                vec![(vni, hop)]
            };
            assert_eq!(sends, expected, "{verdict:?}: relay");
            assert_eq!(actions.len(), 1);
            // Too big for its hop's path, it goes on as fragments, each
            // sealed on its own (`SealSlots::send_too_big`).
            if routes.encrypted() && !sends.is_empty() {
                assert!(
                    matches!(actions[0], Action::Seal { .. } | Action::TooBig { .. }),
                    "a relay not sealed again for its hop"
                );
            }
        }
        Verdict::FromBridge(FromBridge::Local) => assert!(actions.is_empty()),
        Verdict::FromBridge(FromBridge::Drop(r)) | Verdict::FromPeer(FromPeer::Drop(r)) => {
            assert_eq!(actions, vec![Action::Drop(r)]);
        }
    }
}

/// Writes inputs for [`overlay_verdict`]: the seeds, and any test that wants
/// a readable script rather than bytes.
pub struct VerdictScript(Vec<u8>);

impl VerdictScript {
    /// Bits of the table-size byte: the mesh uses a password…
    const PASSWORD: u8 = 0x80;
    /// …and its first neighbour has no keys yet.
    const FIRST_UNKEYED: u8 = 0x40;

    /// Password mode, every neighbour keyed but the first when `first_unkeyed`.
    pub fn with_password(mut self, first_unkeyed: bool) -> Self {
        self.0[2] |= Self::PASSWORD;
        if first_unkeyed {
            self.0[2] |= Self::FIRST_UNKEYED;
        }
        self
    }

    fn pick<T: PartialEq>(pool: &[T], item: &T) -> u8 {
        pool.iter().position(|x| x == item).expect("in the pool") as u8
    }

    /// `neighbours` by index into the address pool.
    pub fn new(
        me: ShortId,
        mtu_units: u8,
        capacity: u8,
        neighbours: &[(ShortId, u8)],
        next_hop: &[(ShortId, ShortId)],
        broadcast: &[(ShortId, &[ShortId])],
    ) -> Self {
        let mut b = vec![Self::pick(&IDS, &me), mtu_units, capacity - 1];
        b.push(neighbours.len() as u8);
        for (id, addr) in neighbours {
            b.extend([Self::pick(&IDS, id), *addr]);
        }
        b.push(next_hop.len() as u8);
        for (dest, via) in next_hop {
            b.extend([Self::pick(&IDS, dest), Self::pick(&IDS, via)]);
        }
        b.push(broadcast.len() as u8);
        for (origin, children) in broadcast {
            b.extend([Self::pick(&IDS, origin), children.len() as u8]);
            b.extend(children.iter().map(|c| Self::pick(&IDS, c)));
        }
        Self(b)
    }

    fn op(mut self, op: Op, operands: &[u8]) -> Self {
        self.0.push(op as u8);
        self.0.extend_from_slice(operands);
        self
    }

    const fn frame(dst: usize, src: usize, len: usize) -> [u8; 3] {
        [dst as u8, src as u8, (len / 8) as u8]
    }

    pub fn bridge_frame(self, dst: usize, src: usize, len: usize) -> Self {
        self.op(Op::FromBridge, &Self::frame(dst, src, len))
    }

    pub fn peer_packet(
        self,
        sender: u8,
        origin: ShortId,
        dest: ShortId,
        dst: usize,
        src: usize,
    ) -> Self {
        let mut operands = vec![sender, Self::pick(&IDS, &origin), Self::pick(&IDS, &dest)];
        operands.extend(Self::frame(dst, src, 60));
        self.op(Op::FromPeer, &operands)
    }

    pub fn raw_peer_payload(self, sender: u8, payload: &[u8]) -> Self {
        let mut operands = vec![sender, payload.len() as u8];
        operands.extend_from_slice(payload);
        self.op(Op::RawFromPeer, &operands)
    }

    pub fn raw_bridge_frame(self, frame: &[u8]) -> Self {
        let mut operands = vec![frame.len() as u8];
        operands.extend_from_slice(frame);
        self.op(Op::RawFromBridge, &operands)
    }

    pub fn wait(self, seconds: u64) -> Self {
        self.op(Op::Wait, &[(seconds / 4) as u8])
    }

    pub fn expire(self) -> Self {
        self.op(Op::Expire, &[])
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) fn verdict_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let [a, b, c, ..] = IDS;
    // Peers in a line A - B - C, seen from B; addresses 0 and 2 are A's and C's.
    let line = || {
        VerdictScript::new(
            b,
            181, // 14 + 1448 bytes
            8,
            &[(a, 0), (c, 2)],
            &[(a, a), (c, c)],
            &[(a, &[c]), (b, &[a, c]), (c, &[a])],
        )
    };
    let (local, at_a, at_c, bcast) = (1, 0, 2, 6);
    let garbage = b"\x00garbage on the data port".to_vec();
    let mut truncated = vxlan_packet(ShortId::vni(a, b), &ethernet(MACS[local], MACS[at_a], 60));
    truncated.truncate(20);
    vec![
        (
            "learn-then-unicast",
            line()
                .bridge_frame(bcast, local, 60)
                .peer_packet(0, a, b, local, at_a)
                .bridge_frame(at_a, local, 98)
                .into_bytes(),
        ),
        (
            "broadcast-and-relay",
            line()
                .peer_packet(0, a, ShortId::BROADCAST, bcast, at_a)
                .peer_packet(0, a, c, at_c, at_a)
                .peer_packet(2, a, c, at_c, at_a)
                .into_bytes(),
        ),
        (
            "spoofing",
            line()
                .bridge_frame(bcast, local, 60)
                .peer_packet(0, a, ShortId::BROADCAST, bcast, local)
                .peer_packet(0, b, ShortId::BROADCAST, bcast, at_a)
                .into_bytes(),
        ),
        (
            "expiry-then-local",
            line()
                .peer_packet(0, a, b, local, at_a)
                .wait(304)
                .expire()
                .bridge_frame(bcast, at_a, 60)
                .peer_packet(2, c, b, local, at_a)
                .into_bytes(),
        ),
        (
            "malformed",
            line()
                .raw_peer_payload(0, &garbage)
                .raw_peer_payload(0, &truncated)
                .raw_peer_payload(7, &vxlan_packet(0, &ethernet(MACS[local], MACS[at_a], 60)))
                .raw_bridge_frame(&[0xff; 13])
                .bridge_frame(local, bcast, 60)
                .bridge_frame(at_a, local, 2000)
                .into_bytes(),
        ),
        (
            "password-broadcast-and-relay",
            line()
                .with_password(false)
                .bridge_frame(bcast, local, 60)
                .peer_packet(0, a, ShortId::BROADCAST, bcast, at_a)
                .peer_packet(0, a, c, at_c, at_a)
                .peer_packet(0, a, b, local, at_a)
                .bridge_frame(at_a, local, 98)
                .into_bytes(),
        ),
        (
            "password-a-neighbour-without-keys",
            line()
                .with_password(true)
                .bridge_frame(bcast, local, 60)
                .peer_packet(2, c, ShortId::BROADCAST, bcast, at_c)
                .peer_packet(2, c, a, at_a, at_c)
                .into_bytes(),
        ),
        (
            "small-tables",
            VerdictScript::new(b, 181, 2, &[(a, 0)], &[(a, a), (c, a)], &[])
                .bridge_frame(bcast, 1, 60)
                .bridge_frame(bcast, 2, 60)
                .bridge_frame(bcast, 3, 60)
                .peer_packet(0, a, b, 1, 4)
                .peer_packet(0, c, b, 1, 0)
                .into_bytes(),
        ),
    ]
}
