//! The forwarding table as the hot path reads it: resolved once per update
//! into underlay addresses, published behind a generation counter so a
//! worker takes no lock unless the table changed since its last batch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::overlay::decide::macs::Macs;
use crate::overlay::forwarding::{ForwardingTable, ShortId};
use crate::overlay::sys::canonical;
use crate::overlay::wire::seal::PeerKeys;

/// A peer id and its underlay address.
pub type Hop = (ShortId, SocketAddr);

/// One [`ForwardingTable`], resolved.
#[derive(Debug, Default)]
pub struct Routes {
    table: Arc<ForwardingTable>,
    /// Neighbour address -> neighbour: who sent a packet.
    by_addr: HashMap<SocketAddr, ShortId>,
    /// Destination -> the neighbour its frames go to.
    unicast: HashMap<ShortId, Hop>,
    /// Origin -> this peer's children in origin's broadcast tree.
    broadcast: HashMap<ShortId, Vec<Hop>>,
    /// Next hops and children named in the table without an address.
    pub unresolved: usize,
}

impl Routes {
    pub fn compile(table: Arc<ForwardingTable>) -> Self {
        let mut unresolved = 0;
        let mut hop = |id: &ShortId| {
            if let Some(addr) = table.neighbours.get(id) {
                Some((*id, canonical(*addr)))
            } else {
                unresolved += 1;
                None
            }
        };
        let unicast = table
            .next_hop
            .iter()
            .filter_map(|(dest, via)| Some((*dest, hop(via)?)))
            .collect();
        let broadcast = table
            .broadcast
            .iter()
            .map(|(origin, children)| (*origin, children.iter().filter_map(&mut hop).collect()))
            .collect();
        let by_addr = table
            .neighbours
            .iter()
            .map(|(id, addr)| (canonical(*addr), *id))
            .collect();
        Self {
            table,
            by_addr,
            unicast,
            broadcast,
            unresolved,
        }
    }

    pub const fn table(&self) -> &Arc<ForwardingTable> {
        &self.table
    }

    pub fn me(&self) -> ShortId {
        self.table.me
    }

    /// The neighbour at underlay address `addr`.
    pub fn neighbour_at(&self, addr: &SocketAddr) -> Option<ShortId> {
        self.by_addr.get(addr).copied()
    }

    /// Password mode: every frame to or from a neighbour is sealed.
    pub fn encrypted(&self) -> bool {
        self.table.encrypted
    }

    /// The data keys of the connection to `neighbour` (password mode).
    pub fn keys(&self, neighbour: ShortId) -> Option<&PeerKeys> {
        self.table.keys.get(&neighbour).map(|k| &*k.0)
    }

    /// The largest inner frame the path to neighbour `hop` takes, when it
    /// is less than the overlay MTU makes.
    pub fn frame_limit(&self, hop: ShortId) -> Option<usize> {
        if self.table.frame_limit.is_empty() {
            return None;
        }
        self.table.frame_limit.get(&hop).copied()
    }

    /// Whether `peer` is reachable (this peer is not).
    pub fn reaches(&self, peer: ShortId) -> bool {
        peer != self.me() && self.table.next_hop.contains_key(&peer)
    }

    /// The neighbour frames for `dest` go to.
    pub fn next_hop(&self, dest: ShortId) -> Option<Hop> {
        self.unicast.get(&dest).copied()
    }

    /// Where this peer passes on frames broadcast by `origin`.
    pub fn children(&self, origin: ShortId) -> &[Hop] {
        self.broadcast.get(&origin).map_or(&[], Vec::as_slice)
    }
}

/// The current [`Routes`], replaced as a whole.
#[derive(Debug, Default)]
pub struct RoutesCell {
    current: RwLock<Arc<Routes>>,
    generation: AtomicU64,
}

impl RoutesCell {
    pub fn publish(&self, routes: Routes) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn current(&self) -> Arc<Routes> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    /// What every data plane does with a new forwarding table: compile and
    /// publish it, then forget the MACs learnt behind peers no longer
    /// reachable (after publishing, so no worker learns them again behind a
    /// peer just gone). Returns how many MACs were forgotten.
    pub fn install(&self, table: Arc<ForwardingTable>, macs: &Mutex<Macs>) -> usize {
        let routes = Routes::compile(table);
        if routes.unresolved > 0 {
            tracing::warn!(
                hops = routes.unresolved,
                "forwarding table names next hops or children that are not neighbours"
            );
        }
        let table = Arc::clone(routes.table());
        self.publish(routes);
        let forgotten = macs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remote
            .retain_reachable(&table);
        tracing::debug!(
            me = %table.me,
            neighbours = table.neighbours.len(),
            reachable = table.next_hop.len(),
            forgotten_macs = forgotten,
            "overlay forwarding table updated"
        );
        forgotten
    }
}

/// A worker's copy of the current routes.
#[derive(Debug)]
pub struct RoutesReader {
    generation: u64,
    routes: Arc<Routes>,
}

impl RoutesReader {
    pub fn new(cell: &RoutesCell) -> Self {
        let generation = cell.generation.load(Ordering::Acquire);
        Self {
            generation,
            routes: cell.current(),
        }
    }

    /// The routes to use for the next batch: one atomic load when nothing
    /// changed. The whole batch sees one table.
    pub fn refresh(&mut self, cell: &RoutesCell) -> &Routes {
        let generation = cell.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // Read after the generation: at worst a newer table than it
            // says, read again at the next batch.
            self.routes = cell.current();
            self.generation = generation;
        }
        &self.routes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const A: ShortId = ShortId(0x101);
    pub(crate) const B: ShortId = ShortId(0x102);
    pub(crate) const C: ShortId = ShortId(0x103);

    pub(crate) fn addr(id: ShortId) -> SocketAddr {
        SocketAddr::from(([192, 168, 250, id.0 as u8], 6784))
    }

    /// B's view of A - B - C in a line: B relays between A and C.
    pub(crate) fn line_seen_from_b() -> ForwardingTable {
        let mut t = ForwardingTable {
            me: B,
            ..ForwardingTable::default()
        };
        for n in [A, C] {
            t.neighbours.insert(n, addr(n));
            t.next_hop.insert(n, n);
        }
        t.broadcast.insert(B, vec![A, C]);
        t.broadcast.insert(A, vec![C]);
        t.broadcast.insert(C, vec![A]);
        t
    }

    #[test]
    fn resolves_hops_and_senders() {
        let mut table = line_seen_from_b();
        // A peer behind C, and a child without an address.
        table.next_hop.insert(ShortId(7), C);
        table.broadcast.get_mut(&A).unwrap().push(ShortId(8));
        let routes = Routes::compile(Arc::new(table));
        assert_eq!(routes.me(), B);
        assert_eq!(routes.next_hop(ShortId(7)), Some((C, addr(C))));
        assert_eq!(routes.next_hop(ShortId(9)), None);
        assert_eq!(routes.children(A), &[(C, addr(C))]);
        assert_eq!(routes.children(ShortId(9)), &[]);
        assert_eq!(routes.unresolved, 1);
        assert_eq!(routes.neighbour_at(&addr(A)), Some(A));
        let mapped: SocketAddr = "[::ffff:192.168.250.1]:6784".parse().unwrap();
        assert_eq!(routes.neighbour_at(&canonical(mapped)), Some(A));
        assert!(routes.reaches(ShortId(7)) && !routes.reaches(B));
    }

    #[test]
    fn readers_see_a_new_table_at_their_next_batch() {
        let cell = RoutesCell::default();
        let mut reader = RoutesReader::new(&cell);
        assert_eq!(reader.refresh(&cell).me(), ShortId(0));
        cell.publish(Routes::compile(Arc::new(line_seen_from_b())));
        assert_eq!(reader.refresh(&cell).me(), B);
    }
}
