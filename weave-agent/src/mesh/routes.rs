//! Routes from a topology: pure and deterministic, so that every peer
//! computes the same trees from the same gossip and a frame relayed along
//! them never loops and never arrives twice.
//!
//! - An edge counts only when both ends list each other as established.
//! - Unicast: the first hop of a breadth-first search from us, neighbours
//!   taken in `PeerName` order (shortest paths, ties broken by name).
//! - Broadcast from origin O: the breadth-first tree from O (same order);
//!   we pass O's frames on to our children in that tree.
//! - Each peer publishes its short id (12 bits) in its entry. Two peers may
//!   publish the same one for a while: the smaller name keeps it and the
//!   other is left out of every route (everyone agrees on which) until it
//!   has chosen another (`Topology::choose_our_short_id`).
//!
//! A full mesh of N peers has N² edges and the broadcast trees need one
//! search per origin, N³ steps in all, redone whenever the topology
//! changes: the graph is therefore indexed (peers numbered in name order,
//! adjacency as sorted index lists, one reused parent array) rather than
//! searched through ordered maps, which cost a hundred times more at 100
//! peers and starved the agent (README, Scale).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;

use crate::mesh::topology::Topology;
use crate::overlay::{ForwardingTable, ShortId};
use crate::peer_name::PeerName;

/// Routes computed from one topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// What the data plane gets.
    pub table: ForwardingTable,
    /// Peers reachable from us over symmetric edges, us included.
    pub reachable: BTreeSet<PeerName>,
    /// Unicast next hop by name, for status.
    pub next_hop: BTreeMap<PeerName, PeerName>,
    /// Peers left out because a smaller name has their short id.
    pub shadowed: BTreeSet<PeerName>,
}

/// Computes the routes of `topology`'s owner. `neighbours` holds the data
/// plane address (IP seen on our TCP connection, the peer's data port) of
/// every peer we have an established connection with.
pub fn compute(topology: &Topology, neighbours: &BTreeMap<PeerName, SocketAddr>) -> Routes {
    let me = topology.me();
    let shadowed = shadowed(topology);
    let mut routes = Routes {
        table: ForwardingTable {
            me: topology.ours().short_id,
            ..ForwardingTable::default()
        },
        ..Routes::default()
    };
    routes.table.neighbours = neighbours
        .iter()
        .filter(|(n, _)| !shadowed.contains(n))
        // A neighbour whose entry has not arrived yet has no id to be
        // reached by; it has no route either until it does.
        .filter_map(|(n, a)| Some((topology.short_id(n)?, *a)))
        .collect();
    if shadowed.contains(&me) {
        // We cannot be addressed: route nothing rather than misdeliver.
        routes.reachable.insert(me);
        routes.shadowed = shadowed;
        return routes;
    }
    routes.shadowed = shadowed;

    let graph = Graph::symmetric(topology, &routes.shadowed);
    let us = graph.index(me).expect("we are in our own graph");
    let mut search = Search::new(graph.len());

    search.run(&graph, us);
    // Each reached peer's first hop, filled in search order so that a
    // peer's parent is done before it.
    let mut first_hop = vec![UNREACHED; graph.len()];
    for &node in &search.order {
        routes.reachable.insert(graph.names[node]);
        let parent = search.parent[node];
        if node == us {
            continue;
        }
        first_hop[node] = if parent == us {
            node
        } else {
            first_hop[parent]
        };
        routes
            .next_hop
            .insert(graph.names[node], graph.names[first_hop[node]]);
        routes
            .table
            .next_hop
            .insert(graph.ids[node], graph.ids[first_hop[node]]);
    }

    let reached = search.order.clone();
    for &origin in &reached {
        search.run_until_decided(&graph, origin, us, reached.len());
        // Our children in origin's tree are among our neighbours, which
        // the adjacency lists in name order, as the trees are built.
        let children = graph.adjacency[us]
            .iter()
            .filter(|&&n| search.parent[n] == us)
            .map(|&n| graph.ids[n])
            .collect();
        routes.table.broadcast.insert(graph.ids[origin], children);
    }
    routes
}

/// Names that publish the short id of a smaller name.
fn shadowed(topology: &Topology) -> BTreeSet<PeerName> {
    // Peers come in name order, so the first to take an id is the smallest.
    let mut taken: HashSet<ShortId> = HashSet::new();
    topology
        .peers()
        .filter(|p| !taken.insert(p.short_id))
        .map(|p| p.name)
        .collect()
}

/// Marks a peer not reached by a search (and no first hop yet).
const UNREACHED: usize = usize::MAX;

/// Symmetric edges between unshadowed peers, numbered in name order.
struct Graph {
    names: Vec<PeerName>,
    ids: Vec<ShortId>,
    /// Each peer's neighbours, ascending (so in name order).
    adjacency: Vec<Vec<usize>>,
}

impl Graph {
    fn symmetric(topology: &Topology, shadowed: &BTreeSet<PeerName>) -> Self {
        let peers: Vec<_> = topology
            .peers()
            .filter(|p| !shadowed.contains(&p.name))
            .collect();
        let names: Vec<PeerName> = peers.iter().map(|p| p.name).collect();
        let index = |n: &PeerName| names.binary_search(n).ok();
        // What each entry claims, as sorted indices.
        let claims: Vec<Vec<usize>> = peers
            .iter()
            .map(|p| {
                let mut to: Vec<usize> = p
                    .connections
                    .iter()
                    .filter(|c| c.established)
                    .filter_map(|c| index(&c.peer))
                    .collect();
                to.sort_unstable();
                to.dedup();
                to
            })
            .collect();
        let adjacency = claims
            .iter()
            .enumerate()
            .map(|(a, to)| {
                to.iter()
                    .copied()
                    .filter(|&b| b != a && claims[b].binary_search(&a).is_ok())
                    .collect()
            })
            .collect();
        Self {
            ids: peers.iter().map(|p| p.short_id).collect(),
            names,
            adjacency,
        }
    }

    const fn len(&self) -> usize {
        self.names.len()
    }

    fn index(&self, name: PeerName) -> Option<usize> {
        self.names.binary_search(&name).ok()
    }
}

/// One breadth-first search at a time, its buffers reused for the next.
struct Search {
    /// Each peer's parent in the last tree (the origin is its own), or
    /// `UNREACHED`.
    parent: Vec<usize>,
    /// The peers reached, in the order reached.
    order: Vec<usize>,
    queue: VecDeque<usize>,
}

impl Search {
    fn new(len: usize) -> Self {
        Self {
            parent: vec![UNREACHED; len],
            order: Vec::with_capacity(len),
            queue: VecDeque::with_capacity(len),
        }
    }

    /// The breadth-first tree from `origin`, neighbours taken in name
    /// order.
    fn run(&mut self, graph: &Graph, origin: usize) {
        self.search(graph, origin, |_, _| false);
    }

    /// As much of the tree from `origin` as decides the parents of `us`'s
    /// neighbours, in a component of `component` peers: the search stops
    /// once `us` has been expanded (a parent is set only when first
    /// reached, so no later step gives `us` a child), or once every peer
    /// of the component is reached (no parent changes after that). In a
    /// full mesh the origin reaches everyone at once: one step instead of
    /// a whole search, for each of the N trees a recomputation builds.
    fn run_until_decided(&mut self, graph: &Graph, origin: usize, us: usize, component: usize) {
        self.search(graph, origin, |expanded, reached| {
            expanded == us || reached >= component
        });
    }

    /// Breadth-first from `origin` until `done(node just expanded, peers
    /// reached so far)`.
    fn search(&mut self, graph: &Graph, origin: usize, done: impl Fn(usize, usize) -> bool) {
        self.parent.fill(UNREACHED);
        self.order.clear();
        self.queue.clear();
        self.parent[origin] = origin;
        self.queue.push_back(origin);
        let mut reached = 1;
        while let Some(node) = self.queue.pop_front() {
            self.order.push(node);
            for &next in &graph.adjacency[node] {
                if self.parent[next] == UNREACHED {
                    self.parent[next] = node;
                    self.queue.push_back(next);
                    reached += 1;
                }
            }
            if done(node, reached) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;
    use crate::mac::Mac;
    use crate::mesh::topology::{ConnectionSummary, PeerInfo, TopologyUpdate};

    fn name(i: u8) -> PeerName {
        PeerName(Mac([2, 0, 0, 0, 0, i]))
    }

    fn id(i: u8) -> ShortId {
        ShortId::of(&name(i))
    }

    /// Entries for `n` peers named 1..=n; `links` lists, per peer, the peers
    /// its entry says it is established with.
    fn entries(links: &BTreeMap<PeerName, BTreeSet<PeerName>>) -> Vec<PeerInfo> {
        links
            .iter()
            .map(|(p, peers)| {
                let mut e = PeerInfo::new(*p, String::new(), 1, 1);
                e.connections = peers
                    .iter()
                    .map(|q| ConnectionSummary {
                        peer: *q,
                        address: SocketAddr::from(([10, 0, 0, q.0.0[5]], 6783)),
                        outbound: p < q,
                        established: true,
                    })
                    .collect();
                e
            })
            .collect()
    }

    /// The view of peer `me` when it knows every entry.
    fn view(me: PeerName, all: &[PeerInfo]) -> Topology {
        let ours = all
            .iter()
            .find(|e| e.name == me)
            .cloned()
            .unwrap_or_else(|| PeerInfo::new(me, String::new(), 1, 1));
        let mut t = Topology::new(ours);
        t.merge(&TopologyUpdate {
            peers: all.to_vec(),
        });
        t
    }

    fn routes_of(me: PeerName, all: &[PeerInfo]) -> Routes {
        let t = view(me, all);
        let neighbours = t
            .ours()
            .connections
            .iter()
            .map(|c| (c.peer, SocketAddr::from(([10, 0, 0, c.peer.0.0[5]], 6784))))
            .collect();
        compute(&t, &neighbours)
    }

    fn undirected(edges: &[(u8, u8)]) -> BTreeMap<PeerName, BTreeSet<PeerName>> {
        let mut m: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
        for &(a, b) in edges {
            m.entry(name(a)).or_default().insert(name(b));
            m.entry(name(b)).or_default().insert(name(a));
        }
        m
    }

    #[test]
    fn line_relays_through_the_middle() {
        let all = entries(&undirected(&[(1, 2), (2, 3)]));
        let a = routes_of(name(1), &all);
        assert_eq!(a.table.me, id(1));
        assert_eq!(
            a.table.next_hop,
            HashMap::from([(id(2), id(2)), (id(3), id(2))])
        );
        assert_eq!(
            a.table.neighbours.keys().copied().collect::<Vec<_>>(),
            vec![id(2)]
        );
        assert_eq!(a.table.neighbours[&id(2)], "10.0.0.2:6784".parse().unwrap());
        // a's own broadcasts go to b only; b passes them to c; c to nobody.
        assert_eq!(a.table.broadcast[&id(1)], vec![id(2)]);
        assert_eq!(a.table.broadcast[&id(3)], vec![]);
        let b = routes_of(name(2), &all);
        assert_eq!(b.table.broadcast[&id(1)], vec![id(3)]);
        assert_eq!(b.table.broadcast[&id(3)], vec![id(1)]);
        let mut both = b.table.broadcast[&id(2)].clone();
        both.sort();
        let mut expect = vec![id(1), id(3)];
        expect.sort();
        assert_eq!(both, expect);
        let c = routes_of(name(3), &all);
        assert_eq!(c.table.broadcast[&id(1)], vec![]);
        assert_eq!(c.next_hop[&name(1)], name(2));
        assert_eq!(a.reachable, BTreeSet::from([name(1), name(2), name(3)]));
    }

    #[test]
    fn full_mesh_of_four_goes_direct() {
        let all = entries(&undirected(&[
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 3),
            (2, 4),
            (3, 4),
        ]));
        for me in 1..=4 {
            let r = routes_of(name(me), &all);
            for other in (1..=4).filter(|&o| o != me) {
                assert_eq!(r.table.next_hop[&id(other)], id(other));
                // Others' broadcasts reach everyone directly: nothing to relay.
                assert_eq!(r.table.broadcast[&id(other)], vec![]);
            }
            assert_eq!(r.table.broadcast[&id(me)].len(), 3);
            assert_eq!(r.table.neighbours.len(), 3);
        }
    }

    #[test]
    fn unestablished_and_one_sided_edges_do_not_count() {
        // 1 and 3 both list each other, but 3 says the connection is not
        // established yet: 1 goes through 2.
        let mut all = entries(&undirected(&[(1, 2), (2, 3), (1, 3)]));
        for c in &mut all
            .iter_mut()
            .find(|e| e.name == name(3))
            .unwrap()
            .connections
        {
            if c.peer == name(1) {
                c.established = false;
            }
        }
        assert_eq!(routes_of(name(1), &all).next_hop[&name(3)], name(2));

        // 4 claims a connection to 1 that 1 does not list: ignored, 4 is
        // unreachable.
        let mut links = undirected(&[(1, 2)]);
        links.entry(name(4)).or_default().insert(name(1));
        let all = entries(&links);
        let r = routes_of(name(1), &all);
        assert!(!r.reachable.contains(&name(4)));
        assert!(!r.table.next_hop.contains_key(&id(4)));
        assert!(!r.table.broadcast.contains_key(&id(4)));

        // A broken edge splits the line.
        let all = entries(&undirected(&[(1, 2), (3, 4)]));
        let r = routes_of(name(1), &all);
        assert_eq!(r.reachable, BTreeSet::from([name(1), name(2)]));
    }

    #[test]
    fn alone_we_route_nothing_but_still_broadcast_to_nobody() {
        let t = Topology::new(PeerInfo::new(name(1), String::new(), 1, 1));
        let r = compute(&t, &BTreeMap::new());
        assert!(r.table.next_hop.is_empty());
        assert_eq!(r.table.broadcast, HashMap::from([(id(1), vec![])]));
        assert_eq!(r.reachable, BTreeSet::from([name(1)]));
    }

    /// Another name with the same short id as `n`.
    fn twin_of(n: PeerName) -> PeerName {
        (0..=u16::MAX)
            .map(|i| PeerName(Mac([2, 0xee, 0, 0, (i >> 8) as u8, i as u8])))
            .find(|m| *m != n && ShortId::of(m) == ShortId::of(&n))
            .expect("12-bit ids collide within 65536 names")
    }

    #[test]
    fn colliding_short_ids_leave_the_larger_name_out_everywhere() {
        let twin = twin_of(name(3));
        assert!(twin > name(3));
        let mut links = undirected(&[(1, 2), (2, 3)]);
        links.entry(twin).or_default().insert(name(2));
        links.entry(name(2)).or_default().insert(twin);
        let all = entries(&links);
        for me in [name(1), name(2), name(3)] {
            let r = routes_of(me, &all);
            assert_eq!(r.shadowed, BTreeSet::from([twin]));
            assert!(!r.reachable.contains(&twin));
            assert!(!r.next_hop.contains_key(&twin));
            assert!(!r.table.neighbours.is_empty());
        }
        // The shadowed peer itself routes nothing.
        let r = routes_of(twin, &all);
        assert!(r.table.next_hop.is_empty());
        assert!(r.table.broadcast.is_empty());
    }

    #[test]
    fn peers_are_known_by_the_short_id_they_publish() {
        let chosen = ShortId(0x123);
        let mut all = entries(&undirected(&[(1, 2), (2, 3)]));
        for e in all.iter_mut().filter(|e| e.name == name(3)) {
            e.short_id = chosen;
        }
        let a = routes_of(name(1), &all);
        assert_eq!(a.table.next_hop.get(&chosen), Some(&id(2)));
        assert_eq!(a.table.next_hop.len(), 2);
        let b = routes_of(name(2), &all);
        assert!(b.table.neighbours.contains_key(&chosen));
        assert_eq!(routes_of(name(3), &all).table.me, chosen);
    }

    /// On random graphs, with every peer computing its own routes from the
    /// same entries: a broadcast from any origin, passed on along each
    /// peer's children, reaches every peer reachable from the origin exactly
    /// once; unicast next hops reach the destination on a shortest path.
    #[test]
    fn random_graphs_broadcast_exactly_once_and_unicast_without_loops() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let n: u8 = rng.random_range(1..=9);
            let p = rng.random_range(0.1..0.7);
            let mut links: BTreeMap<PeerName, BTreeSet<PeerName>> =
                (1..=n).map(|i| (name(i), BTreeSet::new())).collect();
            for a in 1..=n {
                for b in a + 1..=n {
                    if rng.random_bool(p) {
                        links.get_mut(&name(a)).unwrap().insert(name(b));
                        links.get_mut(&name(b)).unwrap().insert(name(a));
                    } else if rng.random_bool(0.2) {
                        // One-sided claims must be ignored.
                        links.get_mut(&name(a)).unwrap().insert(name(b));
                    }
                }
            }
            let all = entries(&links);
            let routes: BTreeMap<ShortId, Routes> =
                (1..=n).map(|i| (id(i), routes_of(name(i), &all))).collect();
            for origin in 1..=n {
                let o = id(origin);
                let mut received: BTreeMap<ShortId, usize> = BTreeMap::new();
                let mut queue = VecDeque::from([o]);
                while let Some(at) = queue.pop_front() {
                    let children = routes[&at]
                        .table
                        .broadcast
                        .get(&o)
                        .cloned()
                        .unwrap_or_default();
                    for c in children {
                        assert!(
                            routes[&at].table.neighbours.contains_key(&c),
                            "children are neighbours"
                        );
                        *received.entry(c).or_default() += 1;
                        queue.push_back(c);
                    }
                }
                let expect: BTreeSet<ShortId> = routes[&o]
                    .reachable
                    .iter()
                    .map(ShortId::of)
                    .filter(|i| *i != o)
                    .collect();
                assert_eq!(received.keys().copied().collect::<BTreeSet<_>>(), expect);
                assert!(
                    received.values().all(|&k| k == 1),
                    "duplicates: {received:?}"
                );

                for dest in &routes[&o].reachable {
                    let d = ShortId::of(dest);
                    let mut at = o;
                    let mut hops = 0;
                    while at != d {
                        let next = routes[&at].table.next_hop[&d];
                        assert!(routes[&at].table.neighbours.contains_key(&next));
                        at = next;
                        hops += 1;
                        assert!(hops <= n as usize, "unicast loop");
                    }
                }
            }
        }
    }
    /// The computation as first written (ordered maps, one search per
    /// origin over them): the indexed one must give exactly its routes.
    mod reference {
        use std::collections::btree_map::Entry;
        use std::collections::{BTreeMap, BTreeSet, VecDeque};
        use std::net::SocketAddr;

        use super::super::{Routes, shadowed};
        use crate::mesh::topology::Topology;
        use crate::overlay::ForwardingTable;
        use crate::peer_name::PeerName;

        pub(super) fn compute(
            topology: &Topology,
            neighbours: &BTreeMap<PeerName, SocketAddr>,
        ) -> Routes {
            let me = topology.me();
            let shadowed = shadowed(topology);
            let mut edges: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
            for a in topology.peers().filter(|p| !shadowed.contains(&p.name)) {
                for c in a.connections.iter().filter(|c| c.established) {
                    if !shadowed.contains(&c.peer)
                        && topology
                            .get(&c.peer)
                            .is_some_and(|b| b.established_with(&a.name))
                    {
                        edges.entry(a.name).or_default().insert(c.peer);
                    }
                }
            }
            let bfs = |origin: PeerName| {
                let mut parent = BTreeMap::from([(origin, origin)]);
                let mut queue = VecDeque::from([origin]);
                while let Some(node) = queue.pop_front() {
                    for &next in edges.get(&node).into_iter().flatten() {
                        if let Entry::Vacant(v) = parent.entry(next) {
                            v.insert(node);
                            queue.push_back(next);
                        }
                    }
                }
                parent
            };
            let id = |name: &PeerName| topology.short_id(name).unwrap();
            let mut routes = Routes {
                table: ForwardingTable {
                    me: id(&me),
                    ..ForwardingTable::default()
                },
                shadowed: shadowed.clone(),
                ..Routes::default()
            };
            routes.table.neighbours = neighbours
                .iter()
                .filter(|(n, _)| !shadowed.contains(n))
                .filter_map(|(n, a)| Some((topology.short_id(n)?, *a)))
                .collect();
            if shadowed.contains(&me) {
                routes.reachable.insert(me);
                return routes;
            }
            let tree = bfs(me);
            routes.reachable = tree.keys().copied().collect();
            for &dest in tree.keys().filter(|d| **d != me) {
                let mut hop = dest;
                while tree[&hop] != me {
                    hop = tree[&hop];
                }
                routes.next_hop.insert(dest, hop);
                routes.table.next_hop.insert(id(&dest), id(&hop));
            }
            for &origin in &routes.reachable {
                let tree = bfs(origin);
                let children = tree
                    .iter()
                    .filter(|(child, parent)| **parent == me && **child != me)
                    .map(|(child, _)| id(child))
                    .collect();
                routes.table.broadcast.insert(id(&origin), children);
            }
            routes
        }
    }

    /// Random topologies (one-sided and unestablished claims, peers
    /// publishing chosen or colliding short ids, connections to peers
    /// without an entry), seen from every peer: the indexed computation
    /// gives what the reference gives.
    #[test]
    fn indexed_search_gives_what_ordered_maps_gave() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..150 {
            let n: u8 = rng.random_range(1..=14);
            let p = rng.random_range(0.1..0.9);
            let mut links: BTreeMap<PeerName, BTreeSet<PeerName>> =
                (1..=n).map(|i| (name(i), BTreeSet::new())).collect();
            for a in 1..=n {
                for b in a + 1..=n + 1 {
                    if rng.random_bool(p) {
                        links.get_mut(&name(a)).unwrap().insert(name(b));
                        if b <= n && !rng.random_bool(0.1) {
                            links.get_mut(&name(b)).unwrap().insert(name(a));
                        }
                    }
                }
            }
            let mut all = entries(&links);
            for e in &mut all {
                if rng.random_bool(0.2) {
                    e.short_id = ShortId(rng.random_range(1..4));
                }
                for c in &mut e.connections {
                    c.established = !rng.random_bool(0.05);
                }
            }
            for me in 1..=n {
                let t = view(name(me), &all);
                let neighbours = t
                    .ours()
                    .connections
                    .iter()
                    .map(|c| (c.peer, SocketAddr::from(([10, 0, 0, c.peer.0.0[5]], 6784))))
                    .collect();
                assert_eq!(
                    compute(&t, &neighbours),
                    reference::compute(&t, &neighbours)
                );
            }
        }
    }

    /// A full mesh of 100 (what `cargo xtask scale` runs): every peer
    /// direct, nothing to relay. The time is printed, not asserted
    /// (`cargo test -- --nocapture full_mesh_of_100`).
    #[test]
    fn full_mesh_of_100_goes_direct() {
        let edges: Vec<(u8, u8)> = (1..=100u8)
            .flat_map(|a| (a + 1..=100).map(move |b| (a, b)))
            .collect();
        let all = entries(&undirected(&edges));
        let started = std::time::Instant::now();
        let r = routes_of(name(1), &all);
        eprintln!("routes of a full mesh of 100: {:?}", started.elapsed());
        assert_eq!(r.reachable.len(), 100);
        assert!(r.next_hop.iter().all(|(dest, hop)| dest == hop));
        assert_eq!(r.table.broadcast[&id(1)].len(), 99);
        assert!((2..=100).all(|o| r.table.broadcast[&id(o)].is_empty()));
    }
}
