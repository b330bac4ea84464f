//! The `gossip_merge` fuzz target: topology entries from peers.

use std::net::SocketAddr;
use std::sync::OnceLock;

use super::mesh_frames::{check_message, encode};
use super::mesh_handshake::name;
use weave_agent::mac::Mac;
use weave_agent::mesh::protocol::{self, Message};
use weave_agent::mesh::topology::{
    ConnectionSummary, MAX_CONNECTIONS_PER_PEER, MAX_PEERS, PeerInfo, Topology, TopologyUpdate,
};
use weave_agent::overlay::ShortId;
use weave_agent::peer_name::PeerName;

fn entry(i: u8, version: u64, uid: u64, links: &[u8]) -> PeerInfo {
    let mut e = PeerInfo::new(name(i), format!("host{i}"), uid, version);
    e.connections = links
        .iter()
        .map(|&j| ConnectionSummary {
            peer: name(j),
            address: SocketAddr::from(([10, 0, 0, j], protocol::DEFAULT_PORT)),
            outbound: i < j,
            established: true,
        })
        .collect();
    e
}

pub(crate) fn small_update() -> TopologyUpdate {
    TopologyUpdate {
        peers: vec![entry(2, 5, 2, &[1, 3]), entry(3, 7, 3, &[2])],
    }
}

/// Peer 1's view of a small mesh: peers 1, 2, 3.
fn small_topology() -> &'static Topology {
    static SMALL: OnceLock<Topology> = OnceLock::new();
    SMALL.get_or_init(|| {
        let mut t = Topology::new(entry(1, 1000, 1, &[2]));
        t.merge(&small_update());
        t
    })
}

/// A topology one peer short of full, so that a new peer fits and the next
/// one does not.
fn nearly_full_topology() -> &'static Topology {
    static FULL: OnceLock<Topology> = OnceLock::new();
    FULL.get_or_init(|| {
        let mut t = small_topology().clone();
        let fill = (0..MAX_PEERS - 1 - t.len())
            .map(|i| {
                let name = PeerName(Mac([2, 9, 0, 0, (i >> 8) as u8, i as u8]));
                PeerInfo::new(name, String::new(), 1, 1)
            })
            .collect();
        t.merge(&TopologyUpdate { peers: fill });
        assert_eq!(t.len(), MAX_PEERS - 1);
        t
    })
}

/// Input: a frame body. A gossip message merged into a small and a nearly
/// full topology keeps the topology within its caps and valid, never lets
/// an entry win over ours, keeps per peer the greatest entry seen, and
/// merging the same message again changes nothing and reports nothing.
pub fn gossip_merge(data: &[u8]) {
    let Some(Message::Gossip(update)) = check_message(data) else {
        return;
    };
    check_merge(small_topology(), &update);
    if !update.peers.is_empty() {
        check_merge(nearly_full_topology(), &update);
    }
}

fn check_merge(start: &Topology, update: &TopologyUpdate) {
    let mut t = start.clone();
    let outcome = t.merge(update);

    assert!(t.len() <= MAX_PEERS, "{} peers", t.len());
    assert_eq!(t.me(), start.me());
    let (ours, before) = (t.ours(), start.ours());
    assert_eq!(
        (
            &ours.name,
            &ours.nickname,
            ours.uid,
            ours.short_id,
            &ours.connections
        ),
        (
            &before.name,
            &before.nickname,
            before.uid,
            before.short_id,
            &before.connections
        ),
        "another peer changed our entry"
    );
    assert!(ours.version >= before.version);
    for peer in t.peers().filter(|p| p.name != t.me()) {
        peer.validate()
            .unwrap_or_else(|e| panic!("kept an invalid entry for {}: {e}", peer.name));
        assert!(peer.connections.len() <= MAX_CONNECTIONS_PER_PEER);
    }
    for old in start.peers() {
        let new = t
            .get(&old.name)
            .unwrap_or_else(|| panic!("{} was dropped", old.name));
        assert!(new == old || new.supersedes(old), "{} went back", old.name);
    }
    for name in &outcome.changed {
        assert!(t.get(name).is_some(), "{name} changed but is not there");
    }
    for e in &update.peers {
        if e.name == t.me() {
            // An invalid entry is rejected by every peer, so nobody believes
            // it; a valid one must never win over ours.
            let rejected = outcome.rejected.iter().any(|(n, _)| *n == e.name);
            assert!(
                e.validate().is_ok() || rejected,
                "an invalid entry with our name was not rejected"
            );
            assert!(
                e.validate().is_err() || !e.supersedes(t.ours()),
                "an entry with our name (version {}, uid {}) wins over ours (version {}, uid {}): \
                 our peers will believe it",
                e.version,
                e.uid,
                t.ours().version,
                t.ours().uid
            );
            continue;
        }
        let rejected = outcome.rejected.iter().any(|(n, _)| *n == e.name);
        match t.get(&e.name) {
            // Invalid entries are rejected, whatever their version.
            _ if e.validate().is_err() => assert!(rejected, "{} invalid, not rejected", e.name),
            Some(kept) => assert!(!e.supersedes(kept), "{} kept an older entry", e.name),
            None => assert!(rejected, "{} neither merged nor rejected", e.name),
        }
    }

    let merged = t.clone();
    let again = t.merge(update);
    assert_eq!(
        t, merged,
        "merging the same update twice changed the topology"
    );
    assert!(
        !again.is_changed(),
        "merging the same update twice reported changes to {:?}",
        again.changed
    );
}

pub(crate) fn gossip_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let body =
        |peers: Vec<PeerInfo>| encode(&Message::Gossip(TopologyUpdate { peers }))[4..].to_vec();
    let mut bad_short_id = entry(5, 1, 1, &[]);
    bad_short_id.short_id = ShortId::BROADCAST;
    // Valid: a peer publishes the id it chose after a collision.
    let mut chosen_short_id = entry(4, 2, 4, &[2]);
    chosen_short_id.short_id = ShortId(0x123);
    vec![
        (
            "new-peers",
            body(vec![entry(4, 1, 4, &[2]), entry(5, 3, 5, &[])]),
        ),
        (
            "newer-and-older",
            body(vec![entry(2, 9, 2, &[3]), entry(3, 1, 3, &[])]),
        ),
        (
            "same-peer-three-versions",
            body(vec![
                entry(4, 2, 4, &[]),
                entry(4, 9, 1, &[1]),
                entry(4, 9, 4, &[]),
            ]),
        ),
        ("chosen-short-id", body(vec![chosen_short_id])),
        ("our-name-newer", body(vec![entry(1, 5000, 77, &[3])])),
        ("our-name-older", body(vec![entry(1, 10, 1, &[])])),
        (
            "invalid-entries",
            body(vec![
                bad_short_id,
                entry(6, 1, 1, &[6]),
                entry(7, 1, 1, &[2, 2]),
            ]),
        ),
        (
            "whole-topology",
            encode(&Message::Gossip(small_topology().to_update()))[4..].to_vec(),
        ),
    ]
}
