//! Who passes a changed topology entry on to whom.
//!
//! A peer sends its own entry to every neighbour when it changes (only it
//! can say it). Another peer's entry that is new to us goes on to
//! [`FANOUT`] random neighbours, who pass on what is new to them: an
//! epidemic, which reaches peers that are not the owner's neighbours. But
//! a neighbour that the entry lists among its owner's connections has had
//! it from the owner already: passing it there costs a message, its
//! decoding and a merge that changes nothing. In a full mesh that was every
//! forward: at a hundred peers, each change of one peer's entry became
//! about 500 messages of 4 KB instead of 99, and while a tenth of the mesh
//! restarted this epidemic took the CPU that reconnecting needed
//! (`cargo xtask scale`).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::SliceRandom as _;

use crate::mesh::topology::PeerInfo;
use crate::peer_name::PeerName;

/// Neighbours an entry new to us goes on to (at most), among those its
/// owner does not tell itself: enough for an epidemic to reach every peer
/// in a few rounds with high probability; the periodic repair catches the
/// rest.
pub const FANOUT: usize = 4;

/// For `entries` new to us (none our own), which neighbours get which:
/// groups of (indices into `entries`, neighbours), so that each distinct
/// set of entries is encoded once. `neighbours` are ours, by name.
pub fn relay<T: Copy + Ord>(
    entries: &[PeerInfo],
    neighbours: &BTreeMap<PeerName, T>,
    rng: &mut impl Rng,
) -> Vec<(Vec<usize>, Vec<T>)> {
    let mut by_neighbour: BTreeMap<T, Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let told: BTreeSet<PeerName> = entry.connections.iter().map(|c| c.peer).collect();
        let mut untold: Vec<T> = neighbours
            .iter()
            .filter(|(name, _)| **name != entry.name && !told.contains(name))
            .map(|(_, to)| *to)
            .collect();
        let n = FANOUT.min(untold.len());
        let (picked, _) = untold.partial_shuffle(rng, n);
        for to in picked {
            by_neighbour.entry(*to).or_default().push(i);
        }
    }
    let mut groups: BTreeMap<Vec<usize>, Vec<T>> = BTreeMap::new();
    for (to, indices) in by_neighbour {
        groups.entry(indices).or_default().push(to);
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;
    use crate::mac::Mac;
    use crate::mesh::topology::ConnectionSummary;

    fn name(i: u8) -> PeerName {
        PeerName(Mac([2, 0, 0, 0, 0, i]))
    }

    fn entry(owner: u8, connected: &[u8]) -> PeerInfo {
        let mut e = PeerInfo::new(name(owner), format!("h{owner}"), 1, 1);
        e.connections = connected
            .iter()
            .map(|&to| ConnectionSummary {
                peer: name(to),
                address: ([10, 0, 0, to], 6783).into(),
                outbound: true,
                established: true,
            })
            .collect();
        e
    }

    fn neighbours(of: &[u8]) -> BTreeMap<PeerName, u8> {
        of.iter().map(|&i| (name(i), i)).collect()
    }

    /// Flattens the groups to (entry index, neighbour) pairs.
    fn pairs(groups: &[(Vec<usize>, Vec<u8>)]) -> BTreeSet<(usize, u8)> {
        groups
            .iter()
            .flat_map(|(entries, to)| {
                entries
                    .iter()
                    .flat_map(move |&e| to.iter().map(move |&t| (e, t)))
            })
            .collect()
    }

    #[test]
    fn in_a_full_mesh_nothing_is_passed_on() {
        // We are 1, in a full mesh of 1..=6: 2's entry lists everyone.
        let all: Vec<u8> = (1..=6).collect();
        let others: Vec<u8> = all.iter().copied().filter(|&i| i != 2).collect();
        let groups = relay(
            &[entry(2, &others)],
            &neighbours(&[2, 3, 4, 5, 6]),
            &mut StdRng::seed_from_u64(1),
        );
        assert!(groups.is_empty(), "{groups:?}");
    }

    #[test]
    fn entries_go_only_to_neighbours_their_owner_does_not_tell() {
        // We are 1, with neighbours 2..=9; 2 is connected to 1, 3 and 4 only.
        let ours = neighbours(&[2, 3, 4, 5, 6, 7, 8, 9]);
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..50 {
            let groups = relay(&[entry(2, &[1, 3, 4])], &ours, &mut rng);
            let to: Vec<u8> = pairs(&groups).into_iter().map(|(_, t)| t).collect();
            assert_eq!(to.len(), FANOUT);
            assert!(to.iter().all(|t| (5..=9).contains(t)), "{to:?}");
        }
        // Fewer untold neighbours than the fanout: all of them.
        let groups = relay(&[entry(2, &[1, 3, 4, 5, 6, 7])], &ours, &mut rng);
        assert_eq!(pairs(&groups), BTreeSet::from([(0, 8), (0, 9)]));
        // An entry of a peer that is not our neighbour goes to its
        // owner's non-neighbours among ours.
        let groups = relay(&[entry(20, &[2, 3, 4, 5, 6, 7, 8])], &ours, &mut rng);
        assert_eq!(pairs(&groups), BTreeSet::from([(0, 9)]));
    }

    #[test]
    fn neighbours_getting_the_same_entries_share_a_group() {
        // Two entries whose owners tell nobody of ours: each goes to FANOUT
        // of our four neighbours, that is to all, so one group of both.
        let groups = relay(
            &[entry(20, &[]), entry(21, &[])],
            &neighbours(&[2, 3, 4, 5]),
            &mut StdRng::seed_from_u64(3),
        );
        assert_eq!(groups, vec![(vec![0, 1], vec![2, 3, 4, 5])]);
    }
}
